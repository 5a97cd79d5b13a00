"""k-shot prompts, the answer choices scored by log-likelihood, and the parse rule for generations.

A prompt is an instruction line, `k` solved examples, then the query ending in `Answer:`,
blocks separated by a blank line. The shots are drawn once per seed from a pool that is
disjoint from the test items (another split or generator stream, and never an example
with the same text as any query), so every model sees the same shots on the same items and
the paired comparison is fair. For FLD they are label-balanced.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence, Union

from harness import UsageError

from .generators import LABELS, BabiItem, FLDItem

Item = Union[FLDItem, BabiItem]

FLD_INSTRUCTION = "Based on the facts, decide whether the hypothesis is PROVED, DISPROVED or UNKNOWN."
BABI_INSTRUCTION = "Read the story and answer the question with one word."
_PUNCTUATION = ".,;:!?\"'()[]"


@dataclass(frozen=True)
class Choices:
    """Continuations scored after the prompt (each with its leading space) and the gold one's index."""

    continuations: tuple[str, ...]
    gold: int


def _text(item: Item) -> str:
    if isinstance(item, FLDItem):
        return f"Facts: {item.context}\nHypothesis: {item.hypothesis}\nAnswer:"
    return f"Story: {' '.join(item.story)}\nQuestion: {item.question}\nAnswer:"


def solved(item: Item) -> str:
    """An example block with its answer, as shown in the shots."""
    return f"{_text(item)} {item.answer}"


def build_prompt(item: Item, shots: Sequence[Item]) -> str:
    """Instruction, the solved shots, then the query; the model continues after `Answer:`."""
    instruction = FLD_INSTRUCTION if isinstance(item, FLDItem) else BABI_INSTRUCTION
    return "\n\n".join([instruction, *(solved(s) for s in shots), _text(item)])


def pick_shots(pool: Sequence[Item], queries: Sequence[Item], k: int, seed: int = 0) -> list[Item]:
    """`k` shots from `pool`, the same for every query of a seed; none has a query's text.

    FLD shots cycle through the three labels (k=3: one of each), in an order drawn for the seed.
    """
    if k < 0:
        raise UsageError(f"shots={k}: use a number of examples >= 0")
    taken = {_text(q) for q in queries}
    eligible = [p for p in pool if _text(p) not in taken]
    rng = random.Random(f"shots/{seed}")
    if pool and isinstance(pool[0], FLDItem):
        by_label = {label: [p for p in eligible if p.answer == label] for label in LABELS}
        order = rng.sample(LABELS, len(LABELS))
        wanted = [order[i % len(order)] for i in range(k)]
        if any(wanted.count(label) > len(by_label[label]) for label in LABELS):
            raise UsageError(f"shots={k}: the pool has too few examples of some label; use fewer shots or a larger pool")
        shots = []
        for label in LABELS:
            shots += rng.sample(by_label[label], wanted.count(label))
        rng.shuffle(shots)
        return shots
    if k > len(eligible):
        raise UsageError(f"shots={k}: the pool has only {len(eligible)} examples unlike the queries; use fewer shots")
    return rng.sample(eligible, k)


def hub_candidates(items: Sequence[Item]) -> tuple[str, ...]:
    """Every gold answer of a hub split, sorted: the choice set for its bAbI items."""
    return tuple(sorted({i.answer for i in items}))


def choices(item: Item, candidates: Sequence[str]) -> Choices:
    """The continuations " X" for every candidate X, and where the item's gold answer is."""
    if item.answer not in candidates:
        raise ValueError(f"gold answer {item.answer!r} of {item.uid} is not among the candidates")
    return Choices(tuple(f" {c}" for c in candidates), list(candidates).index(item.answer))


def parse_answer(text: str, candidates: Sequence[str]) -> str | None:
    """The generation's first word on its first line, punctuation stripped, matched to a candidate
    regardless of case (upper case for FLD labels, lower case for bAbI words); None when it is
    none of them, which counts as wrong and against `format_rate`."""
    words = text.lstrip().split("\n", 1)[0].split()
    if not words:
        return None
    word = words[0].strip(_PUNCTUATION).casefold()
    return next((c for c in candidates if c.casefold() == word), None)
