"""The papers' data sets through `datasets.load_dataset`, with a one-line error a user can act on.

Offline without a cached copy, a renamed data set, a gated one: every failure of the hub or of
a local file becomes a `UsageError` naming the data set and the way out, so a task's loaders
never need their own copy of this.
"""

from __future__ import annotations

from typing import Any

from harness.errors import UsageError


def load_hub_dataset(*args: Any, fallback: str = "source=sample", **kwargs: Any) -> Any:
    """`datasets.load_dataset(*args, **kwargs)`, or a UsageError that names `fallback` (the offline choice)."""
    try:
        import datasets
    except ImportError:
        raise UsageError("source=hub needs the datasets package: pip install datasets") from None
    try:
        return datasets.load_dataset(*args, **kwargs)
    except Exception as e:  # offline without a cached copy, a renamed data set...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        files = kwargs.get("data_files")
        what = ", ".join(map(str, files.values())) if isinstance(files, dict) else str(files or args[0])
        raise UsageError(f"cannot load {what} ({first}); download it once with network access, or use {fallback}") from None
