"""Task registry: the engine finds tasks here and never imports one by name.

Tasks come from the entry-point group `harness.tasks`, built-in ones included (declared in
this project's pyproject), so a third-party package is discovered exactly like our own:

    [project.entry-points."harness.tasks"]
    my_task = "my_pkg.my_task:MyTask"

`@register_task` registers a class defined in-process (a notebook, a test).
"""

from __future__ import annotations

import difflib
import logging
from importlib.metadata import entry_points
from typing import TypeVar

from harness.api.task import Task
from harness.errors import UsageError
from harness.results.validate import TASK_NAME

log = logging.getLogger(__name__)
GROUP = "harness.tasks"
T = TypeVar("T", bound=type)

_registered: dict[str, type[Task]] = {}
_origin: dict[str, str] = {}


def register_task(cls: T) -> T:
    """Class decorator: make a Task available to `harness run --task <cls.name>`."""
    name = getattr(cls, "name", None)
    if not name:
        raise TypeError(f"{cls.__name__} needs a class attribute `name`")
    if not TASK_NAME.fullmatch(name):
        raise TypeError(
            f"task name {name!r}: use up to 100 letters, digits, '_', '-' and '.' (it names results and leaderboard files)"
        )
    existing = _registered.get(name)
    if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
        raise ValueError(f"two tasks are named {name}: {existing.__module__} and {cls.__module__}")
    _registered[name] = cls
    _origin.setdefault(name, cls.__module__.split(".")[0])
    return cls


def _load_entry_points() -> None:
    for ep in entry_points(group=GROUP):
        if ep.name in _registered:  # imported already, e.g. by a sibling entry point of the same module
            _origin[ep.name] = ep.dist.name if ep.dist else _origin[ep.name]
            continue
        try:
            cls = ep.load()
        except Exception as e:  # a broken plugin must not take the built-in tasks down with it
            log.warning("task plugin %s (%s) failed to load: %s", ep.name, ep.value, e)
            continue
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            log.warning("entry point %s = %s is not a Task subclass; skipped", ep.name, ep.value)
            continue
        if getattr(cls, "name", None) != ep.name:
            log.warning("entry point %s names task %s; registered under its class name", ep.name, cls.name)
        register_task(cls)
        _origin[cls.name] = ep.dist.name if ep.dist else ep.value.split(".")[0]


def all_tasks() -> dict[str, type[Task]]:
    _load_entry_points()
    return dict(sorted(_registered.items()))


def origin(name: str) -> str:
    """Which distribution provided a task (built-in ones: probe-harness)."""
    return _origin.get(name, "?")


def get_task(name: str) -> type[Task]:
    tasks = all_tasks()
    if name in tasks:
        return tasks[name]
    close = difflib.get_close_matches(name, tasks, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise UsageError(f"unknown task '{name}': {hint}`harness list` shows the tasks")


def resolve_tasks(names: list[str]) -> list[type[Task]]:
    """`all` expands to every registered task; duplicates are dropped, order kept."""
    if "all" in names:
        return list(all_tasks().values())
    seen: dict[str, type[Task]] = {}
    for n in names:
        seen.setdefault(n, get_task(n))
    return list(seen.values())
