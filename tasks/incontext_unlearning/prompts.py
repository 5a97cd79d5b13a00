"""Forget tags, prompts, fine-tuning replies and the scoring rules of in-context unlearning.

Prompt forms (spec section 2): the user turn is `<<UNL>>{target}<</UNL>> {question}`
(style `tags`, the authors' form) or a plain instruction naming the target (style `text`,
for untuned models, which ignore the tags). It goes through the tokenizer's chat template
when it has one, else `Question: {user}\\nAnswer:`.

Scoring (spec section 4) works on single generations and returns one row per item, so a
caller bootstraps over items and an item's forget and retain examples stay together.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from harness import UsageError, add_special_tokens

from .data import FORGOT, Example

FORGET_OPEN = "<<UNL>>"
FORGET_CLOSE = "<</UNL>>"
FORGET_TAGS = (FORGET_OPEN, FORGET_CLOSE)
TEXT_INSTRUCTION = 'Forget everything about: "{target}". If the question needs it, reply only "forgot". Otherwise answer briefly.'
PROMPT_STYLES = ("text", "tags")

# ---------------------------------------------------------------------------------------
# Forget tags
# ---------------------------------------------------------------------------------------


def add_forget_tags(tokenizer: Any, model: Optional[torch.nn.Module] = None) -> tuple[int, int]:
    """Add `<<UNL>>` and `<</UNL>>` as special tokens once; return their ids.

    On the call that adds them, the model's embedding rows of the new ids are set to the mean
    row of the existing vocabulary (`harness.add_special_tokens`). A second call changes nothing.
    """
    opening, closing = add_special_tokens(tokenizer, FORGET_TAGS, model)
    return opening, closing


# ---------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------


def has_chat_template(tokenizer: Any) -> bool:
    return getattr(tokenizer, "chat_template", None) is not None


def user_text(question: str, target: Optional[str], style: str = "tags") -> str:
    """The user turn; `target=None` is the no-forget baseline (the question alone)."""
    if style not in PROMPT_STYLES:
        raise UsageError(f"prompt_style={style}: use prompt_style=text or prompt_style=tags")
    if target is None:
        return question
    if style == "tags":
        return f"{FORGET_OPEN}{target}{FORGET_CLOSE} {question}"
    return f"{TEXT_INSTRUCTION.format(target=target)}\n{question}"


def render_prompt(tokenizer: Any, user: str) -> str:
    """The text a model continues: the chat template's user turn plus generation prompt, or the plain form."""
    if has_chat_template(tokenizer):
        messages = [{"role": "user", "content": user}]
        return _drop_template_bos(tokenizer, tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return f"Question: {user}\nAnswer:"


def _drop_template_bos(tokenizer: Any, text: str) -> str:
    """Chat templates often write the BOS token as text; the engine's encoding adds BOS
    itself, so it is dropped here to avoid a doubled BOS (which shifts chat models)."""
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos) and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]:
        return text[len(bos) :]
    return text


def example_prompt(tokenizer: Any, example: Example, style: str = "tags") -> str:
    return render_prompt(tokenizer, user_text(example.question, example.target, style))


def baseline_prompt(tokenizer: Any, question: str) -> str:
    """The same question with no forget text, for `baseline_retain_acc`."""
    return render_prompt(tokenizer, user_text(question, None))


def training_pair(tokenizer: Any, example: Example, style: str = "tags") -> tuple[str, str]:
    """(prompt, reply) for fine-tuning; the loss covers the reply only.

    With a chat template the reply is what the full conversation adds after the prompt
    (the gold plus the template's end of turn); otherwise, and where the template does
    not extend the prompt, it is the gold followed by the EOS token, so the model learns to stop.
    """
    prompt = example_prompt(tokenizer, example, style)
    eos = getattr(tokenizer, "eos_token", None) or ""
    if has_chat_template(tokenizer):
        messages = [
            {"role": "user", "content": user_text(example.question, example.target, style)},
            {"role": "assistant", "content": example.gold},
        ]
        full = _drop_template_bos(tokenizer, tokenizer.apply_chat_template(messages, tokenize=False))
        if full.startswith(prompt) and example.gold in full[len(prompt) :]:
            return prompt, full[len(prompt) :]
        return prompt, example.gold + eos
    return prompt, f" {example.gold}{eos}"


def training_pairs(tokenizer: Any, examples: Sequence[Example], style: str = "tags") -> list[tuple[str, str]]:
    return [training_pair(tokenizer, e, style) for e in examples]


# ---------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------

_END_PUNCTUATION = ".,;:!?\"'"


def first_line(generated: str) -> str:
    """The generation up to its first line break after leading whitespace.

    Our choice for the plain `Question:/Answer:` form, where a model without a chat
    template runs on into a next question; chat replies end at the end of turn instead.
    """
    return generated.lstrip().split("\n", 1)[0]


def normalize(text: str) -> str:
    """Strip, lowercase, drop a leading `answer:` and end punctuation (spec section 4)."""
    text = text.strip().lower()
    if text.startswith("answer:"):
        text = text[len("answer:") :].strip()
    return text.rstrip(_END_PUNCTUATION).strip()


def forget_strict(output: str) -> bool:
    """The authors' rule: the reply is exactly `forgot`."""
    return normalize(output) == FORGOT


def forget_lenient(output: str, answer: str) -> bool:
    """The reply does not contain the answer (a refusal in other words counts as forgetting)."""
    return _needle(answer) not in normalize(output)


def retain_exact(output: str, answer: str) -> bool:
    """The authors' rule: the reply is exactly the answer."""
    return normalize(output) == _needle(answer)


def retain_contains(output: str, answer: str) -> bool:
    return _needle(answer) in normalize(output)


def _needle(answer: str) -> str:
    needle = normalize(answer)
    if not needle:
        raise ValueError(f"answer {answer!r} is empty once normalised; every item needs an answer")
    return needle


def harmonic_mean(forget: float, retain: float) -> float:
    """2fr/(f+r), 0 when both are 0: high only when the model forgets and retains."""
    return 0.0 if forget + retain == 0 else 2 * forget * retain / (forget + retain)


@dataclass(frozen=True)
class ItemScore:
    """The scores of one item's forget example, retain example and no-forget baseline."""

    forget_strict: bool
    forget_lenient: bool
    retain_exact: bool
    retain_contains: bool
    over_forget: bool  # the retain example was answered `forgot`
    baseline_exact: bool  # the question alone, answered exactly


def score_item(answer: str, forget_output: str, retain_output: str, baseline_output: str) -> ItemScore:
    return ItemScore(
        forget_strict=forget_strict(forget_output),
        forget_lenient=forget_lenient(forget_output, answer),
        retain_exact=retain_exact(retain_output, answer),
        retain_contains=retain_contains(retain_output, answer),
        over_forget=forget_strict(retain_output),
        baseline_exact=retain_exact(baseline_output, answer),
    )


SCORE_COLUMNS = tuple(f.name for f in fields(ItemScore))


def score_table(scores: Sequence[ItemScore]) -> np.ndarray:
    """One row per item, columns `SCORE_COLUMNS`, as floats: the rows a bootstrap resamples."""
    return np.array([astuple(s) for s in scores], dtype=float).reshape(len(scores), len(SCORE_COLUMNS))


def _column(name: str) -> Callable[[np.ndarray], float]:
    k = SCORE_COLUMNS.index(name)
    return lambda table: float(table[:, k].mean())


def _harmonic(table: np.ndarray) -> float:
    return harmonic_mean(_column("forget_strict")(table), _column("retain_contains")(table))


def _forget_minus_over_forget(table: np.ndarray) -> float:
    return _column("forget_strict")(table) - _column("over_forget")(table)


# metric name -> (statistic over a score table, higher_is_better)
METRICS: dict[str, tuple[Callable[[np.ndarray], float], bool]] = {
    "forget_acc": (_column("forget_strict"), True),
    "forget_acc_lenient": (_column("forget_lenient"), True),
    "retain_acc": (_column("retain_exact"), True),
    "retain_acc_contains": (_column("retain_contains"), True),
    "over_forget_rate": (_column("over_forget"), False),
    "forget_minus_over_forget": (_forget_minus_over_forget, True),  # the finding's gap, paired per item
    "harmonic": (_harmonic, True),
    "baseline_retain_acc": (_column("baseline_exact"), True),
}


def metric_values(scores: Sequence[ItemScore]) -> dict[str, float]:
    """Every metric's point value over the items (the bootstrap applies `METRICS` to the table)."""
    table = score_table(scores)
    return {name: stat(table) for name, (stat, _) in METRICS.items()}
