"""The sentences: the shipped parallel sample (six languages, scoring and held-out rows), or FLORES+ and PAWS-X."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness import UsageError, load_hub_dataset

LANGS = ("en", "de", "fr", "es", "zh", "ja")


DATA = Path(__file__).resolve().parent / "data" / "parallel_6lang.jsonl"


N_SCORING_ROWS = 80  # shipped rows 1-80 score, 81-100 are held out


FLORES = {"en": "eng_Latn", "de": "deu_Latn", "fr": "fra_Latn", "es": "spa_Latn", "zh": "cmn_Hans", "ja": "jpn_Jpan"}


@dataclass
class Corpus:
    """Scoring and held-out sentences per language, and English translation sources."""

    score: dict[str, list[str]]
    heldout: dict[str, list[str]]
    sources: list[str]
    origin: str
    # The resampling unit of each sentence: a parallel row (its six translations share their
    # content, so they are resampled together) or, for unaligned hub data, the sentence itself.
    score_units: dict[str, list[str]] | None = None
    heldout_units: dict[str, list[str]] | None = None

    def units(self, split: str) -> np.ndarray:
        """Unit labels of the sentences of `split` ("score" or "heldout"), in the order LANGS then sentences."""
        texts, units = getattr(self, split), getattr(self, f"{split}_units")
        if units is None:
            return np.array([f"{L}:{i}" for L in LANGS for i in range(len(texts[L]))])
        return np.array([u for L in LANGS for u in units[L]])


def load_shipped(path: Path = DATA) -> Corpus:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows.sort(key=lambda r: r["id"])
    score = [r for r in rows if r["id"] <= N_SCORING_ROWS]
    held = [r for r in rows if r["id"] > N_SCORING_ROWS]
    return Corpus(
        score={L: [r[L] for r in score] for L in LANGS},
        heldout={L: [r[L] for r in held] for L in LANGS},
        sources=[r["en"] for r in held],
        origin=f"shipped sample ({len(rows)} parallel rows; {len(score)} scoring, {len(held)} held out)",
        score_units={L: [f"row{r['id']}" for r in score] for L in LANGS},
        heldout_units={L: [f"row{r['id']}" for r in held] for L in LANGS},
    )


def _hub_column(path: str, name: str, split: str, field: str) -> list[str]:
    ds = load_hub_dataset(
        path,
        name,
        split=split,
        fallback="the shipped sample (accept a gated data set's terms and "
        "`hf auth login` first), or a local copy with --task-arg",
    )
    if field not in ds.column_names:
        raise UsageError(
            f"{path} ({name}) has no field '{field}' (fields: {', '.join(ds.column_names)}); "
            f"the data set changed shape: update tasks/language_neurons/data.py"
        )
    return [str(t) for t in ds[field]]


def _clean(texts: list[str], tokenizer: Any, max_tokens: int, rng: np.random.Generator | None) -> list[str]:
    """Shuffle (seeded; file order without rng), drop duplicates and sentences over max_tokens tokens."""
    seen: set[str] = set()
    out = []
    for i in rng.permutation(len(texts)) if rng is not None else range(len(texts)):
        t = texts[i].strip()
        if t and t not in seen:
            seen.add(t)
            out.append(t)
    lengths = [len(ids) for ids in tokenizer(out, add_special_tokens=True)["input_ids"]] if out else []
    return [t for t, n in zip(out, lengths) if n <= max_tokens]


def load_hub(config: Any, tokenizer: Any) -> Corpus:
    """The paper's data: FLORES+ dev + PAWS-X test for scoring, FLORES+ devtest held out."""
    score, heldout = {}, {}
    for i, L in enumerate(LANGS):
        flores_dev = _hub_column(config.flores_path, FLORES[L], "dev", "text")
        flores_test = _hub_column(config.flores_path, FLORES[L], "devtest", "text")
        pawsx = _hub_column(config.pawsx_path, L, "test", "sentence1")
        rng = np.random.default_rng([config.data_seed, i])
        dev = _clean(flores_dev, tokenizer, config.max_tokens, rng)[: config.n_per_source]
        paws = _clean(pawsx, tokenizer, config.max_tokens, rng)[: config.n_per_source]
        score[L] = dev + [t for t in paws if t not in set(dev)]
        heldout[L] = _clean(flores_test, tokenizer, config.max_tokens, rng)[: config.n_heldout]
    # Translation sources: English devtest in file order (FLORES is parallel; any 100 rows serve).
    flores_en = _hub_column(config.flores_path, FLORES["en"], "devtest", "text")
    sources = _clean(flores_en, tokenizer, config.max_tokens, None)[: config.n_translate]
    sizes = ", ".join(f"{L} {len(score[L])}/{len(heldout[L])}" for L in LANGS)
    return Corpus(
        score=score,
        heldout=heldout,
        sources=sources,
        origin=f"hub: {config.flores_path} dev+devtest, {config.pawsx_path} test (scoring/held out: {sizes})",
    )
