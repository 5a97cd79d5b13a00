"""One invocation: for each model, load it once and run every task on it, writing one results file each.

A finished result is reused unless `force`; a task writes its plots into a staging folder
and its results file last, atomically, so an interrupted run leaves no results file
and the next run completes it.
"""

from __future__ import annotations

import gc
import logging
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

import harness
from harness.context import RunContext
from harness.errors import UsageError
from harness.models import (
    LoadOptions, Model, cache_root, load_model, model_fingerprint, model_quantization, pick_dtype, slugify, target_device,
)
from harness.registry import resolve_tasks
from harness.results import (
    Environment, ModelRecord, Results, TaskRecord, Timing, config_hash, read_results, write_results,
)
from harness.stats import N_BOOTSTRAP
from harness.task import Task, parse_config

log = logging.getLogger(__name__)


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


@dataclass
class Outcome:
    model: str
    task: str
    path: Path
    reused: bool
    results: Results


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


def plan_tasks(spec: RunSpec) -> list[tuple[type[Task], Any]]:
    """Resolve task names and parse their configs before any model is loaded: bad input fails fast.

    Hardware-dependent defaults are settled here (`Task.resolve_config`), so the config that is
    hashed and recorded is the one that runs.
    """
    classes = resolve_tasks(spec.tasks)
    routed = split_task_args(classes, spec.task_args)
    device = target_device(spec.load).split(":")[0]
    return [(t, t.resolve_config(parse_config(t, routed[t.name]), device)) for t in classes]


def result_path(output_dir: Path, model_spec: str, task: type[Task], config: Any, spec: RunSpec) -> Path:
    """results/<model>/<task>.json for the default run; a suffix keyed by config, seed and limit otherwise."""
    default = (config_hash(asdict(task.Config())), 0, None, N_BOOTSTRAP)
    key = (config_hash(asdict(config)), spec.seed, spec.limit, spec.bootstrap)
    stem = task.name if key == default else f"{task.name}-{config_hash({'k': list(key)})[:8]}"
    return output_dir / slugify(model_spec) / f"{stem}.json"


def reusable(path: Path, task: type[Task], config: Any, spec: RunSpec, model_spec: str, dtype: str,
             fingerprint: str | None) -> Results | None:
    """The finished result at `path` if it is this experiment on these very weights, else None.

    The weights' identity (hub commit, GGUF digest, folder fingerprint) must match: a result
    is never reused after `--revision` changed or the file behind a path was replaced.
    """
    if spec.force or not path.exists() or fingerprint is None:
        return None
    try:
        old = read_results(path)
    except Exception:
        log.warning("%s is unreadable; running again", path)
        return None
    same = (
        old.task.version == task.version
        and old.task.config_hash == config_hash(asdict(config))
        and old.seed == spec.seed
        and old.limit == spec.limit
        and old.bootstrap == spec.bootstrap
        and old.model.spec == model_spec
        and old.model.dtype == dtype
        and old.model.quantization == model_quantization(model_spec, spec.load)
        and old.model.fingerprint == fingerprint
    )
    return old if same else None


def environment(model: Model) -> Environment:
    import transformers

    device = model.input_device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return Environment(
        python=platform.python_version(), torch=torch.__version__, transformers=transformers.__version__,
        platform=platform.platform(), device_name=name,
    )


def run_task(model: Model, task: type[Task], config: Any, path: Path, spec: RunSpec) -> Results:
    """Run one task and write its results file; plots go to a folder named like the file."""
    artifacts = path.with_suffix("")
    staging = path.parent / f".{artifacts.name}.partial"
    checkpoints = path.parent / f".{artifacts.name}.checkpoints"  # kept across a killed run, so training resumes
    shutil.rmtree(staging, ignore_errors=True)  # left by a killed run
    ctx = RunContext(
        model=model, seed=spec.seed, limit=spec.limit, batch_size=spec.batch_size, bootstrap=spec.bootstrap,
        artifacts_dir=staging, checkpoint_dir=checkpoints, cache_dir=cache_root() / "products",
        log_samples=spec.log_samples, show_progress=spec.show_progress,
    )
    start, tokens_before = time.perf_counter(), model.tokens_processed
    torch.manual_seed(spec.seed)
    try:
        outcome = task().run(model, config, ctx)
        ctx.write_samples()
        seconds = time.perf_counter() - start
        info = model.info
        results = Results(
            harness_version=harness.__version__,
            task=TaskRecord(
                name=task.name, version=task.version, config=asdict(config), config_hash=config_hash(asdict(config)),
                description=task.description, paper=task.paper, headline_metrics=task.headline_metrics,
                finding=asdict(task.finding) if task.finding is not None else None,
            ),
            model=ModelRecord(
                spec=info.spec, source=info.source, resolved_revision=info.revision, architecture=info.architecture,
                n_params=info.n_params, dtype=info.dtype, quantization=info.quantization, device=info.device,
                fingerprint=info.fingerprint,
            ),
            metrics=outcome.metrics,
            reference=outcome.reference,
            environment=environment(model),
            timing=Timing(seconds_total=round(seconds, 3), tokens_processed=model.tokens_processed - tokens_before),
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            seed=spec.seed,
            limit=spec.limit,
            bootstrap=spec.bootstrap,
            notes=outcome.notes,
            details=outcome.details,
            artifacts=[f"{artifacts.name}/{a}" for a in ctx.artifacts],
        )
        if artifacts.exists():
            shutil.rmtree(artifacts)
        if staging.exists():
            staging.rename(artifacts)
        write_results(path, results)  # last: its presence means the run finished
        shutil.rmtree(checkpoints, ignore_errors=True)
        return results
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def run(spec: RunSpec, report: Callable[[str], None] = print) -> list[Outcome]:
    plans = plan_tasks(spec)
    dtype = str(pick_dtype(spec.load, target_device(spec.load))).removeprefix("torch.")
    outcomes: list[Outcome] = []
    for model_spec in spec.models:
        todo: list[Planned] = []
        fingerprint = None if spec.force else model_fingerprint(model_spec, spec.load)
        for task, config in plans:
            path = result_path(spec.output_dir, model_spec, task, config, spec)
            old = reusable(path, task, config, spec, model_spec, dtype, fingerprint)
            if old is not None:
                report(f"{task.name} on {model_spec}: reused {path} (--force to run again)")
                outcomes.append(Outcome(model_spec, task.name, path, True, old))
            else:
                todo.append(Planned(task, config, path))
        if not todo:
            continue
        report(f"loading {model_spec} ...")
        model = load_model(model_spec, spec.load)
        for item in todo:
            report(f"running {item.task.name} on {model_spec} ...")
            results = run_task(model, item.task, item.config, item.path, spec)
            report(f"{item.task.name} on {model_spec}: {summary(results)} -> {item.path} ({results.timing.seconds_total:.0f} s)")
            outcomes.append(Outcome(model_spec, item.task.name, item.path, False, results))
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    for task, config in plans:
        runs = [o for o in outcomes if o.task == task.name]
        if task.comparative and len(runs) >= 2:
            from harness.compare import write_comparison

            path = write_comparison(task, config, runs, spec)
            report(f"{task.name}: comparison of {len(runs)} models -> {path}")
    return outcomes


def summary(results: Results, limit: int = 4) -> str:
    """The task's headline metrics (the first few metrics when it names none), with intervals."""
    keys = [k for k in (results.task.headline_metrics or []) if k in results.metrics] or list(results.metrics)
    parts = [f"{k} {results.metrics[k].value:.3f} [{results.metrics[k].ci_low:.3f}, {results.metrics[k].ci_high:.3f}]"
             for k in keys[:limit]]
    return "; ".join(parts)
