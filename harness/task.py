"""The contract between the engine and a task: a `Task` class, its `Config` dataclass, its `TaskResult`.

A task reads like the method section of its paper: data -> prompts -> sites ->
probes/interventions -> metrics. It gets the shared machinery (scoring, collection,
interventions, randomness, plots) from the `RunContext` and returns a `TaskResult`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Sequence

from harness.errors import UsageError
from harness.results import Metric, Reference


@dataclass
class NoConfig:
    """For tasks without options."""


@dataclass
class TaskResult:
    metrics: dict[str, Metric]
    reference: Reference | None = None
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Task:
    """Subclass, set the class attributes, implement `run`, and decorate with `@register_task`."""

    name: ClassVar[str]
    version: ClassVar[str] = "1.0"  # bump when results stop being comparable
    paper: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type] = NoConfig
    headline_metrics: ClassVar[list[str] | None] = None  # leaderboard columns; None: the first few metrics

    def run(self, model: Any, config: Any, ctx: Any) -> TaskResult:
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
        raise UsageError(f"--task-arg {name}={raw}: expected {annotation}")
    if origin is Literal:
        if raw not in [str(a) for a in args]:
            raise UsageError(f"--task-arg {name}={raw}: choose one of {', '.join(map(str, args))}")
        return next(a for a in args if str(a) == raw)
    if annotation is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"--task-arg {name}={raw}: expected true or false")
    if annotation in (int, float):
        try:
            return annotation(raw)
        except ValueError:
            raise UsageError(f"--task-arg {name}={raw}: expected a{'n integer' if annotation is int else ' number'}") from None
    if annotation is str:
        return raw
    raise UsageError(f"--task-arg {name}: this option cannot be set from the command line")


def parse_config(task: type[Task], task_args: Sequence[str]) -> Any:
    """Build the task's Config from `key=value` strings, validating names and types."""
    fields = {f.name: f for f in dataclasses.fields(task.Config)}
    hints = typing.get_type_hints(task.Config)
    values: dict[str, Any] = {}
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
    return config
