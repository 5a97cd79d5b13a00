"""Does the paper's finding hold on this model? The verdict rule, and the matrix in findings.json.

A task declares its finding as data (`harness.Finding`: an `effect` metric key, the
`control` it must beat — a metric key or a number —, a one-line `claim` and the paper's
own verdict); every results file carries it as `task.finding`. The verdict is computed
here from the numbers in the leaderboard, never typed by hand.

The rule (`verdict`), with the direction taken from the effect's `higher_is_better`:

- **holds**: the effect's 95% interval lies wholly on the better side of the control,
  strictly. Against a number c (chance, or 0 for a difference): `ci_low > c` when higher
  is better, `ci_high < c` when lower is better. Against a control *metric*: the effect's
  near end must clear the control interval's far end — `effect.ci_low > control.ci_high`
  (higher is better), `effect.ci_high < control.ci_low` (lower is better). We compare
  interval with interval, not with the control's point value, because the two metrics are
  bootstrapped separately: the results file has no interval of their difference, and a
  control measured with noise could otherwise let an effect "beat" it by luck. Two 95%
  intervals that do not overlap is a conservative test (for independent estimates it
  means p < 0.01), so a "holds" never rests on the control's noise; the price is that a
  small effect just beyond the control's point value reads "does not hold".
  An effect whose direction is unknown (`higher_is_better` null) holds when its interval
  lies wholly on either side of the control: the claim is then "differs from".
- **does not hold**: the interval reaches the control; an interval that only *touches* it
  (an end equal to the control's number or far end) includes it, so does not hold.
- **not run**: the task has no result for that model.
- **not declared**: the result's task declares no finding (results written before
  findings existed, or a task without one).
- **missing metric**: the finding names an effect or control metric the result lacks
  (not measured, or dropped because it was not finite).

`findings.json` (written by `harness leaderboard build` beside index.json) holds the same
matrix the page shows at its top:

    {
      "leaderboard_version": 1,
      "models": ["model spec", ...],          # every model with a result, sorted: the columns
      "tasks": [                               # one per task, sorted by name: the rows
        {
          "task": "weekday_circle",
          "finding": {"effect": "probe_r2", "control": "probe_r2_scrambled_order" | 0.0,
                      "claim": "...", "paper_verdict": "..."} | null,
          "paper_verdict": "..." | null,       # the reference column (the paper, on its own models)
          "cells": [                           # one per entry of "models", in that order
            {
              "model": "model spec",
              "verdict": "holds" | "does not hold" | "not run" | "not declared" | "missing metric",
              "reason": "one line: the comparison made, or what is missing",
              "effect": {"value", "ci_low", "ci_high", "n", "higher_is_better"} | null,
              "control": {"metric": key, "value", "ci_low", "ci_high"} | {"value": number} | null,
              "board": {"task_version", "config_hash"} | null,   # where the row was read
              "row": {"dtype", "quantization", "seed"} | null
            }
          ]
        }
      ]
    }

When a model has rows on several boards of a task (other versions, other configs, dtypes
or seeds), the cell reads the first: boards newest version first then most rows, rows in
ranking order — the board and row it used are named in the cell, so every verdict can be
traced to the numbers behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError

from harness.results import Metric
from harness.results.validate import is_number

if TYPE_CHECKING:
    from harness.report.boards import Board, Row, TaskBoards

HOLDS, FAILS, NOT_RUN, NOT_DECLARED, MISSING = "holds", "does not hold", "not run", "not declared", "missing metric"
VERDICTS = (HOLDS, FAILS, NOT_RUN, NOT_DECLARED, MISSING)
FINDINGS_VERSION = 1
MAX_TEXT = 500  # a claim or verdict longer than this is not a line of text


class FindingSpec(BaseModel):
    """A task's finding as a results file records it (`task.finding`), checked as untrusted input."""

    model_config = ConfigDict(extra="ignore")
    effect: str = Field(min_length=1, max_length=200)
    control: Union[StrictInt, StrictFloat, StrictStr]  # strict: a metric named "0.5" stays a name
    claim: str = Field(default="", max_length=MAX_TEXT)
    paper_verdict: str = Field(default="", max_length=MAX_TEXT)

    def control_is_metric(self) -> bool:
        return isinstance(self.control, str)


def parse_finding(raw: Any) -> Optional[FindingSpec]:
    """The finding in `raw` (a results file's `task.finding`), or None when absent or unusable.

    A control number that is not finite or beyond ±1e12 (`harness.results.validate.MAX_ABS_VALUE`), or an empty or overlong control
    name, makes the finding unusable: no verdict could be computed from it.
    """
    if raw is None:
        return None
    try:
        finding = FindingSpec.model_validate(raw)
    except (ValidationError, TypeError, ValueError):
        return None
    if isinstance(finding.control, str):
        return finding if 0 < len(finding.control) <= 200 else None
    return finding if is_number(finding.control) else None


@dataclass(frozen=True)
class Verdict:
    """One cell of the matrix: the verdict, the numbers it compared and why, in one line."""

    verdict: str
    reason: str
    effect: Optional[Metric] = None
    control: Union[Metric, float, None] = None

    def as_json(self) -> dict[str, Any]:
        control: Optional[dict[str, Any]] = None
        if isinstance(self.control, Metric):
            control = {"value": self.control.value, "ci_low": self.control.ci_low, "ci_high": self.control.ci_high}
        elif self.control is not None:
            control = {"value": self.control}
        return {"verdict": self.verdict, "reason": self.reason,
                "effect": self.effect.model_dump(mode="json") if self.effect else None, "control": control}


def verdict(finding: Optional[FindingSpec], metrics: Optional[dict[str, Metric]]) -> Verdict:
    """The verdict of `finding` on one model's `metrics` (None: the model has no result for the task)."""
    if metrics is None:
        return Verdict(NOT_RUN, "no result for this model")
    if finding is None:
        return Verdict(NOT_DECLARED, "the result names no finding")
    effect = metrics.get(finding.effect)
    if effect is None:
        return Verdict(MISSING, f"no metric {finding.effect}")
    if finding.control_is_metric():
        control = metrics.get(finding.control)
        if control is None:
            return Verdict(MISSING, f"no control metric {finding.control}", effect=effect)
        low, high = control.ci_low, control.ci_high
        below, above = f"{finding.control}'s lower end {low:.4g}", f"{finding.control}'s upper end {high:.4g}"
    else:
        control = float(finding.control)
        low = high = control
        below = above = f"{control:g}"
    if effect.higher_is_better is True:
        held = effect.ci_low > high
        reason = f"lower end {effect.ci_low:.4g} {'above' if held else 'not above'} {above}"
    elif effect.higher_is_better is False:
        held = effect.ci_high < low
        reason = f"upper end {effect.ci_high:.4g} {'below' if held else 'not below'} {below}"
    else:
        held = effect.ci_low > high or effect.ci_high < low
        reason = (f"interval [{effect.ci_low:.4g}, {effect.ci_high:.4g}] {'clear of' if held else 'reaches'} "
                  f"{finding.control if finding.control_is_metric() else 'the control'} [{low:.4g}, {high:.4g}]")
    return Verdict(HOLDS if held else FAILS, reason, effect=effect, control=control)


def pick_rows(info: "TaskBoards") -> dict[str, tuple["Board", "Row"]]:
    """For each model, the board and row its cell reads: its newest run on a board that declares a finding.

    A model may sit on several boards (older configs or versions, runs from before findings were
    recorded); the verdict is about the newest evidence that can be judged, and only a model with
    no such run falls back to its newest run anywhere (which reads "not declared").
    """
    picked: dict[str, tuple[Board, Row]] = {}
    for board in info.boards:
        declared = board_finding(board) is not None
        for row in board.rows:
            best = picked.get(row.model)
            if best is None or (declared, row.when()) > (board_finding(best[0]) is not None, best[1].when()):
                picked[row.model] = (board, row)
    return picked


def board_finding(board: "Board") -> Optional[FindingSpec]:
    return parse_finding(board.finding)


def matrix(tasks: list["TaskBoards"]) -> dict[str, Any]:
    """The content of findings.json: one entry per task, one cell per model with a result anywhere."""
    models = sorted({row.model for info in tasks for board in info.boards for row in board.rows})
    entries = []
    for info in sorted(tasks, key=lambda t: t.task):
        picked = pick_rows(info)
        declared = next((f for f in (board_finding(b) for b in info.boards) if f is not None), None)
        cells = []
        for model in models:
            board, row = picked.get(model, (None, None))
            finding = board_finding(board) if board is not None else None
            cell = {"model": model, **verdict(finding, row.metrics if row is not None else None).as_json(),
                    "board": {"task_version": board.task_version, "config_hash": board.config_hash} if board else None,
                    "row": {"dtype": row.dtype, "quantization": row.quantization, "seed": row.seed} if row else None}
            if isinstance(cell["control"], dict) and finding is not None and finding.control_is_metric():
                cell["control"]["metric"] = finding.control
            cells.append(cell)
        entries.append({"task": info.task, "finding": declared.model_dump() if declared else None,
                        "paper_verdict": (declared.paper_verdict or None) if declared else None, "cells": cells})
    return {"leaderboard_version": FINDINGS_VERSION, "models": models, "tasks": entries}
