"""Token helpers every task needs: where a piece of text landed in the tokens, which token starts a text.

Tasks place probes and edits on "the last token of the weekday name" or "the units digit";
the only reliable way to find that token in every tokenizer is the character offsets the
fast tokenizers return, so the lookups live here once.
"""

from __future__ import annotations

from typing import Any, Sequence

from harness.errors import UsageError


def encode_with_offsets(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of `text` (special tokens included, as the model sees it) and each token's character span."""
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def token_at_char(offsets: Sequence[tuple[int, int]], char: int) -> int | None:
    """Index of the non-empty token whose span covers character `char`; None when no token does."""
    for j, (start, end) in enumerate(offsets):
        if start <= char < end:
            return j
    return None


def last_token_of_span(tokenizer: Any, text: str, start: int, end: int) -> int:
    """Index (special tokens included) of the last token overlapping characters [start, end) of `text`.

    The last token is the one that has read the whole span, which is where a probe or an
    edit of "the word" belongs when the word splits into several tokens.
    """
    _, offsets = encode_with_offsets(tokenizer, text)
    hits = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
    if not hits:
        raise UsageError(
            f"cannot locate {text[start:end]!r} in the tokenised prompt; the tokenizer gives no character offsets (use a fast tokenizer)"
        )
    return hits[-1]


def bos_or_eos(tokenizer: Any) -> int:
    """The token a text is scored or generated after: BOS, or EOS for tokenizers without one (GPT-2 style)."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise UsageError("the tokenizer has neither a BOS nor an EOS token; this task needs one to start a text")
    return int(token)


def is_digit_token(tokenizer: Any, token_id: int, digit: str) -> bool:
    """The token writes exactly this digit, optionally after a space: never a merged '40' or '=4'."""
    return tokenizer.decode([token_id]).strip() == digit


def continuation_tokens(tokenizer: Any, context: str, continuation: str) -> list[int]:
    """The tokens `continuation` becomes after `context`, as the model would read them together.

    The pair is tokenised jointly and the context's own tokens are cut off, so merges at the
    boundary come out as in running text (lm-evaluation-harness does the same); when the joint
    tokens do not start with the context's, the continuation is tokenised on its own.
    """
    base = tokenizer(context, add_special_tokens=True)["input_ids"]
    full = tokenizer(context + continuation, add_special_tokens=True)["input_ids"]
    if full[: len(base)] == base and len(full) > len(base):
        return list(full[len(base) :])
    return list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
