"""The task pages in `docs/tasks/`: hand-written prose above a marker, and below it what the code
says (the task module's docstring, and `harness list TASK`), so the reference cannot drift.

    python -m harness.run.docs            # rewrite the generated part of every built-in task's page
    python -m harness.run.docs --check    # exit 1 when a page differs from the code (the test does this)
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs" / "tasks"
MARKER = "<!-- generated from the task's code by `python -m harness.run.docs`: edit the task, not below this line -->"


def generated(task: type) -> str:
    """The part of a task's page written from its code: method (module docstring), options and metrics."""
    from harness.run.cli import describe_task

    method = inspect.getdoc(sys.modules[task.__module__]) or ""
    return (
        f"{MARKER}\n\n## Method (from `{task.__module__}`)\n\n```text\n{method}\n```\n\n"
        f"## Options and metrics (`harness list {task.name}`)\n\n```text\n{describe_task(task)}\n```\n"
    )


def page(task: type, current: str) -> str:
    """`current` with everything from the marker on replaced by what the code says now."""
    prose = current.split(MARKER, 1)[0].rstrip("\n")
    return f"{prose}\n\n{generated(task)}"


def builtin_tasks() -> dict[str, type]:
    from harness.api.registry import all_tasks

    return {name: task for name, task in all_tasks().items() if task.__module__.startswith("tasks.")}


def main(argv: list[str]) -> int:
    stale = []
    for name, task in sorted(builtin_tasks().items()):
        path = DOCS / f"{name}.md"
        current = path.read_text() if path.exists() else f"# {name}\n"
        wanted = page(task, current)
        if wanted != current:
            stale.append(path)
            if "--check" not in argv:
                path.write_text(wanted)
    for path in stale:
        print(f"{'stale' if '--check' in argv else 'wrote'} {path}")
    return 1 if stale and "--check" in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
