"""scrambled_text: Scrambled Bench (Cao et al., EMNLP 2023), as a package of one job per module.

- `scramble`: the scrambler, every scramble type of the paper, deterministic for a seed;
- `prompts`: the ScrRec and ScrQA prompts and the parsing of answers;
- `data`: the shipped sample and the DREAM, AQuA-RAT and RealtimeQA loaders;
- `reference`: the paper's numbers;
- `task`: the task itself, `ScrambledText`, which reads like the paper's method section.
"""

from tasks.scrambled_text.data import QAItem, load_hub, load_realtimeqa, load_sample
from tasks.scrambled_text.prompts import (
    AQUA_DEMOS,
    aqua_prompt,
    clean_recovery,
    dialogue_prompt,
    evidence_prompt,
    option_tokens,
    parse_letter,
    rec_demos,
    rec_prompt,
    rec_prompt_fewshot,
)
from tasks.scrambled_text.scramble import collapse_spaces, is_word, scramble, scramble_with_words, split_pieces
from tasks.scrambled_text.task import ScrambledConfig, ScrambledText, last_token_positions

__all__ = [
    "AQUA_DEMOS",
    "QAItem",
    "ScrambledConfig",
    "ScrambledText",
    "aqua_prompt",
    "clean_recovery",
    "collapse_spaces",
    "dialogue_prompt",
    "evidence_prompt",
    "is_word",
    "last_token_positions",
    "load_hub",
    "load_realtimeqa",
    "load_sample",
    "option_tokens",
    "parse_letter",
    "rec_demos",
    "rec_prompt",
    "rec_prompt_fewshot",
    "scramble",
    "scramble_with_words",
    "split_pieces",
]
