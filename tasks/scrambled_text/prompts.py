"""Prompts of the paper's two tasks and the parsing of answers.

ScrRec: "Scrambled sentence: ...\nRecovered sentence:" (zero-shot with one instruction line,
or three demonstrations). ScrQA: the RealtimeQA evidence prompt, the DREAM dialogue prompt
and the AQuA-RAT chain-of-thought prompt, with the option letter read from the next token
or parsed from a generation.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from harness import UsageError
from tasks.scrambled_text.scramble import scramble

LETTERS = "ABCDE"

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
    return (
        f"Question: {question}\nChoices: {choices_text(choices)}\nEvidence: {evidence}\n"
        f"Answer: Based on the evidence, among {letters_span(len(choices))}, the answer is"
    )


def dialogue_prompt(question: str, choices: Sequence[str], dialogue: str) -> str:
    """DREAM: the dialogue is the scrambled context."""
    return (
        f"Dialogue:\n{dialogue}\nQuestion: {question}\nChoices: {choices_text(choices)}\n"
        f"Answer: Based on the dialogue, among {letters_span(len(choices))}, the answer is"
    )


# Four chain-of-thought demonstrations written for this project (the authors wrote four of their own).
AQUA_DEMOS = (
    (
        "A shop sells pens at 3 dollars each. How much do 7 pens cost?",
        ["18", "21", "24", "27", "30"],
        "Each pen costs 3 dollars, so 7 pens cost 7 * 3 = 21 dollars. The answer is (B).",
    ),
    (
        "A train travels 240 km in 4 hours. What is its average speed in km/h?",
        ["40", "50", "60", "70", "80"],
        "Average speed is distance divided by time: 240 / 4 = 60 km/h. The answer is (C).",
    ),
    (
        "If 2x + 5 = 17, what is x?",
        ["4", "5", "6", "7", "8"],
        "Subtract 5 from both sides: 2x = 12. Divide by 2: x = 6. The answer is (C).",
    ),
    (
        "The average of four numbers is 10. Three of them are 8, 9 and 12. What is the fourth?",
        ["9", "10", "11", "12", "13"],
        "The four numbers add up to 4 * 10 = 40. The three known ones add up to 29, so the fourth is 40 - 29 = 11. The answer is (C).",
    ),
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


def option_tokens(tokenizer: Any, n: int, bare: bool = False) -> tuple[list[int], str]:
    """Token ids of ' A', ' B', ... (bare 'A', 'B', ... after AQuA's '(') and a suffix for the prompt.

    A tokenizer that splits ' A' into a space and a letter is scored on the bare letter
    after a prompt ending in a space (suffix ' '); the letters must be distinct single tokens.
    """
    for prefix, suffix in [("", "")] if bare else [(" ", ""), ("", " ")]:
        enc = [tokenizer(prefix + LETTERS[k], add_special_tokens=False)["input_ids"] for k in range(n)]
        ids = [e[0] for e in enc]
        if all(len(e) == 1 for e in enc) and len(set(ids)) == n:
            return ids, suffix
    raise UsageError("the tokenizer has no distinct single-token option letters; use --task-arg qa_scoring=generate")
