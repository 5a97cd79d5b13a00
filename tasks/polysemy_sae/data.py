"""Word-in-context pairs, the PS-Eval prompt and target positions, and the SAE training corpus.

Pairs come from the shipped sample (written for this project), the paper's set on the
Hub (`gouki510/Wic_data_for_SAE-Eval`), raw WiC (`aps/super_glue`, config `wic`) or a
local JSONL file of the PS-Eval shape. Every source becomes the same `Pair` record with
label 1 = same meaning, as in both WiC and PS-Eval.

The prompt is the authors': "{context} The {target_word} means". The target token is
the word inside the appended phrase, not the one in the context: it is the last
occurrence, so its hidden state has seen the whole context.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from harness import UsageError, load_hub_dataset

DATA = Path(__file__).resolve().parent / "data"
PAIRS_PATH = DATA / "polysemy_pairs.jsonl"
CORPUS_PATH = DATA / "corpus.txt"

PS_EVAL = "gouki510/Wic_data_for_SAE-Eval"
WIC = ("aps/super_glue", "wic")
WIC_SPLITS = ("train", "validation")  # the test split's labels are hidden

PROMPT = "{context} The {target_word} means"
SUFFIX = " means"

MULTI_TOKEN_MODES = ("skip", "last")
SKIP_MULTI_TOKEN = "multi_token"
SKIP_MISMATCH = "token_mismatch"

_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}


@dataclass(frozen=True)
class Span:
    """Character offsets of the target word in a context: context[char_start:char_end]."""

    char_start: int
    char_end: int


@dataclass(frozen=True)
class Pair:
    """One word in two contexts; label 1 = same meaning ("mono-context"), 0 = different."""

    id: str
    target_word: str
    context_1: str
    context_2: str
    location_1: Span
    location_2: Span
    label: int
    pos: str | None = None  # N or V; raw WiC on the Hub does not carry it
    language: str = "EN"

    def to_json(self) -> dict[str, Any]:
        """The PS-Eval row shape (the shipped file's and the Hub set's)."""
        return {
            "id": self.id,
            "context_1": self.context_1,
            "context_2": self.context_2,
            "target_word": self.target_word,
            "pos": self.pos,
            "target_word_location_1": vars(self.location_1),
            "target_word_location_2": vars(self.location_2),
            "language": self.language,
            "label": self.label,
        }


def _span(value: Mapping[str, Any]) -> Span:
    return Span(int(value["char_start"]), int(value["char_end"]))


def _label(value: Any, where: str) -> int:
    label = int(value)
    if label not in (0, 1):
        raise UsageError(f"{where}: label {value!r} is not 0 or 1; keep only labelled rows (1 = same meaning)")
    return label


def pair_from_ps_eval(row: Mapping[str, Any]) -> Pair:
    """A row of the PS-Eval shape (the shipped file, the Hub set, a `file:` source)."""
    try:
        return Pair(
            id=str(row["id"]),
            target_word=row["target_word"],
            context_1=row["context_1"],
            context_2=row["context_2"],
            location_1=_span(row["target_word_location_1"]),
            location_2=_span(row["target_word_location_2"]),
            label=_label(row["label"], f"pair {row['id']}"),
            pos=row.get("pos"),
            language=row.get("language") or "EN",
        )
    except KeyError as e:
        raise UsageError(
            f"pair row lacks field {e}: rows need id, context_1, context_2, target_word, "
            "target_word_location_1/_2 and label (the PS-Eval shape)"
        ) from None


def pair_from_wic(row: Mapping[str, Any], split: str) -> Pair:
    """A super_glue/wic row. The target is the surface form at sentence 1's span ("banks",
    not the lemma "bank"), as it appears in the text; WiC's label already means 1 = same sense."""
    start1, end1, start2, end2 = (int(row[k]) for k in ("start1", "end1", "start2", "end2"))
    return Pair(
        id=f"wic-{split}-{row['idx']}",
        target_word=row["sentence1"][start1:end1],
        context_1=row["sentence1"],
        context_2=row["sentence2"],
        location_1=Span(start1, end1),
        location_2=Span(start2, end2),
        label=_label(row["label"], f"WiC {split} row {row['idx']}"),
    )


def read_pairs(path: Path) -> list[Pair]:
    """Pairs from a local JSONL file of the PS-Eval shape."""
    if not path.is_file():
        raise UsageError(f"no pairs file at {path}: give source=file:PATH a JSONL file of PS-Eval rows")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [pair_from_ps_eval(json.loads(line)) for line in lines if line.strip()]


def _builder(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in _BUILDERS:
        raise UsageError(f"cannot read {path}: use a {', '.join(_BUILDERS)} file")
    return _BUILDERS[suffix]


def load_split(name: str, config: str | None, split: str, local: str | None = None, streaming: bool = False) -> Any:
    """`datasets.load_dataset` for one split, or the same call on a local file standing in for it.

    Tests pass `local` so the Hub code path runs offline on a file of the same shape.
    """
    if local is not None:
        return load_hub_dataset(
            _builder(local), data_files={split: local}, split=split, streaming=streaming, fallback="the shipped source"
        )
    return load_hub_dataset(name, config, split=split, streaming=streaming, fallback="the shipped source")


def load_pairs(source: str = "shipped", local: Mapping[str, str] | None = None) -> list[Pair]:
    """Pairs from `shipped`, `hub` (PS-Eval, split test), `wic` (train + validation) or `file:PATH`.

    `local` maps split names to local files that stand in for the Hub's splits
    (PS-Eval: {"test": ...}; WiC: {"train": ..., "validation": ...}).
    """
    local = dict(local or {})
    if source == "shipped":
        return read_pairs(PAIRS_PATH)
    if source.startswith("file:"):
        return read_pairs(Path(source[len("file:") :]).expanduser())
    if source == "hub":
        return [pair_from_ps_eval(row) for row in load_split(PS_EVAL, None, "test", local.get("test"))]
    if source == "wic":
        return [pair_from_wic(row, split) for split in WIC_SPLITS for row in load_split(*WIC, split, local.get(split))]
    raise UsageError(f"unknown pairs source '{source}': use shipped, hub, wic or file:PATH")


def prompt(context: str, target_word: str) -> str:
    """The authors' prompt; the target word is repeated at its end."""
    return PROMPT.format(context=context, target_word=target_word)


@dataclass(frozen=True)
class Located:
    """A pair's two prompts and the target token in each, or why the pair is skipped.

    Positions count from the end of the token ids (-2 is the token before " means"), so
    they stay right whatever special tokens the tokenizer puts in front.
    """

    pair: Pair
    prompts: tuple[str, str]
    positions: tuple[int, int] | None
    token_ids: tuple[int, ...]  # the target's token(s) in the first prompt
    skip: str | None = None


def _target_tokens(tokenizer: Any, text: str, word: str) -> tuple[list[int], list[int], bool]:
    """(ids of the whole prompt, indices of the tokens over the appended word, whether it is one whole token)."""
    end = len(text) - len(SUFFIX)
    start = end - len(word)
    try:
        enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    except NotImplementedError:
        raise UsageError(
            "locating the target word needs a fast tokenizer (offset mapping): load the model with its tokenizer.json"
        ) from None
    covering = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > s and s < end and e > start]
    whole = len(covering) == 1 and text[slice(*enc["offset_mapping"][covering[0]])].strip() == word
    return list(enc["input_ids"]), covering, whole


def locate(pair: Pair, tokenizer: Any, multi_token: str = "skip") -> Located:
    """The two prompts and the target token's position in each.

    As the authors do, a pair is kept only if the word is one token with the same id in
    both prompts; `multi_token="last"` keeps split words and takes their last sub-token.
    """
    if multi_token not in MULTI_TOKEN_MODES:
        raise UsageError(f"multi_token={multi_token}: use one of {', '.join(MULTI_TOKEN_MODES)}")
    prompts = (prompt(pair.context_1, pair.target_word), prompt(pair.context_2, pair.target_word))
    found = [_target_tokens(tokenizer, text, pair.target_word) for text in prompts]
    targets = [tuple(ids[i] for i in covering) for ids, covering, _ in found]
    if not all(whole for _, _, whole in found) and multi_token == "skip":
        return Located(pair, prompts, None, targets[0], SKIP_MULTI_TOKEN)
    if not targets[0] or targets[0] != targets[1]:
        return Located(pair, prompts, None, targets[0], SKIP_MISMATCH)
    first, second = (covering[-1] - len(ids) for ids, covering, _ in found)
    return Located(pair, prompts, (first, second), targets[0])


def locate_pairs(pairs: Iterable[Pair], tokenizer: Any, multi_token: str = "skip") -> list[Located]:
    """`locate` for every pair, in order (skipped pairs included, with their reason)."""
    return [locate(p, tokenizer, multi_token) for p in pairs]


def _parse_hf(source: str) -> tuple[str, str | None, str]:
    parts = source[len("hf:") :].split(":")
    if not parts[0] or len(parts) > 3:
        raise UsageError(
            f"corpus={source}: write hf:NAME[:CONFIG][:SPLIT], e.g. hf:Salesforce/wikitext:wikitext-103-raw-v1:train"
        )
    name, config, split = parts + [""] * (3 - len(parts))
    return name, config or None, split or "train"


def _shipped_paragraphs() -> Iterator[str]:
    for paragraph in CORPUS_PATH.read_text(encoding="utf-8").split("\n\n"):
        text = " ".join(paragraph.split())
        if text:
            yield text


def _streamed_texts(rows: Iterable[Mapping[str, Any]], source: str) -> Iterator[str]:
    for row in rows:
        if "text" not in row:
            raise UsageError(f"corpus={source} has no 'text' column (columns: {', '.join(row)}); pick a data set with one")
        if row["text"] and row["text"].strip():
            yield row["text"]


def corpus_texts(source: str = "shipped", local: str | None = None) -> Iterator[str]:
    """Texts to train an SAE on: the shipped corpus (one paragraph each) or a streamed Hub data set.

    `hf:NAME[:CONFIG][:SPLIT]` (split train by default) streams its `text` column, so a
    large corpus is never downloaded whole; `local` is a file standing in for that split.
    Empty texts are dropped. The source is checked now; texts are read as they are asked for.
    """
    if source == "shipped":
        return _shipped_paragraphs()
    if source.startswith("hf:"):
        name, config, split = _parse_hf(source)
        return _streamed_texts(load_split(name, config, split, local, streaming=True), source)
    raise UsageError(f"unknown corpus '{source}': use shipped or hf:NAME[:CONFIG][:SPLIT]")
