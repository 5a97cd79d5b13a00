"""Prompts and answer digits: where each digit of a product is a token of its own, and the context before it.

A merged token such as `40` or `=4` is never scored as a digit: every check of teacher forcing
lives here, tested on every tokenizer the tests build.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Sequence

from harness import UsageError, tokens

log = logging.getLogger(__name__)

MODES = ("teacher_forced", "spaced", "generate")


# Prompts.
def spaced_digits(digits: str) -> str:
    return " ".join(digits)


def render_prompt(template: str, instruction: str, a: int, b: int, spaced: bool) -> str:
    if spaced:
        template = re.sub(r"\s*([*×=+])\s*(?![^{]*})", r" \1 ", template).strip()
        return instruction + template.format(a=spaced_digits(str(a)), b=spaced_digits(str(b)))
    return instruction + template.format(a=a, b=b)


def render_answer(digits: str, spaced: bool) -> str:
    """The continuation that writes `digits`: '408' or ' 4 0 8'."""
    return "".join(" " + d for d in digits) if spaced else digits


def digit_offset(k: int, spaced: bool) -> int:
    """Character offset of the k-th answer digit inside render_answer."""
    return 2 * k + 1 if spaced else k


# Digit tokenisation.
class DigitTokenError(Exception):
    """The tokenizer does not give an answer digit a token of its own in this mode."""


_encode = tokens.encode_with_offsets


def _token_at(offsets: Sequence[tuple[int, int]], char: int) -> int:
    """Index of the (non-empty) token whose span covers character `char`."""
    j = tokens.token_at_char(offsets, char)
    if j is None:
        raise DigitTokenError(f"no token covers character {char}")
    return j


def digit_token_ids(tokenizer: Any, spaced: bool) -> list[int] | None:
    """The token of each digit 0..9 as it appears in an answer, or None if some digit is not its own token.

    Checks '0123456789' and '=9876543210' (spaced: '0 1 ... 9' and '= 9 8 ... 0'): each
    digit must be a token of its own, the same token in both strings.
    """
    ids: dict[str, int] = {}
    for lead, digits in (("", "0123456789"), ("=", "9876543210")):
        text = lead + render_answer(digits, spaced)
        token_ids, offsets = _encode(tokenizer, text)
        for k, d in enumerate(digits):
            try:
                j = _token_at(offsets, len(lead) + digit_offset(k, spaced))
            except DigitTokenError:
                return None
            if not tokens.is_digit_token(tokenizer, token_ids[j], d) or ids.setdefault(d, token_ids[j]) != token_ids[j]:
                return None
    return [ids[str(d)] for d in range(10)]


def forced_context(tokenizer: Any, prompt: str, digits: str, k: int, spaced: bool, digit_ids: Sequence[int]) -> str:
    """The string after which the model predicts digit k of `digits`, with every check of teacher forcing.

    prompt + render_answer(digits) is tokenised jointly; the token covering digit k must be
    the digit token of digits[k]; the context is the text before that token (before its
    space if the token carries one), and tokenising the context alone must give exactly
    the joint tokens before it, so the model sees what it would have produced itself.
    """
    text = prompt + render_answer(digits, spaced)
    token_ids, offsets = _encode(tokenizer, text)
    char = len(prompt) + digit_offset(k, spaced)
    j = _token_at(offsets, char)
    if token_ids[j] != digit_ids[int(digits[k])]:
        raise DigitTokenError(f"digit {digits[k]} of {digits} is inside token {tokenizer.decode([token_ids[j]])!r}")
    carries_space = tokenizer.decode([token_ids[j]]).startswith(" ")
    context = text[: char - 1] if (spaced and carries_space) else text[:char]
    if _encode(tokenizer, context)[0] != token_ids[:j]:
        raise DigitTokenError(f"{context!r} tokenises differently alone than before digit {k} of {digits}")
    return context


def resolve_mode(
    tokenizer: Any, requested: str, prompts: Sequence[str] = (), products: Sequence[str] = ()
) -> tuple[str, list[int] | None]:
    """(mode, digit token ids): auto -> teacher_forced when digits are split, else generate.

    Beyond the two probe strings, the first and last digit of every (prompt, product) given
    must be its own token in context (a tokenizer may split '0123456789' yet merge '12'):
    auto then falls back to generate, an explicit mode is refused.
    """
    if requested == "generate":
        return "generate", None
    spaced = requested == "spaced"
    ids = digit_token_ids(tokenizer, spaced)
    problem = None
    if ids is None:
        example = tokenizer.convert_ids_to_tokens(_encode(tokenizer, "=" + render_answer("9876543210", spaced))[0])
        problem = f"'=9876543210' tokenises as {example}"
    else:
        try:
            for prompt, P in zip(prompts, products):
                forced_context(tokenizer, prompt, P, 0, spaced, ids)
                forced_context(tokenizer, prompt, P, len(P) - 1, spaced, ids)
        except DigitTokenError as e:
            problem = str(e)
    if problem is None:
        return ("teacher_forced" if requested == "auto" else requested), ids
    if requested == "auto":
        log.info("digit_scoring=auto resolves to generate: %s", problem)
        return "generate", None
    fix = "spaced or generate" if requested == "teacher_forced" else "generate"
    raise UsageError(
        f"digit_scoring={requested}: this tokenizer does not give each answer digit its own token "
        f"({problem}); use --task-arg digit_scoring={fix}"
    )


def parse_digits(text: str, spaced: bool) -> str:
    """The first maximal run of digits in a generation ('' if none); spaced: digits separated by single spaces."""
    match = re.search(r"\d(?: \d)*" if spaced else r"\d+", text)
    return match.group(0).replace(" ", "") if match else ""


def check_prompts_end_in_equals(tokenizer: Any, prompts: Sequence[str]) -> None:
    """The answer is predicted right after '=': the last token of each prompt must be '=' alone."""
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        if not ids or tokenizer.decode([ids[-1]]).strip() != "=":
            raise UsageError(
                f"the prompt {prompt!r} does not end in a '=' token (it ends in "
                f"{tokenizer.decode(ids[-1:])!r}): change --task-arg template so that it ends with '='"
            )
