"""Does the paper's finding hold on this model? The verdict rule, and the matrix in findings.json.

A task declares its finding as data (`harness.Finding`): up to three *facets*
(`harness.Facet`), each an `effect` metric key with the `control` it must beat (a metric
key or a number), of one of three kinds —

- **behaviour**: the model does the task better than chance;
- **representation**: the probe, SAE or neurons carry the structure, beyond a control that
  had the same chance (shuffled labels, a scrambled order, a random SAE);
- **causal**: editing that structure moves the output as the paper says, beyond the same
  edit with a control direction —

with a one-line `claim` and the paper's own verdict. Every results file carries it as
`task.finding`. The verdicts are computed here from the numbers in the leaderboard, never
typed by hand. A finding written before facets existed (one `effect` and `control`) is read
as one facet of kind "finding".

One facet's rule (`facet_verdict`), with the direction taken from the effect's `higher_is_better`:

- **holds**: the effect's 95% interval lies wholly on the better side of the control,
  strictly. Against a number c (chance, or 0 for a difference): `ci_low > c` when higher
  is better, `ci_high < c` when lower is better. Where effect and control are measured on
  the same units, tasks publish their per-unit difference (`probe_r2_minus_scrambled_order`,
  a cluster bootstrap over the shared units) and the facet reads that interval against 0:
  the right test, and a more powerful one. Only where no pairing exists does a facet
  compare two metrics: the effect's near end must clear the control interval's far end —
  `effect.ci_low > control.ci_high` (higher is better), `effect.ci_high < control.ci_low`
  (lower is better). Two separately bootstrapped 95% intervals that do not overlap is a
  conservative test (for independent estimates it means p < 0.01), so a "holds" never rests
  on the control's noise. An effect whose direction is unknown (`higher_is_better` null)
  holds when its interval lies wholly on either side of the control ("differs from").
- **does not hold**: the interval reaches the control; an interval that only *touches* it
  (an end equal to the control's number or far end) includes it, so does not hold.
- **too few units**: the effect (or its control metric) rests on fewer than `MIN_UNITS`
  independent units (`n`): an interval from a handful of problems is not evidence either way.
  A metric the result lists as `unmeasured` (no unit qualified: no problem the model answers,
  so nothing to intervene on) has n = 0 and reads the same.
- **missing metric**: the facet names an effect or control metric the result lacks
  (not measured, or dropped because it was not finite).

The cell's headline (`verdict`) is **holds** only when every facet holds. Otherwise it
names the kinds whose facets all hold — "representation only", "behaviour and causal only"
— or, when none does, reads **missing metric** if a facet lacks its numbers, **too few
units** if a facet had too few, and **does not hold** otherwise. Two more headlines need no
facet: **not run** (no result for that model) and **not declared** (the result's task
declares no finding).

`findings.json` (written by `harness leaderboard build` beside index.json) holds the same
matrix the page shows at its top:

    {
      "leaderboard_version": 1,
      "models": ["model spec", ...],          # every model with a result, sorted: the columns
      "tasks": [                               # one per task, sorted by name: the rows
        {
          "task": "weekday_circle",
          "finding": {"effect", "control", "claim", "paper_verdict",
                      "facets": [{"kind", "effect", "control", "claim"}, ...]} | null,
          "paper_verdict": "..." | null,       # the reference column (the paper, on its own models)
          "cells": [                           # one per entry of "models", in that order
            {
              "model": "model spec",
              "verdict": "holds" | "does not hold" | "<kinds> only" | "too few units" | "not run"
                         | "not declared" | "missing metric",
              "reason": "one line: each facet's comparison, or what is missing",
              "effect": {"value", "ci_low", "ci_high", "n", "higher_is_better"} | null,   # the first facet's
              "control": {"metric": key, "value", "ci_low", "ci_high"} | {"value": number} | null,
              "facets": [{"kind", "effect_metric", "verdict", "reason", "effect", "control"}, ...],
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
from harness.results.records import FACET_KINDS
from harness.results.validate import is_number

if TYPE_CHECKING:
    from harness.report.boards import Board, Row, TaskBoards

HOLDS, FAILS, NOT_RUN, NOT_DECLARED, MISSING = "holds", "does not hold", "not run", "not declared", "missing metric"
TOO_FEW = "too few units"
VERDICTS = (HOLDS, FAILS, NOT_RUN, NOT_DECLARED, MISSING, TOO_FEW)  # and "<kinds> only" (`partial`)
LEGACY_KIND = "finding"  # the one facet of a finding written before facets existed
MIN_UNITS = 20  # fewer independent units than this behind an effect or its control: "too few units"
MAX_FACETS = 6
FINDINGS_VERSION = 1
MAX_TEXT = 500  # a claim or verdict longer than this is not a line of text

Control = Union[StrictInt, StrictFloat, StrictStr]  # strict: a metric named "0.5" stays a name


class FacetSpec(BaseModel):
    """One facet as a results file records it, checked as untrusted input."""

    model_config = ConfigDict(extra="ignore")
    kind: str = Field(pattern="^(" + "|".join((*FACET_KINDS, LEGACY_KIND)) + ")$")
    effect: str = Field(min_length=1, max_length=200)
    control: Control
    claim: str = Field(default="", max_length=MAX_TEXT)

    def control_is_metric(self) -> bool:
        return isinstance(self.control, str)


class FindingSpec(BaseModel):
    """A task's finding as a results file records it (`task.finding`), checked as untrusted input."""

    model_config = ConfigDict(extra="ignore")
    effect: str = Field(default="", max_length=200)
    control: Optional[Control] = None  # required when there are no facets
    claim: str = Field(default="", max_length=MAX_TEXT)
    paper_verdict: str = Field(default="", max_length=MAX_TEXT)
    facets: list[FacetSpec] = Field(default_factory=list, max_length=MAX_FACETS)

    def control_is_metric(self) -> bool:
        return isinstance(self.control, str)

    def facet_list(self) -> list[FacetSpec]:
        """The facets, or the one facet a finding without them states."""
        if self.facets:
            return list(self.facets)
        assert self.control is not None  # parse_finding refuses a finding without facets or control
        return [FacetSpec(kind=LEGACY_KIND, effect=self.effect, control=self.control, claim=self.claim)]


def _usable_control(control: Any) -> bool:
    return 0 < len(control) <= 200 if isinstance(control, str) else is_number(control)


def parse_finding(raw: Any) -> Optional[FindingSpec]:
    """The finding in `raw` (a results file's `task.finding`), or None when absent or unusable.

    A control number that is not finite or beyond ±1e12 (`harness.results.validate.MAX_ABS_VALUE`),
    an empty or overlong control name, or no effect at all (neither facets nor an effect)
    makes the finding unusable: no verdict could be computed from it.
    """
    if raw is None:
        return None
    try:
        finding = FindingSpec.model_validate(raw)
    except (ValidationError, TypeError, ValueError):
        return None
    if not finding.facets and (not finding.effect or finding.control is None):
        return None
    if not all(_usable_control(f.control) for f in finding.facet_list()):
        return None
    if finding.facets and not finding.effect:  # the headline effect older readers (charts) show: the first facet's
        finding = finding.model_copy(update={"effect": finding.facets[0].effect, "control": finding.facets[0].control})
    return finding


@dataclass(frozen=True)
class FacetVerdict:
    """One facet on one model: its verdict, the numbers it compared and why."""

    kind: str
    effect_metric: str
    verdict: str
    reason: str
    effect: Optional[Metric] = None
    control: Union[Metric, float, None] = None
    control_metric: Optional[str] = None

    def control_json(self) -> Optional[dict[str, Any]]:
        if isinstance(self.control, Metric):
            return {
                "metric": self.control_metric,
                "value": self.control.value,
                "ci_low": self.control.ci_low,
                "ci_high": self.control.ci_high,
                "n": self.control.n,
            }
        return None if self.control is None else {"value": self.control}

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "effect_metric": self.effect_metric,
            "verdict": self.verdict,
            "reason": self.reason,
            "effect": self.effect.model_dump(mode="json") if self.effect else None,
            "control": self.control_json(),
        }


@dataclass(frozen=True)
class Verdict:
    """One cell of the matrix: the headline verdict, its facets, and why, in one line."""

    verdict: str
    reason: str
    facets: tuple[FacetVerdict, ...] = ()

    @property
    def effect(self) -> Optional[Metric]:
        return self.facets[0].effect if self.facets else None

    @property
    def control(self) -> Union[Metric, float, None]:
        return self.facets[0].control if self.facets else None

    def as_json(self) -> dict[str, Any]:
        first = self.facets[0] if self.facets else None
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "effect": first.effect.model_dump(mode="json") if first and first.effect else None,
            "control": first.control_json() if first else None,
            "facets": [f.as_json() for f in self.facets],
        }


def facet_verdict(facet: FacetSpec, metrics: dict[str, Metric], unmeasured: Optional[dict[str, str]] = None) -> FacetVerdict:
    """One facet's verdict on one model's `metrics` (the rule in the module docstring).

    unmeasured: metrics the run could not measure for want of any unit (`Results.unmeasured`);
    a facet on one reads "too few units" with n = 0, not "missing metric".
    """
    kind, name = facet.kind, facet.effect
    unmeasured = unmeasured or {}
    effect = metrics.get(name)
    if effect is None:
        if name in unmeasured:
            return FacetVerdict(kind, name, TOO_FEW, f"n = 0 units: {unmeasured[name]}")
        return FacetVerdict(kind, name, MISSING, f"no metric {name}")
    control_metric = facet.control if isinstance(facet.control, str) else None
    if control_metric is not None:
        control = metrics.get(control_metric)
        if control is None:
            if control_metric in unmeasured:
                return FacetVerdict(
                    kind, name, TOO_FEW, f"n = 0 units for {control_metric}: {unmeasured[control_metric]}", effect=effect
                )
            return FacetVerdict(kind, name, MISSING, f"no control metric {control_metric}", effect=effect)
        low, high = control.ci_low, control.ci_high
        below, above = f"{control_metric}'s lower end {low:.4g}", f"{control_metric}'s upper end {high:.4g}"
        n = min(effect.n, control.n)
    else:
        control = float(facet.control)
        low = high = control
        below = above = f"{control:g}"
        n = effect.n
    made = lambda verdict, reason: FacetVerdict(kind, name, verdict, reason, effect, control, control_metric)  # noqa: E731
    if n < MIN_UNITS:
        return made(TOO_FEW, f"n = {n} units, fewer than {MIN_UNITS}")
    if effect.higher_is_better is True:
        held = effect.ci_low > high
        reason = f"lower end {effect.ci_low:.4g} {'above' if held else 'not above'} {above}"
    elif effect.higher_is_better is False:
        held = effect.ci_high < low
        reason = f"upper end {effect.ci_high:.4g} {'below' if held else 'not below'} {below}"
    else:
        held = effect.ci_low > high or effect.ci_high < low
        reason = (
            f"interval [{effect.ci_low:.4g}, {effect.ci_high:.4g}] {'clear of' if held else 'reaches'} "
            f"{control_metric or 'the control'} [{low:.4g}, {high:.4g}]"
        )
    return made(HOLDS if held else FAILS, reason)


def partial(kinds: list[str]) -> str:
    """The headline when only some kinds hold: "representation only", "behaviour and causal only"."""
    return " and ".join(kinds) + " only"


def headline(facets: list[FacetVerdict]) -> str:
    """Holds when every facet holds; else the kinds that wholly hold, else why none does."""
    verdicts = [f.verdict for f in facets]
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    kinds = [
        k for k in FACET_KINDS if any(f.kind == k for f in facets) and all(f.verdict == HOLDS for f in facets if f.kind == k)
    ]
    if kinds:
        return partial(kinds)
    for reason in (MISSING, TOO_FEW):
        if reason in verdicts:
            return reason
    return FAILS


def verdict(
    finding: Optional[FindingSpec], metrics: Optional[dict[str, Metric]], unmeasured: Optional[dict[str, str]] = None
) -> Verdict:
    """The verdict of `finding` on one model's `metrics` (None: the model has no result for the task)."""
    if metrics is None:
        return Verdict(NOT_RUN, "no result for this model")
    if finding is None:
        return Verdict(NOT_DECLARED, "the result names no finding")
    facets = [facet_verdict(f, metrics, unmeasured) for f in finding.facet_list()]
    if len(facets) == 1:
        return Verdict(facets[0].verdict, facets[0].reason, tuple(facets))
    reason = "; ".join(f"{f.kind} ({f.effect_metric}): {f.verdict}, {f.reason}" for f in facets)
    return Verdict(headline(facets), reason, tuple(facets))


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
            cell = {
                "model": model,
                **verdict(
                    finding, row.metrics if row is not None else None, row.unmeasured if row is not None else None
                ).as_json(),
                "board": {"task_version": board.task_version, "config_hash": board.config_hash} if board else None,
                "row": {"dtype": row.dtype, "quantization": row.quantization, "seed": row.seed} if row else None,
            }
            cells.append(cell)
        entries.append(
            {
                "task": info.task,
                "finding": declared.model_dump() if declared else None,
                "paper_verdict": (declared.paper_verdict or None) if declared else None,
                "cells": cells,
            }
        )
    return {"leaderboard_version": FINDINGS_VERSION, "models": models, "tasks": entries}
