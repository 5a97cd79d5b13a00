"""The contract between the engine and a task: a `Task` class, its `Config` dataclass, its `TaskResult`.

A task reads like the method section of its paper: data -> prompts -> sites ->
probes/interventions -> metrics. It gets the shared machinery (scoring, collection,
interventions, randomness, plots) from the `RunContext` and returns a `TaskResult`.

A config is a dataclass whose fields are declared with `option(default, "what it does")`:
the description is what `harness list TASK` prints, and bounds given there (`ge`, `gt`,
`le`, `lt`, `choices`) are checked when the value is parsed, before any model loads.
Fields may be lists (`list[int]`, `list[str]`, `list[float]`), written on the command
line as `--task-arg cells=2x2,3x3`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Sequence

from harness.errors import UsageError
from harness.results import Curve, Metric, Reference
from harness.results.records import FACET_KINDS

if TYPE_CHECKING:  # the contract's types, without importing the engine (and torch) to read them
    from harness.api.context import RunContext
    from harness.engine.models import Model


@dataclass(frozen=True)
class Facet:
    """One part of a finding, an effect and the control it must beat.

    kind: "behaviour" (the model does the task better than chance), "representation" (the
        probe, SAE or neurons carry the structure beyond a control that had the same chance)
        or "causal" (editing that structure moves the output beyond the same edit with a
        control direction);
    effect: a metric key; control: a metric key, or a number (chance, or 0 for a paired
        difference). Where effect and control are measured on the same units, make the
        effect their per-unit difference (clustered, as `ctx.metric(unit=...)` does) and the
        control 0: the interval of a paired difference is the right test and a stronger one
        than two separately bootstrapped intervals.
    """

    kind: str
    effect: str
    control: str | float
    claim: str = ""

    def __post_init__(self) -> None:
        if self.kind not in FACET_KINDS:
            raise ValueError(f"Facet kind {self.kind!r}: use one of {', '.join(FACET_KINDS)}")


@dataclass(frozen=True)
class Finding:
    """The paper's finding as a test a leaderboard can run on any model's results.

    facets: the parts of the paper's claim (`Facet`: behaviour, representation, causal),
        each an effect with its control; the finding holds on a model only when every facet
        does, and otherwise the verdict names the parts that hold ("representation only");
    claim: one line saying what "holds" means, shown beside the verdict;
    paper_verdict: what the paper found on its own models ("holds on Llama 3 8B", ...).
    A finding of one part may instead give `effect` and `control` (the form before facets):
    it is read as that one facet. A facet holds on a model when its effect's 95% interval
    lies wholly on the better side of its control (the control's value when a number; its
    interval's far end when a metric), over at least `harness.report.findings.MIN_UNITS` units.
    """

    effect: str = ""
    control: str | float = 0.0
    claim: str = ""
    paper_verdict: str = ""
    facets: tuple[Facet, ...] = ()

    def __post_init__(self) -> None:
        if not self.facets and not self.effect:
            raise ValueError("a Finding needs facets=(Facet(...), ...) or an effect and its control")
        if self.facets and not self.effect:  # the headline effect older readers show: the first facet's
            object.__setattr__(self, "effect", self.facets[0].effect)
            object.__setattr__(self, "control", self.facets[0].control)


def check_template(template: str, fields: Sequence[str], option_name: str = "template") -> None:
    """A prompt template uses exactly `fields` as {placeholders} and no stray brace; else a ValueError naming it."""
    import string

    try:
        used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise ValueError(f"{option_name}={template!r}: {e} (write a literal brace as {{{{ or }}}})") from None
    unknown, missing = used - set(fields), set(fields) - used
    if unknown or missing:
        parts = ([f"unknown field(s) {', '.join('{' + f + '}' for f in sorted(unknown))}"] if unknown else []) + (
            [f"missing {', '.join('{' + f + '}' for f in sorted(missing))}"] if missing else []
        )
        raise ValueError(
            f"{option_name}={template!r}: {'; '.join(parts)}; it takes exactly {', '.join('{' + f + '}' for f in fields)}"
        )


def option(
    default: Any, help: str, *, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None
) -> Any:
    """A config field with a description and optional bounds, for a task's `Config` dataclass.

        @dataclass
        class MyConfig:
            n_problems: int = option(200, "problems per cell", ge=1)
            layers: list[int] = option([0, 4, 8], "layers to probe")

    A list default is copied for every config, so configs never share one list.
    """
    metadata = {"help": help, "bounds": {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class NoConfig:
    """For tasks without options."""


@dataclass
class TaskResult:
    """What a task's `run` returns.

    metrics: {key: Metric}, each with value, 95% interval and n (make them with `ctx.metric`);
        keys are stable, leaderboards read them.
    reference: the paper's numbers beside ours (`Reference`), or None.
    curves: per-layer numbers as `Curve`s (`Curve.each({metric key: [value per layer]}, layers)`):
        the one form the leaderboard's charts and the comparisons across models read.
    details: anything JSON-serialisable that is not a headline number: counts, the resolved
        settings, per-item tables (nested dicts and lists of numbers and strings).
    notes: one sentence per departure from the paper's method or caveat a reader must see.
    unmeasured: {key: why} for metrics this run could not measure because no unit qualified
        (no problem the model answers, so nothing to intervene on): a finding's facet on one
        reads "too few units" (n = 0) instead of "missing metric".
    """

    metrics: dict[str, Metric]
    reference: Reference | None = None
    unmeasured: dict[str, str] = field(default_factory=dict)
    curves: list[Curve] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ModelShape:
    """What a run's cost depends on, read from a model's config alone (`harness run --dry-run`)."""

    n_layers: int
    d_model: int
    d_mlp: int
    vocab: int
    n_params: int = 0  # weights, when the config says (0: unknown)


@dataclass
class Workload:
    """A task's size on one model before it runs: what `harness run --dry-run` prints.

    forward_tokens: prompt tokens through the model (scores, collects, patched runs, training
        steps' forward passes); generated_tokens: tokens decoded one at a time; activation_bytes:
        the activations (float32 or float64 as the task keeps them) held at once in host memory;
        notes: what the estimate leaves out. Counts are estimates from the config (prompt lengths
        are typical, not tokenised), right to a factor of about two.
    """

    forward_tokens: int
    generated_tokens: int = 0
    activation_bytes: int = 0
    notes: str = ""


class Task:
    """A reproduced finding. Subclass, set the class attributes, implement `run`, decorate with `@register_task`.

    Class attributes (the leaderboard shows them, from the results file):
      name: the `--task` name; version: bump when results stop being comparable;
      paper: the citation; description: one or two sentences on what is measured;
      Config: the options dataclass (fields made with `option`); headline_metrics: the
      metric keys a leaderboard shows as columns (None: the first few);
      metric_descriptions: {key or key pattern: one line}, printed by `harness list TASK`;
      finding: the `Finding` a leaderboard tests on every model (effect vs control);
      presets: named option sets, {"quick": {...}} sized so every task finishes on a laptop CPU
      while its numbers still mean something (a preset is a config: its own config hash);
      comparative: the finding compares models, so a run over several models also writes
      one comparison file (see `harness.results.compare`).
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1.0"  # bump when results stop being comparable
    paper: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type] = NoConfig
    headline_metrics: ClassVar[list[str] | None] = None  # leaderboard columns; None: the first few metrics
    metric_descriptions: ClassVar[dict[str, str]] = {}
    comparative: ClassVar[bool] = False  # True: an invocation with several --model values also writes a comparison
    finding: ClassVar[Finding | None] = None  # the headline effect and the control it must beat (leaderboard verdicts)
    presets: ClassVar[dict[str, dict[str, Any]]] = {}  # {"quick": {option: value}}: `harness run --preset quick`

    @classmethod
    def resolve_config(cls, config: Any, device: str) -> Any:
        """Settle defaults that depend on the hardware ("cpu", "cuda") before the config is hashed.

        A config field left at None to mean "1000 on CPU, 10000 on GPU" must be replaced by the
        number actually used: the config hash says "same experiment", so it must see it.
        """
        return config

    @classmethod
    def refusal(cls, config: Any, load: Any) -> str | None:
        """Why this task cannot run with these loading options (`LoadOptions`), as one line naming the fix; None if it can.

        Checked before any model is loaded. Every task that only reads and edits activations runs
        on a quantised (`--load-in-4bit`/`8bit`) model; one that needs float weights (training
        them, say) refuses here rather than failing deep inside a run.
        """
        return None

    @classmethod
    def workload(cls, config: Any, shape: ModelShape) -> Workload | None:
        """The run's size on a model of `shape` with `config` (resolved), for `--dry-run`; None: not estimated."""
        return None

    def run(self, model: Model, config: Any, ctx: RunContext) -> TaskResult:
        """Run the experiment on `model` (a loaded `Model`) with `config`, asking `ctx` for everything model-related.

        `config` arrives settled by `resolve_config` (the runner settles it once, before hashing it),
        so `run` never re-resolves it; code that calls `run` by hand calls `resolve_config` first.
        """
        raise NotImplementedError


def _convert(name: str, raw: str, annotation: Any) -> Any:
    """Turn a --task-arg string into the type the config field declares."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null", "") and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(name, raw, option)
            except UsageError:
                continue
        raise UsageError(f"--task-arg {name}={raw!r}: expected {_type_name(annotation)}")
    if origin is Literal:
        if raw not in [str(a) for a in args]:
            raise UsageError(f"--task-arg {name}={raw!r}: choose one of {', '.join(map(str, args))}")
        return next(a for a in args if str(a) == raw)
    if annotation is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"--task-arg {name}={raw!r}: expected true or false")
    if origin in (list, Sequence) or annotation is list:
        item = args[0] if args else str
        parts = [p.strip() for p in raw.split(",")]
        if not raw.strip() or any(not p for p in parts):
            raise UsageError(f"--task-arg {name}={raw!r}: expected a comma-separated list without empty items")
        return [_convert(name, p, item) for p in parts]
    if annotation in (int, float):
        try:
            value = annotation(raw)
        except ValueError:
            raise UsageError(f"--task-arg {name}={raw!r}: expected a{'n integer' if annotation is int else ' number'}") from None
        if annotation is float and not math.isfinite(value):
            raise UsageError(f"--task-arg {name}={raw!r}: expected a finite number")
        return value
    if annotation is str:
        return raw
    raise UsageError(f"--task-arg {name}: this option cannot be set from the command line")


def parse_config(task: type[Task], task_args: Sequence[str], preset: str | None = None) -> Any:
    """Build the task's Config from `key=value` strings, validating names and types.

    preset: a named set of option values the task declares in `presets` (e.g. "quick", sized
    for a laptop CPU), applied before `task_args`, which override it. A task without that
    preset runs its defaults.
    """
    fields = {f.name: f for f in dataclasses.fields(task.Config)}
    hints = typing.get_type_hints(task.Config)
    values: dict[str, Any] = dict(task.presets.get(preset, {})) if preset else {}
    for item in task_args:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise UsageError(f"--task-arg '{item}' is not key=value")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            known = ", ".join(fields) or "none"
            raise UsageError(f"task {task.name} has no option '{key}'{hint}; its options: {known}")
        values[key] = _convert(key, raw.strip(), hints[key])
    try:
        config = task.Config(**values)
    except (ValueError, TypeError) as e:
        raise UsageError(f"bad --task-arg for {task.name}: {e}") from None
    check_bounds(task, config)
    return config


def check_bounds(task: type[Task], config: Any) -> None:
    """Every number within the bounds its `option` declares, and finite."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if not math.isfinite(v):
                raise UsageError(f"--task-arg {f.name}={v}: expected a finite number")
            for bound, limit in f.metadata.get("bounds", {}).items():
                ok = {"ge": v >= limit, "gt": v > limit, "le": v <= limit, "lt": v < limit}[bound]
                if not ok:
                    sign = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}[bound]
                    raise UsageError(f"--task-arg {f.name}={v}: {task.name} needs {f.name} {sign} {limit:g}")


@dataclass
class OptionDoc:
    """One line of `harness list TASK`: an option's name, type, default and description."""

    name: str
    type: str
    default: str
    help: str


def describe_options(task: type[Task]) -> list[OptionDoc]:
    """The task's options as documentation rows, from its Config's fields."""
    hints = typing.get_type_hints(task.Config)
    rows = []
    for f in dataclasses.fields(task.Config):
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        )
        shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
        rows.append(OptionDoc(f.name, _type_name(hints[f.name]), shown, f.metadata.get("help", "")))
    return rows


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "|".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + (" or none" if type(None) in args else "")
    if origin is list:
        return f"list of {_type_name(args[0])}" if args else "list"
    return getattr(annotation, "__name__", str(annotation))
