"""Planning a run before any model loads: the run's own settings, the tasks and their parsed
configs, presets and the output folder, each refused with one line when it cannot make a
meaningful run."""

from __future__ import annotations

import difflib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from harness.api.registry import all_tasks, resolve_tasks
from harness.api.task import Task, parse_config
from harness.engine.models import LoadOptions, locate, slugify, target_device
from harness.errors import UsageError
from harness.results.stats import N_BOOTSTRAP

SEED_END = 2**32  # numpy's legacy seeding and torch.manual_seed's portable range is [0, 2**32)


BOOTSTRAP_RANGE = (100, 100_000)  # fewer: a 95% interval from two or three tail draws; more: n_boot x n index arrays


@dataclass
class RunSpec:
    """Everything `harness run` was asked to do."""

    models: list[str]
    tasks: list[str]
    task_args: list[str] = field(default_factory=list)
    output_dir: Path = Path("results")
    seed: int = 0
    limit: int | None = None
    batch_size: int | str = "auto"
    bootstrap: int = N_BOOTSTRAP  # resamples behind every interval; not part of any task's config
    load: LoadOptions = field(default_factory=LoadOptions)
    log_samples: bool = False
    force: bool = False
    show_progress: bool | None = None
    preset: str | None = None  # a named option set every task may declare ("quick": sized for a laptop CPU)


@dataclass
class Planned:
    task: type[Task]
    config: Any
    path: Path


def split_task_args(task_classes: Sequence[type[Task]], task_args: Sequence[str]) -> dict[str, list[str]]:
    """Route each `key=value` (or `task:key=value`) to the tasks that have that option."""
    import dataclasses

    routed: dict[str, list[str]] = {t.name: [] for t in task_classes}
    for item in task_args:
        target, colon, rest = item.partition(":")
        if colon and "=" not in target:
            if target not in routed:
                raise UsageError(f"--task-arg {item}: task {target} is not among the tasks of this run")
            routed[target].append(rest)
            continue
        key = item.partition("=")[0].strip()
        owners = [t for t in task_classes if key in {f.name for f in dataclasses.fields(t.Config)}]
        for t in owners or task_classes[:1]:  # no owner: let the first task's parser name the error
            routed[t.name].append(item)
    return routed


def plan_tasks(spec: RunSpec, device: str | None = None) -> list[tuple[type[Task], Any]]:
    """Resolve task names and parse their configs before any model is loaded: bad input fails fast.

    Hardware-dependent defaults are settled here (`Task.resolve_config`), so the config that is
    hashed and recorded is the one that runs. `device` ("cpu", "cuda") plans for another machine
    than this one (`--dry-run`); None: the device the run would use here.
    """
    classes = resolve_tasks(spec.tasks)
    check_preset(spec.preset)
    routed = split_task_args(classes, spec.task_args)
    device = device or target_device(spec.load).split(":")[0]
    planned = [(t, t.resolve_config(parse_config(t, routed[t.name], spec.preset), device)) for t in classes]
    for task, config in planned:
        reason = task.refusal(config, spec.load)
        if reason:
            raise UsageError(f"{task.name}: {reason}")
    return planned


def check_preset(preset: str | None) -> None:
    """A preset some task declares, or a one-line refusal: a typo must not run the full-size defaults."""
    if preset is None:
        return
    known = sorted({name for task in all_tasks().values() for name in task.presets})
    if preset not in known:
        close = difflib.get_close_matches(preset, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UsageError(f"--preset {preset}: no task declares it{hint}; known presets: {', '.join(known) or 'none'}")


def check_spec(spec: RunSpec) -> None:
    """The run's own numbers in range, before anything runs (task options are checked by `parse_config`)."""
    if isinstance(spec.seed, bool) or not isinstance(spec.seed, int) or not 0 <= spec.seed < SEED_END:
        raise UsageError(f"--seed {spec.seed}: use a whole number from 0 to {SEED_END - 1}")
    if spec.limit is not None and (isinstance(spec.limit, bool) or not isinstance(spec.limit, int) or spec.limit < 1):
        raise UsageError(f"--limit {spec.limit}: use a positive whole number, or leave it out for all the data")
    low, high = BOOTSTRAP_RANGE
    if isinstance(spec.bootstrap, bool) or not isinstance(spec.bootstrap, int) or not low <= spec.bootstrap <= high:
        raise UsageError(f"--bootstrap {spec.bootstrap}: use a number of resamples from {low} to {high}")
    if spec.batch_size != "auto" and (not isinstance(spec.batch_size, int) or spec.batch_size < 1):
        raise UsageError(f"--batch-size {spec.batch_size}: use a positive whole number or auto")
    if spec.load.max_memory and not spec.load.device_map:
        raise UsageError("--max-memory limits what --device-map places on each device: add --device-map auto")


def prepare_output_dir(path: Path) -> None:
    """Create `--output-dir` and prove it writable before any model loads, so a bad folder costs a second, not a run."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--output-dir {path} is a file: pass a folder (it is created when missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"cannot write to --output-dir {path} ({e.strerror or e}): pass a writable folder") from None


def unique_models(spec: RunSpec) -> list[str]:
    """The `--model` values, each model once: two specs of one folder (`m`, `./m/`) share a slug and run once."""
    seen: dict[str, str] = {}
    for model_spec in spec.models:
        locate(model_spec, spec.load.revision)  # a bad spec fails here, before any folder or lock is made
        seen.setdefault(slugify(model_spec, spec.load.revision), model_spec)
    return list(seen.values())
