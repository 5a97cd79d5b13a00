"""scrambled_text: Scrambled Bench, restoring and reading text whose letters are scrambled.

Cao, Kojima, Matsuo, Iwasawa (2023), "Unnatural Error Correction: GPT-4 Can Almost
Perfectly Handle Unnatural Scrambled Text" (EMNLP 2023, arXiv 2311.18805). Method, in
the order the task runs it:

1. Data: sentences and multiple-choice items (shipped sample written for this project;
   or DREAM / AQuA-RAT from the Hub, or RealtimeQA weekly files), scrambled at run time
   by each scramble type, deterministically for the seed (authors' default 10).
2. ScrRec: "Scrambled sentence: ...\nRecovered sentence:" (zero-shot with one instruction
   line, or three demonstrations scrambled at random 50%), greedy, first line kept;
   Recovery Rate RR_i = (ED(orig, scr) - ED(orig, rec)) / ED(orig, scr).
3. ScrQA: only the context is scrambled; the option letter with the highest next-token
   log-probability (or parsed from a generation); Relative Performance Gain
   RPG = (Acc_scr - Acc_sub) / (Acc_orig - Acc_sub) against the letter-substituted context.
4. Likelihood (for small base models): log-probability of the original vs. the scrambled
   sentence, unconditionally and as the continuation of the ScrRec prompt.
5. Word restoration probe: at the last token of a scrambled word, by layer, how close is
   resid_post.L to the original word's state (cosine minus a different-word baseline), and
   does a word-identity probe trained on original words read the scrambled one?

Choices where the paper is silent (see the spec):
- Generation stops at the first newline after leading whitespace is dropped; the token
  budget is min(max_new_tokens, 2 x tokens of the original + 16) since everything after
  the first line is discarded, a line longer than that is far from the original anyway.
- Substituted letters keep the case of the letter they replace.
- The shipped QA items are three-option; they use the RealtimeQA evidence prompt with
  "among A through C".
"""

from __future__ import annotations

import glob
import json
import logging
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

import numpy as np
import torch

from harness.batching import make_batches
from harness.errors import UsageError
from harness.registry import register_task
from harness.results import Metric, Reference
from harness.sites import forward
from harness.stats import bootstrap_ci
from harness.task import Task, TaskResult
from probes.text_metrics import (
    pooled_recovery,
    probe_transfer,
    recovery_rates,
    relative_performance_gain,
    restoration_cosine,
    row_cosine,
    rpg_rows,
)

log = logging.getLogger(__name__)

PAPER = "Cao, Kojima, Matsuo, Iwasawa 2023, Unnatural Error Correction: GPT-4 Can Almost Perfectly Handle Unnatural Scrambled Text (EMNLP 2023, arXiv 2311.18805)"
DATA = Path(__file__).parent / "data" / "scrambled"

RATES = {"random_20": 0.2, "random_50": 0.5, "random_100": 1.0}
TYPES = ("random_20", "random_50", "random_100", "keepfirst", "keepfirstlast", "substituted")
DEFAULT_TYPES = "random_20,random_50,random_100,keepfirst,keepfirstlast"
SUBTASKS = ("rec", "qa", "likelihood", "probe")
PROBE_VARIANTS = ("keepfirstlast", "random_100")
RPG_MIN_GAP = 0.05
LETTERS = "ABCDE"

# ---------------------------------------------------------------------------------------
# Scrambling
# ---------------------------------------------------------------------------------------

_SALT = {"random": 1, "keepfirst": 2, "keepfirstlast": 3, "substituted": 4}
_LOWER = "abcdefghijklmnopqrstuvwxyz"


def split_pieces(text: str) -> list[str]:
    """The authors' split: re.split(r"(\\W)") keeps every separator as its own piece."""
    return re.split(r"(\W)", text)


def letter_positions(piece: str) -> list[int]:
    return [i for i, c in enumerate(piece) if c.isalpha()]


def is_word(piece: str) -> bool:
    """A word is a piece with at least two letters."""
    return len(letter_positions(piece)) >= 2


def collapse_spaces(text: str) -> str:
    """Collapse runs of spaces on each line (applied after scrambling, and to the originals)."""
    return "\n".join(re.sub(" +", " ", line) for line in text.split("\n"))


def forced_permutation(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of n items that moves at least one of them (n >= 2)."""
    perm = rng.permutation(n)
    if n >= 2 and np.array_equal(perm, np.arange(n)):
        i, j = rng.choice(n, size=2, replace=False)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def movable_letters(piece: str, kind: str) -> list[int]:
    """Indices of the letters a scramble type may move in this piece (empty: left alone)."""
    pos = letter_positions(piece)
    if kind in ("random", "substituted"):
        return pos if len(pos) >= 2 else []
    if kind == "keepfirst":
        return pos[1:] if len(pos) >= 3 else []
    if kind == "keepfirstlast":
        return pos[1:-1] if len(pos) >= 4 else []
    raise ValueError(f"unknown scramble kind {kind}")


def permute_letters(piece: str, movable: list[int], perm: np.ndarray) -> str:
    chars = list(piece)
    for dst, src in zip(movable, perm):
        chars[dst] = piece[movable[src]]
    return "".join(chars)


def substitute_letters(piece: str, rng: np.random.Generator) -> str:
    """Replace every letter by a random ASCII letter different from it, keeping its case."""
    chars = list(piece)
    for i in letter_positions(piece):
        c = piece[i]
        pool = [x for x in _LOWER if x != c.lower()]
        new = pool[int(rng.integers(len(pool)))]
        chars[i] = new.upper() if c.isupper() else new
    return "".join(chars)


def scramble_word(word: str, kind: str, rng: np.random.Generator) -> str:
    """One piece under `random` (all letters), `keepfirst`, `keepfirstlast` or `substituted`."""
    if kind == "substituted":
        return substitute_letters(word, rng) if is_word(word) else word
    movable = movable_letters(word, kind)
    if len(movable) < 2:
        return word
    return permute_letters(word, movable, forced_permutation(len(movable), rng))


def _family(scramble_type: str) -> str:
    if scramble_type in RATES:
        return "random"
    if scramble_type in ("keepfirst", "keepfirstlast", "substituted"):
        return scramble_type
    raise ValueError(f"unknown scramble type '{scramble_type}': use one of {', '.join(TYPES)}")


def scramble_with_words(text: str, scramble_type: str, seed: int = 10) -> tuple[str, list[int]]:
    """Scrambled text and the indices (among its words) of the words the type touched.

    Random rates are nested: one random word order per text, and every word's permutation
    is drawn up front in word order, so rate r takes the first round(r x #words) words of
    that order with the same permutations at every rate.
    """
    family = _family(scramble_type)
    pieces = split_pieces(text)
    words = [i for i, p in enumerate(pieces) if is_word(p)]
    rng = np.random.default_rng([seed, _SALT[family], zlib.crc32(text.encode("utf-8"))])
    chosen: list[int] = []
    if family == "random":
        order = rng.permutation(len(words))
        perms = [forced_permutation(len(movable_letters(pieces[i], "random")), rng) for i in words]
        chosen = sorted(int(k) for k in order[: round(RATES[scramble_type] * len(words))])
        for k in chosen:
            i = words[k]
            pieces[i] = permute_letters(pieces[i], movable_letters(pieces[i], "random"), perms[k])
    else:
        for k, i in enumerate(words):
            new = scramble_word(pieces[i], family, rng)
            if family == "substituted" or len(movable_letters(pieces[i], family)) >= 2:
                chosen.append(k)
            pieces[i] = new
    return collapse_spaces("".join(pieces)), chosen


def scramble(text: str, scramble_type: str, seed: int = 10) -> str:
    return scramble_with_words(text, scramble_type, seed)[0]


# ---------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------

REC_INSTRUCTION = "The letters inside the words of this sentence are shuffled. Write the original sentence."
# Three demonstrations written for this project (the authors used three WikiQA sentences).
REC_DEMOS = (
    "The old mill by the river was turned into a small museum last year.",
    "Most visitors arrive in the early morning, when the light over the hills is soft and the paths are still quiet.",
    "According to the guide, the stone bridge was built by hand in 1850, and it has survived at least four great floods without losing a single block.",
)


def rec_prompt(scrambled: str) -> str:
    """Zero-shot ScrRec prompt: one instruction line, then the authors' frame."""
    return f"{REC_INSTRUCTION}\nScrambled sentence: {scrambled}\nRecovered sentence:"


def rec_demos(seed: int) -> str:
    """Few-shot block: the demonstrations scrambled at random 50%, whatever the test type."""
    return "".join(f"Scrambled Sentence: {scramble(d, 'random_50', seed)}\nRecovered Sentence: {d}\n\n" for d in REC_DEMOS)


def rec_prompt_fewshot(scrambled: str, demos: str) -> str:
    return f"{demos}Scrambled Sentence: {scrambled}\nRecovered Sentence:"


def clean_recovery(output: str) -> str:
    """First line of the continuation, cut at a repeated 'Scrambled sentence:', stripped."""
    text = output.lstrip().split("\n", 1)[0]
    text = re.split(r"scrambled sentence:", text, flags=re.IGNORECASE)[0]
    return text.strip()


def choices_text(choices: Sequence[str]) -> str:
    """The authors' choices line: '(A)first (B)second ...'."""
    return " ".join(f"({LETTERS[i]}){c}" for i, c in enumerate(choices))


def letters_span(n: int) -> str:
    return f"A through {LETTERS[n - 1]}"


def evidence_prompt(question: str, choices: Sequence[str], evidence: str) -> str:
    """RealtimeQA (and the shipped sample): question and choices clean, evidence scrambled."""
    return (f"Question: {question}\nChoices: {choices_text(choices)}\nEvidence: {evidence}\n"
            f"Answer: Based on the evidence, among {letters_span(len(choices))}, the answer is")


def dialogue_prompt(question: str, choices: Sequence[str], dialogue: str) -> str:
    """DREAM: the dialogue is the scrambled context."""
    return (f"Dialogue:\n{dialogue}\nQuestion: {question}\nChoices: {choices_text(choices)}\n"
            f"Answer: Based on the dialogue, among {letters_span(len(choices))}, the answer is")


# Four chain-of-thought demonstrations written for this project (the authors wrote four of their own).
AQUA_DEMOS = (
    ("A shop sells pens at 3 dollars each. How much do 7 pens cost?", ["18", "21", "24", "27", "30"],
     "Each pen costs 3 dollars, so 7 pens cost 7 * 3 = 21 dollars. The answer is (B)."),
    ("A train travels 240 km in 4 hours. What is its average speed in km/h?", ["40", "50", "60", "70", "80"],
     "Average speed is distance divided by time: 240 / 4 = 60 km/h. The answer is (C)."),
    ("If 2x + 5 = 17, what is x?", ["4", "5", "6", "7", "8"],
     "Subtract 5 from both sides: 2x = 12. Divide by 2: x = 6. The answer is (C)."),
    ("The average of four numbers is 10. Three of them are 8, 9 and 12. What is the fourth?", ["9", "10", "11", "12", "13"],
     "The four numbers add up to 4 * 10 = 40. The three known ones add up to 29, so the fourth is 40 - 29 = 11. The answer is (C)."),
)


def aqua_prompt(question: str, choices: Sequence[str], likelihood: bool) -> str:
    """Four-shot chain of thought; the question itself is the scrambled context."""
    demos = "".join(f"Question: {q}\nChoices: {choices_text(c)}\nAnswer: {a}\n\n" for q, c, a in AQUA_DEMOS)
    tail = " The answer is (" if likelihood else ""
    return f"{demos}Question: {question}\nChoices: {choices_text(choices)}\nAnswer:{tail}"


def parse_letter(output: str, n_choices: int, after_answer_is: bool = False) -> str | None:
    """First option letter of a generation (AQuA: the letter after the last 'answer is')."""
    valid = LETTERS[:n_choices]
    if after_answer_is:
        parts = re.split(r"answer is", output, flags=re.IGNORECASE)
        if len(parts) < 2:
            return None
        output = parts[-1]
    m = re.search(rf"\b([{valid}])\b", output)
    return m.group(1) if m else None


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


@dataclass
class QAItem:
    id: str
    context: str  # the text that gets scrambled
    question: str
    choices: list[str]
    answer: str  # a letter
    style: Literal["evidence", "dialogue", "aqua"] = "evidence"

    def prompt(self, context: str, likelihood: bool = True) -> str:
        if self.style == "dialogue":
            return dialogue_prompt(self.question, self.choices, context)
        if self.style == "aqua":
            return aqua_prompt(context, self.choices, likelihood)
        return evidence_prompt(self.question, self.choices, context)


@dataclass
class Data:
    sentences: list[str]
    qa: list[QAItem]
    source: str


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_sample() -> Data:
    """The shipped sample: 200 sentences and 60 three-option questions, written for this project."""
    sentences = [r["text"] for r in _jsonl(DATA / "sentences.jsonl")]
    qa = [QAItem(r["id"], r["context"], r["question"], list(r["choices"]), r["answer"], "evidence")
          for r in _jsonl(DATA / "qa.jsonl")]
    return Data(sentences, qa, "sample")


def strip_tags(text: str) -> str:
    return re.sub(r"<[^>]+>", "", text)


def load_realtimeqa(path: str) -> Data:
    """RealtimeQA weekly `*_qa.jsonl` files (a file or a folder): evidence texts for ScrRec and QA."""
    p = Path(path)
    files = sorted(glob.glob(str(p / "*qa.jsonl"))) if p.is_dir() else [str(p)]
    if not files or not all(Path(f).is_file() for f in files):
        raise UsageError(f"source=file:{path}: no RealtimeQA *_qa.jsonl file there; point it at a weekly file or their folder")
    sentences, qa = [], []
    for f in files:
        for k, r in enumerate(_jsonl(Path(f))):
            evidence = collapse_spaces(strip_tags(r.get("evidence") or "")).strip()
            if not evidence:
                continue
            if not evidence.endswith("."):
                evidence += "."
            sentences.append(evidence)
            answer = r["answer"][0] if isinstance(r["answer"], list) else r["answer"]
            qa.append(QAItem(f"{Path(f).stem}:{k}", evidence, r["question_sentence"], list(r["choices"]),
                             LETTERS[int(answer)], "evidence"))
    return Data(sentences, qa, f"file:{path}")


def _load_dataset(*args: Any, **kwargs: Any) -> Any:
    try:
        import datasets
    except ImportError:
        raise UsageError("source=hub needs the datasets package: pip install datasets") from None
    try:
        return datasets.load_dataset(*args, **kwargs)
    except Exception as e:  # offline without a cached copy, a renamed data set...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"cannot load {args[0]} ({first}); download it once with network access, or use source=sample") from None


def dream_items(records: Any) -> list[QAItem]:
    """DREAM records (fields dialogue: list of turns, question, choice: 3 options, answer: the option text)."""
    items = []
    for k, r in enumerate(records):
        choices = list(r["choice"])
        items.append(QAItem(str(r.get("id", k)), "\n".join(r["dialogue"]), r["question"], choices,
                            LETTERS[choices.index(r["answer"])], "dialogue"))
    return items


def aqua_items(records: Any) -> list[QAItem]:
    """AQuA-RAT records (fields question, options: 'A)21', ..., correct: a letter)."""
    items = []
    for k, r in enumerate(records):
        options = [re.sub(r"^\s*[A-E]\s*\)\s*", "", o) for o in r["options"]]
        items.append(QAItem(f"aqua:{k}", r["question"], "", options, r["correct"].strip(), "aqua"))
    return items


def load_hub(qa_dataset: str, data_files: str | None = None) -> Data:
    """DREAM (`dataset-org/dream`, test) or AQuA-RAT (`deepmind/aqua_rat`, raw, test).

    `data_files`: a local JSON/JSONL file of the same shape instead of the Hub (for tests).
    ScrRec has no Hub copy of RealtimeQA: DREAM dialogues stand in for its sentences.
    """
    if qa_dataset == "dream":
        ds = (_load_dataset("json", data_files=data_files, split="train") if data_files
              else _load_dataset("dataset-org/dream", split="test"))
        qa = dream_items(ds)
        return Data([q.context for q in qa if q.context], qa, "hub:dataset-org/dream")
    ds = (_load_dataset("json", data_files=data_files, split="train") if data_files
          else _load_dataset("deepmind/aqua_rat", "raw", split="test"))
    qa = aqua_items(ds)
    return Data([q.context for q in qa], qa, "hub:deepmind/aqua_rat")


def _unique_by_text(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# ---------------------------------------------------------------------------------------
# Log-likelihood of token sequences (no multi-token helper in the engine yet)
# ---------------------------------------------------------------------------------------


@torch.no_grad()
def sequence_logprob(model: Any, sequences: Sequence[Sequence[int]], starts: Sequence[int],
                     batch_size: int | None = None, progress: Callable[[Any], Any] | None = None) -> np.ndarray:
    """Sum of log P(token_t | tokens_<t) over t >= starts[i] of each sequence (starts[i] >= 1).

    Batched with the engine's left padding and position ids; only the scored positions'
    log-softmax is formed, a few rows at a time (Gemma's vocabulary is 262k).
    """
    vocab = model.hf.get_output_embeddings().weight.shape[0]
    if batch_size is None:
        batch_size = 4 if vocab > 100_000 else 16
    out = np.zeros(len(sequences))
    batches = make_batches(sequences, batch_size, model.tokenizer.pad_token_id)
    for batch in progress(batches) if progress else batches:
        logits = forward(model, batch).logits
        for r, i in enumerate(batch.indices):
            pad = int(batch.pad[r])
            ids = torch.as_tensor(sequences[i][starts[i]:], device=logits.device)
            rows = logits[r, pad + starts[i] - 1 : pad + len(sequences[i]) - 1].float()
            out[i] = float((rows.gather(-1, ids[:, None])[:, 0] - torch.logsumexp(rows, -1)).sum())
    return out


def bos_id(tokenizer: Any) -> int:
    """The token every text is scored after: BOS, or EOS for tokenizers without one (GPT-2 style)."""
    tid = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if tid is None:
        raise UsageError("the tokenizer has neither a BOS nor an EOS token; the likelihood view needs one to score the first token")
    return int(tid)


# ---------------------------------------------------------------------------------------
# Config and task
# ---------------------------------------------------------------------------------------


def parse_list(text: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise ValueError(f"{what}: unknown {', '.join(bad) or '(empty)'}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(items))


@dataclass
class ScrambledConfig:
    """Defaults are the paper's settings (seed 10, zero-shot, 256 new tokens)."""

    types: str = DEFAULT_TYPES  # comma-separated scramble ids; substituted is a QA baseline, always run there
    seed: int = 10
    source: str = "sample"  # sample | hub | file:PATH (RealtimeQA weekly *_qa.jsonl)
    qa_dataset: Literal["dream", "aqua"] = "dream"  # with source=hub
    subtasks: str = "rec,qa,likelihood,probe"
    shots: int = 0  # 0 or 3
    max_new_tokens: int = 256
    qa_scoring: Literal["likelihood", "generate"] = "likelihood"
    probe_layers: str = "all"  # all, or comma-separated layer indices
    probe_words: int = 50  # word classes of the restoration probe (<= 50)
    n_max: Optional[int] = None  # at most this many sentences and QA items
    bootstrap: int = 1000

    def __post_init__(self) -> None:
        self.type_list = parse_list(self.types, TYPES, "types")
        self.subtask_list = parse_list(self.subtasks, SUBTASKS, "subtasks")
        if self.shots not in (0, 3):
            raise ValueError("shots must be 0 or 3")
        if not (self.source in ("sample", "hub") or self.source.startswith("file:")):
            raise ValueError("source must be sample, hub or file:PATH")
        if self.probe_layers != "all" and not re.fullmatch(r"\d+(,\d+)*", self.probe_layers.replace(" ", "")):
            raise ValueError("probe_layers must be 'all' or comma-separated layer indices, e.g. 0,4,8")
        if not 2 <= self.probe_words <= 50:
            raise ValueError("probe_words must be between 2 and 50")
        if self.max_new_tokens < 1 or self.bootstrap < 1 or (self.n_max is not None and self.n_max < 1):
            raise ValueError("max_new_tokens, bootstrap and n_max must be positive")


@register_task
class ScrambledText(Task):
    name = "scrambled_text"
    version = "1.0"
    paper = PAPER
    description = ("Scrambled Bench: restore sentences whose letters are scrambled (recovery rate), answer questions "
                   "on scrambled contexts (relative performance gain), likelihood of original vs scrambled text, "
                   "and how far each layer restores a scrambled word.")
    Config = ScrambledConfig
    headline_metrics = ["recovery_rate_random_100", "recovery_rate_keepfirstlast", "recovery_rate_random_50",
                        "qa_accuracy_original", "qa_accuracy_random_100", "prefer_original_random_100"]

    def run(self, model, config: ScrambledConfig, ctx) -> TaskResult:
        self.n_boot = config.bootstrap
        self.seed = ctx.seed
        data = self.load(config)
        sentences = [collapse_spaces(s).strip() for s in data.sentences]
        sentences = list(ctx.limited(sentences[: config.n_max] if config.n_max else sentences))
        qa = list(ctx.limited(data.qa[: config.n_max] if config.n_max else data.qa))
        metrics: dict[str, Metric] = {}
        details: dict[str, Any] = {"source": data.source, "n_sentences": len(sentences), "n_qa": len(qa), "n_layers": model.n_layers}
        notes: list[str] = []
        if data.source.startswith("hub"):
            notes.append("ScrRec on Hub data uses the QA contexts as sentences (no Hub copy of RealtimeQA)")
        if "rec" in config.subtask_list:
            self.recovery(model, sentences, config, ctx, metrics, details, notes)
        if "qa" in config.subtask_list:
            self.question_answering(model, qa, config, ctx, metrics, details, notes)
        if "likelihood" in config.subtask_list:
            self.likelihood(model, sentences, config, ctx, metrics, details)
        if "probe" in config.subtask_list:
            self.restoration_probe(model, config, ctx, metrics, details, notes)
        return TaskResult(metrics=metrics, reference=reference(), details=details, notes=notes)

    def metric(self, values: np.ndarray, higher_is_better: bool | None = True,
               statistic: Callable[[np.ndarray], float] = np.mean) -> Metric:
        value, lo, hi = bootstrap_ci(np.asarray(values), statistic, seed=self.seed, n_boot=self.n_boot)
        return Metric(value=value, ci_low=lo, ci_high=hi, n=len(values), higher_is_better=higher_is_better)

    @staticmethod
    def load(config: ScrambledConfig) -> Data:
        if config.source == "sample":
            return load_sample()
        if config.source == "hub":
            return load_hub(config.qa_dataset)
        return load_realtimeqa(config.source[len("file:"):])

    # ScrRec --------------------------------------------------------------------------------
    def recovery(self, model, sentences, config, ctx, metrics, details, notes) -> None:
        tok = model.tokenizer
        demos = rec_demos(config.seed) if config.shots == 3 else ""
        runs = [(t, i, scramble(s, t, config.seed)) for t in config.type_list for i, s in enumerate(sentences)]
        prompts = [rec_prompt_fewshot(scr, demos) if config.shots else rec_prompt(scr) for _, _, scr in runs]
        longest = max(len(tok(s, add_special_tokens=False)["input_ids"]) for s in sentences)
        budget = min(config.max_new_tokens, 2 * longest + 16)
        details["rec_max_new_tokens"] = budget
        outputs = ctx.generate(prompts, max_new_tokens=budget, desc="ScrRec")
        recovered = [clean_recovery(o) for o in outputs]
        details["recovery"] = {}
        for t in config.type_list:
            rows = [k for k, (tt, _, _) in enumerate(runs) if tt == t]
            orig = [sentences[runs[k][1]] for k in rows]
            scr = [runs[k][2] for k in rows]
            rec = [recovered[k] for k in rows]
            r = recovery_rates(orig, scr, rec)
            details["recovery"][t] = {"n_skipped": r.n_skipped, "mean_ed_scrambled": float(r.ed_scrambled.mean()),
                                      "mean_ed_recovered": float(r.ed_recovered.mean())}
            if len(r.kept):
                metrics[f"recovery_rate_{t}"] = self.metric(100 * r.rr)
                metrics[f"recovery_rate_pooled_{t}"] = self.metric(
                    np.stack([r.ed_scrambled[r.kept], r.ed_recovered[r.kept]], 1), statistic=pooled_recovery)
            else:
                notes.append(f"recovery_rate_{t}: every item has ED(orig, scr) = 0; nothing to score")
            metrics[f"recovery_exact_{t}"] = self.metric(np.array([a == b for a, b in zip(orig, rec)], dtype=float))
            for k, o, s, c in zip(rows, orig, scr, rec):
                ctx.log_sample({"subtask": "rec", "type": t, "original": o, "scrambled": s,
                                "output": outputs[k], "recovered": c})
        self.plot_recovery(ctx, metrics, config.type_list)

    # ScrQA ---------------------------------------------------------------------------------
    def question_answering(self, model, qa, config, ctx, metrics, details, notes) -> None:
        if not qa:
            notes.append("no QA items")
            return
        conditions = ["original"] + [t for t in config.type_list if t != "substituted"] + ["substituted"]
        likelihood = config.qa_scoring == "likelihood"
        runs = [(c, j) for c in conditions for j in range(len(qa))]
        prompts = [qa[j].prompt(qa[j].context if c == "original" else scramble(qa[j].context, c, config.seed), likelihood)
                   for c, j in runs]
        n_choices = max(len(q.choices) for q in qa)
        if likelihood:
            letters, suffix = option_tokens(model.tokenizer, n_choices, bare=qa[0].style == "aqua")
            logprobs = ctx.score([p + suffix for p in prompts], letters, desc="ScrQA").logprobs.numpy()
            for r, (_, j) in enumerate(runs):
                logprobs[r, len(qa[j].choices):] = -np.inf
            predicted = [LETTERS[int(k)] for k in logprobs.argmax(-1)]
        else:
            budget = config.max_new_tokens if qa[0].style == "aqua" else 8
            outputs = ctx.generate(prompts, max_new_tokens=budget, desc="ScrQA")
            predicted = [parse_letter(o, len(qa[j].choices), qa[j].style == "aqua") for o, (_, j) in zip(outputs, runs)]
        correct = {c: np.zeros(len(qa)) for c in conditions}
        for r, (c, j) in enumerate(runs):
            correct[c][j] = float(predicted[r] == qa[j].answer)
            ctx.log_sample({"subtask": "qa", "condition": c, "id": qa[j].id, "predicted": predicted[r], "answer": qa[j].answer})
        for c in conditions:
            metrics[f"qa_accuracy_{c}"] = self.metric(correct[c])
        details["qa_chance"] = float(np.mean([1 / len(q.choices) for q in qa]))
        details["qa_rpg"] = {}
        for t in conditions[1:-1]:
            rows = np.stack([correct["original"], correct["substituted"], correct[t]], 1)
            value = relative_performance_gain(rows[:, 2].mean(), rows[:, 1].mean(), rows[:, 0].mean(), RPG_MIN_GAP)
            details["qa_rpg"][t] = value
            if value is None:
                notes.append(f"qa_rpg_{t}: null, Acc_orig - Acc_sub < {RPG_MIN_GAP} (unstable)")
            else:
                metrics[f"qa_rpg_{t}"] = self.metric(rows, statistic=rpg_rows)

    # Likelihood ----------------------------------------------------------------------------
    def likelihood(self, model, sentences, config, ctx, metrics, details) -> None:
        tok = model.tokenizer
        bos = bos_id(tok)
        types = [t for t in config.type_list if t != "substituted"] or config.type_list

        def ids(text: str) -> list[int]:
            return tok(text, add_special_tokens=False)["input_ids"]

        texts = _unique_by_text(sentences + [scramble(s, t, config.seed) for t in types for s in sentences])
        lls = sequence_logprob(model, [[bos] + ids(x) for x in texts], [1] * len(texts),
                               progress=lambda b: ctx.progress(b, "likelihood"))
        ll = dict(zip(texts, lls))
        seqs, starts, keys = [], [], []
        for t in types:
            for i, s in enumerate(sentences):
                scr = scramble(s, t, config.seed)
                p = tok(rec_prompt(scr), add_special_tokens=True)["input_ids"]
                for which, cont in (("orig", s), ("scr", scr)):
                    c = ids(" " + cont)
                    seqs.append(p + c), starts.append(len(p)), keys.append((t, i, which))
        cond = dict(zip(keys, sequence_logprob(model, seqs, starts, progress=lambda b: ctx.progress(b, "conditional likelihood"))))
        details["likelihood"] = {}
        for t in types:
            scr = [scramble(s, t, config.seed) for s in sentences]
            lo = np.array([ll[s] for s in sentences])
            ls = np.array([ll[x] for x in scr])
            chars = np.array([len(s) for s in sentences], dtype=float)
            co = np.array([cond[(t, i, "orig")] for i in range(len(sentences))])
            cs = np.array([cond[(t, i, "scr")] for i in range(len(sentences))])
            metrics[f"ll_gap_per_char_{t}"] = self.metric((lo - ls) / chars)
            metrics[f"prefer_original_{t}"] = self.metric((lo > ls).astype(float))
            metrics[f"recovery_pref_{t}"] = self.metric((co > cs).astype(float))
            metrics[f"recovery_ll_gap_per_char_{t}"] = self.metric((co - cs) / chars)
            details["likelihood"][t] = {"mean_ll_original": float(lo.mean()), "mean_ll_scrambled": float(ls.mean())}

    # Word restoration probe ----------------------------------------------------------------
    def restoration_probe(self, model, config, ctx, metrics, details, notes) -> None:
        spec = json.loads((DATA / "probe_words.json").read_text(encoding="utf-8"))
        words, frames = spec["words"][: config.probe_words], spec["frames"]
        layers = list(range(model.n_layers)) if config.probe_layers == "all" else sorted({int(x) for x in config.probe_layers.split(",")})
        if layers[-1] >= model.n_layers:
            raise UsageError(f"--task-arg probe_layers: layer {layers[-1]} is past the model's depth ({model.n_layers} layers, 0..{model.n_layers - 1})")
        other = baseline_partner(words)
        variants = {v: [[scrambled_variant(w, v, config.seed, f) for f in range(len(frames))] for w in words] for v in PROBE_VARIANTS}
        items: list[tuple[str, int, int, str]] = []  # (variant, word, frame, surface form)
        for wi, w in enumerate(words):
            for fi in range(len(frames)):
                items.append(("original", wi, fi, w))
                for v in PROBE_VARIANTS:
                    items.append((v, wi, fi, variants[v][wi][fi]))
        prompts = [frames[fi].replace("{w}", form) for _, _, fi, form in items]
        spans = [(frames[fi].index("{w}"), frames[fi].index("{w}") + len(form)) for _, _, fi, form in items]
        positions = last_token_positions(model.tokenizer, prompts, spans)
        acts = ctx.collect(prompts, [f"resid_post.{L}" for L in layers], positions=positions, desc="probe states")
        index = {(v, wi, fi): k for k, (v, wi, fi, _) in enumerate(items)}
        n_w, n_f = len(words), len(frames)
        per_layer: dict[str, list[float]] = {}
        cos_rows: dict[str, dict[int, np.ndarray]] = {v: {} for v in PROBE_VARIANTS}
        probe_rows: dict[str, dict[int, np.ndarray]] = {v: {} for v in PROBE_VARIANTS}
        ceiling: dict[int, np.ndarray] = {}
        word_ids = np.repeat(np.arange(n_w), n_f)
        frame_ids = np.tile(np.arange(n_f), n_w)
        for L in layers:
            H = acts[f"resid_post.{L}"].numpy()
            orig = H[[index[("original", wi, fi)] for wi, fi in zip(word_ids, frame_ids)]]
            partner = H[[index[("original", other[wi], fi)] for wi, fi in zip(word_ids, frame_ids)]]
            scrambled = {v: H[[index[(v, wi, fi)] for wi, fi in zip(word_ids, frame_ids)]] for v in PROBE_VARIANTS}
            fit = probe_transfer(orig, word_ids, frame_ids, scrambled)
            ceiling[L] = fit.correct_original.astype(float)
            for v, scr in scrambled.items():
                cos_rows[v][L] = restoration_cosine(scr, orig, partner)
                per_layer.setdefault(f"restoration_cos_{v}", []).append(round(float(cos_rows[v][L].mean()), 6))
                per_layer.setdefault(f"cos_scrambled_original_{v}", []).append(round(float(row_cosine(scr, orig).mean()), 6))
                probe_rows[v][L] = fit.correct_scrambled[v].astype(float)
                per_layer.setdefault(f"restoration_probe_acc_{v}", []).append(round(float(probe_rows[v][L].mean()), 6))
            per_layer.setdefault("probe_acc_original", []).append(round(float(ceiling[L].mean()), 6))
        details["probe"] = {"layers": layers, "per_layer": per_layer, "n_words": n_w, "n_contexts": n_f,
                            "chance": 1 / n_w, "best_layer": {}}
        for v in PROBE_VARIANTS:
            best_cos = max(layers, key=lambda L: cos_rows[v][L].mean())
            best_acc = max(layers, key=lambda L: probe_rows[v][L].mean())
            details["probe"]["best_layer"][f"restoration_cos_{v}"] = best_cos
            details["probe"]["best_layer"][f"restoration_probe_acc_{v}"] = best_acc
            metrics[f"restoration_cos_{v}"] = self.metric(cos_rows[v][best_cos])
            metrics[f"restoration_probe_acc_{v}"] = self.metric(probe_rows[v][best_acc])
            metrics[f"probe_acc_original_at_best_{v}"] = self.metric(ceiling[best_acc])
        notes.append("restoration summaries are the maximum over layers (the layer is in details.probe.best_layer); "
                     "their intervals do not include the choice of layer")
        self.plot_probe(ctx, details["probe"])

    # Plots ---------------------------------------------------------------------------------
    def plot_recovery(self, ctx, metrics, types) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        shown = [t for t in types if f"recovery_rate_{t}" in metrics]
        if not shown:
            return
        fig, ax = plt.subplots(figsize=(6, 3.5))
        vals = [metrics[f"recovery_rate_{t}"] for t in shown]
        ax.bar(range(len(shown)), [m.value for m in vals],
               yerr=[[m.value - m.ci_low for m in vals], [m.ci_high - m.value for m in vals]], capsize=3)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(shown)), shown, rotation=20)
        ax.set_ylabel("recovery rate (%)")
        ax.set_title("ScrRec recovery rate by scramble type")
        ctx.save_figure(fig, "recovery_rate.png")

    def plot_probe(self, ctx, probe) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        layers, per = probe["layers"], probe["per_layer"]
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
        for v in PROBE_VARIANTS:
            a.plot(layers, per[f"restoration_cos_{v}"], marker="o", ms=3, label=f"{v}: cos(scr, orig) - cos(scr, other)")
            b.plot(layers, per[f"restoration_probe_acc_{v}"], marker="o", ms=3, label=f"probe on {v}")
        b.plot(layers, per["probe_acc_original"], ls="--", color="black", label="probe on held-out originals")
        b.axhline(probe["chance"], color="grey", ls=":", label="chance")
        a.axhline(0, color="grey", lw=0.8)
        a.set_xlabel("layer (resid_post.L)"), a.set_ylabel("baseline-corrected cosine")
        b.set_xlabel("layer (resid_post.L)"), b.set_ylabel("word-identity accuracy")
        a.legend(fontsize=7), b.legend(fontsize=7)
        fig.suptitle("Scrambled word vs original word, last token of the word")
        ctx.save_figure(fig, "restoration_layers.png")


def option_tokens(tokenizer: Any, n: int, bare: bool = False) -> tuple[list[int], str]:
    """Token ids of ' A', ' B', ... (bare 'A', 'B', ... after AQuA's '(') and a suffix for the prompt.

    A tokenizer that splits ' A' into a space and a letter is scored on the bare letter
    after a prompt ending in a space (suffix ' '); the letters must be distinct single tokens.
    """
    for prefix, suffix in ([("", "")] if bare else [(" ", ""), ("", " ")]):
        enc = [tokenizer(prefix + LETTERS[k], add_special_tokens=False)["input_ids"] for k in range(n)]
        ids = [e[0] for e in enc]
        if all(len(e) == 1 for e in enc) and len(set(ids)) == n:
            return ids, suffix
    raise UsageError("the tokenizer has no distinct single-token option letters; use --task-arg qa_scoring=generate")


def scrambled_variant(word: str, variant: str, seed: int, frame: int) -> str:
    """The word scrambled by `variant`, one draw per (word, context); redrawn until it differs when it can."""
    kind = "random" if variant == "random_100" else variant
    rng = np.random.default_rng([seed, _SALT[kind], zlib.crc32(word.encode()), frame])
    for _ in range(50):
        new = scramble_word(word, kind, rng)
        if new != word:
            return new
    return new


def baseline_partner(words: Sequence[str]) -> list[int]:
    """For each word, the next word in the list with the closest length (the different-word baseline)."""
    n = len(words)
    partner = []
    for i, w in enumerate(words):
        candidates = [(abs(len(words[j]) - len(w)), (j - i) % n, j) for j in range(n) if j != i]
        partner.append(min(candidates)[2])
    return partner


def last_token_positions(tokenizer: Any, prompts: Sequence[str], spans: Sequence[tuple[int, int]]) -> list[int]:
    """Index (special tokens included) of the last token overlapping each character span."""
    positions = []
    for prompt, (start, end) in zip(prompts, spans):
        enc = tokenizer(prompt, add_special_tokens=True, return_offsets_mapping=True)
        hits = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < end and b > start]
        if not hits:
            raise UsageError("cannot locate the probe word in the tokenised prompt; the tokenizer gives no offsets")
        positions.append(hits[-1])
    return positions


# ---------------------------------------------------------------------------------------
# Reference numbers
# ---------------------------------------------------------------------------------------

_REC = {  # zero-shot rand20 / 50 / 100 / keepfirst / keepfirstlast, few-shot rand100
    "gpt-4-0314": (93.8, 96.0, 96.0, 96.1, 96.6, 96.6),
    "gpt-3.5-turbo-0301": (83.0, 81.7, 77.9, 86.1, 90.7, 72.6),
    "text-davinci-003": (42.9, 52.9, 19.2, 69.8, 81.7, 37.7),
    "falcon-180B": (75.2, 61.8, -17.3, 57.9, 81.9, None),
    "meta-llama/Llama-2-70b-hf": (69.4, 41.5, -32.3, 39.8, 70.8, None),
    "meta-llama/Llama-2-7b-hf": (-5.9, -64.2, -44.1, -56.6, -14.5, None),
}
_QA = {  # (Acc_orig, Acc_sub, Acc_rand100, RPG rand100), fractions
    "gpt-4-0314": (0.977, 0.621, 0.934, 0.88),
    "gpt-3.5-turbo-0301": (0.971, 0.526, 0.818, 0.66),
    "meta-llama/Llama-2-70b-hf": (0.884, 0.572, 0.679, 0.34),
    "gpt-4-0314@dream": (0.967, 0.459, 0.885, 0.84),
    "meta-llama/Llama-2-70b-hf@dream": (0.930, 0.502, 0.572, 0.16),
}


def reference() -> Reference:
    metrics: dict[str, dict[str, float]] = {}
    for model, vals in _REC.items():
        keys = [f"recovery_rate_{t}" for t in ("random_20", "random_50", "random_100", "keepfirst", "keepfirstlast")] + ["recovery_rate_random_100_3shot"]
        metrics[model] = {k: v for k, v in zip(keys, vals) if v is not None}
    for model, (orig, sub, r100, rpg) in _QA.items():
        metrics.setdefault(model, {}).update({"qa_accuracy_original": orig, "qa_accuracy_substituted": sub,
                                              "qa_accuracy_random_100": r100, "qa_rpg_random_100": rpg})
    return Reference(
        source="recomputed from authors' outputs (github ccqq77/unnatural-error-correction), RealtimeQA; "
               + PAPER,
        metrics=metrics,
        notes={
            "recovery_rate": "RealtimeQA evidence (408 texts), zero-shot, per-item mean, %; our default data is the shipped sample",
            "recovery_rate_random_100_3shot": "few-shot (shots=3) recovery rate on random_100; compare with recovery_rate_random_100 of a shots=3 run",
            "qa": "model ids without a suffix: RealtimeQA (346 items); '@dream': DREAM test, human-annotated subset (512)",
            "ll_gap_per_char, prefer_original, recovery_pref, restoration_*": "no reference: not in the paper (small-model variants of the spec)",
        },
    )
