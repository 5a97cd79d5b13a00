"""multiplication_digits (Gambardella et al., ACL 2024), as a package of one job per module.

- `problems`: n-digit x m-digit problems per cell, deterministic for a seed;
- `digits`: prompts, answer digits and every check of teacher forcing on a tokenizer;
- `task`: the task itself, `MultiplicationDigits`: behaviour, the probe at '=', metrics, plots.
"""

from tasks.multiplication.digits import (
    DigitTokenError,
    check_prompts_end_in_equals,
    digit_token_ids,
    forced_context,
    parse_digits,
    render_answer,
    render_prompt,
    resolve_mode,
)
from tasks.multiplication.problems import Problem, make_problems, parse_cells
from tasks.multiplication.task import MultiplicationConfig, MultiplicationDigits

__all__ = [
    "DigitTokenError",
    "MultiplicationConfig",
    "MultiplicationDigits",
    "Problem",
    "check_prompts_end_in_equals",
    "digit_token_ids",
    "forced_context",
    "make_problems",
    "parse_cells",
    "parse_digits",
    "render_answer",
    "render_prompt",
    "resolve_mode",
]
