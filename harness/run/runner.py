"""One invocation: for each model, load it once and run every task on it, writing one results file each.

A finished result is reused unless `force`. Every (model, task) result has its own path
inside the output folder (`result_path`) and its own lock, held for the whole run, so two
runs never write one result at once: the second is refused with one line before it loads
anything. A task writes its plots into a staging folder of its own and `install` swaps
them in with the results file last, so a run killed at any instant leaves either no
results file or a complete one, and the next run completes it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import platform
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
from threadpoolctl import threadpool_limits

import harness
from harness.api.context import RunContext
from harness.api.task import Task
from harness.engine import distributed
from harness.engine.models import Model, cache_root, load_model, model_fingerprint, pick_dtype, target_device
from harness.results import Curve, Environment, ModelRecord, Results, TaskRecord, Timing, config_hash
from harness.results.validate import refuse_invalid
from harness.run.plan import Planned, RunSpec, check_spec, plan_tasks, prepare_output_dir, unique_models
from harness.run.store import artifacts_dir, checkpoint_dir, clear_leftovers, install, result_lock, result_path, reusable

__all__ = [
    "Outcome",
    "RunSpec",
    "check_spec",
    "checkpoint_dir",
    "plan_tasks",
    "result_lock",
    "result_path",
    "run",
    "run_task",
    "summary",
]  # planning and the store live in harness.run.plan and harness.run.store; these read as before

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    model: str
    task: str
    path: Path
    reused: bool
    results: Results


def environment(model: Model) -> Environment:
    import transformers

    device = model.input_device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return Environment(
        python=platform.python_version(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        platform=platform.platform(),
        device_name=name,
    )


def checked_curves(curves: list[Curve], n_layers: int, task: str) -> list[Curve]:
    """A task's curves, each layer inside the model and each (plot, label) once: a task bug fails here, not in a chart."""
    seen = set()
    for c in curves:
        if any(not 0 <= L < n_layers for L in c.layers):
            raise ValueError(f"{task}: curve {c.metric} has a layer outside 0..{n_layers - 1}")
        key = (c.plot or c.metric, c.label or c.metric)
        if key in seen:
            raise ValueError(f"{task}: two curves named {key}: give each its own metric or label")
        seen.add(key)
    return curves


def run_task(model: Model, task: type[Task], config: Any, path: Path, spec: RunSpec) -> Results:
    """Run one task and write its results file; plots go to a folder named like the file.

    The task writes into a staging folder unique to this process, so two runs never share
    one; `install` then moves it in. `run` holds the result's lock around this call.
    """
    staging = path.parent / f".{artifacts_dir(path).name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    checkpoints = checkpoint_dir(path, model.info.fingerprint)
    main = distributed.is_main()  # with several data-parallel ranks, rank 0 alone writes anything
    ctx = RunContext(
        model=model,
        seed=spec.seed,
        limit=spec.limit,
        batch_size=spec.batch_size,
        bootstrap=spec.bootstrap,
        artifacts_dir=staging if main else None,
        checkpoint_dir=checkpoints,
        writes_files=main,
        cache_dir=cache_root() / "products",
        log_samples=spec.log_samples and main,
        show_progress=spec.show_progress if main else False,
    )
    start, tokens_before = time.perf_counter(), model.tokens_processed
    torch.manual_seed(spec.seed)
    try:
        # numpy's and scipy's BLAS on one thread: probes work on small matrices, and two BLAS threads
        # beside torch's own busy pool oversubscribe a small machine many times over (benchmarks/).
        with threadpool_limits(limits=1, user_api="blas"):
            outcome = task().run(model, config, ctx)
        ctx.write_samples()
        seconds = time.perf_counter() - start
        info = model.info
        written = [a for a in ctx.artifacts if (staging / a).exists()]  # never list a file that is not there
        results = Results(
            harness_version=harness.__version__,
            task=TaskRecord(
                name=task.name,
                version=task.version,
                config=asdict(config),
                config_hash=config_hash(asdict(config)),
                description=task.description,
                paper=task.paper,
                headline_metrics=task.headline_metrics,
                finding=asdict(task.finding) if task.finding is not None else None,
                default_config=asdict(task.resolve_config(task.Config(), model.input_device.type)),
            ),
            model=ModelRecord(
                spec=info.spec,
                source=info.source,
                resolved_revision=info.revision,
                architecture=info.architecture,
                n_params=info.n_params,
                dtype=info.dtype,
                quantization=info.quantization,
                device=info.device,
                fingerprint=info.fingerprint,
                bos=info.bos,
                n_layers=model.n_layers,
            ),
            metrics=outcome.metrics,
            unmeasured=outcome.unmeasured,
            reference=outcome.reference,
            environment=environment(model),
            timing=Timing(
                seconds_total=round(seconds, 3),
                tokens_processed=model.tokens_processed - tokens_before,
                phases=phases(ctx.phase_seconds, seconds),
            ),
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            seed=spec.seed,
            limit=spec.limit,
            bootstrap=spec.bootstrap,
            notes=outcome.notes,
            curves=checked_curves(outcome.curves, model.n_layers, task.name),
            details=outcome.details,
            artifacts=[f"{artifacts_dir(path).name}/{a}" for a in written],
        )
        refuse_invalid(results, path, f"{task.name} on {model.info.spec}")  # exit 0 means a file the leaderboard accepts
        if main:
            install(path, staging, results)
            shutil.rmtree(checkpoints, ignore_errors=True)
        return results
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def phases(model_calls: dict[str, float], total: float) -> dict[str, float]:
    """Seconds per kind of model call, and 'analysis' for the rest of the task (probes, statistics, plots)."""
    out = {k: round(v, 3) for k, v in sorted(model_calls.items())}
    out["analysis"] = round(max(0.0, total - sum(model_calls.values())), 3)
    return out


def run(spec: RunSpec, report: Callable[[str], None] = print) -> list[Outcome]:
    """Run every task on every model. Bad input of any kind fails with a UsageError before any model loads.

    Under a data-parallel launcher every rank runs this; rank 0 alone takes locks, reports and writes.
    """
    if not distributed.is_main():
        report = _silent
    check_spec(spec)
    plans = plan_tasks(spec)
    prepare_output_dir(spec.output_dir)
    models = unique_models(spec)
    dtype = str(pick_dtype(spec.load, target_device(spec.load))).removeprefix("torch.")
    outcomes: list[Outcome] = []
    with contextlib.ExitStack() as locks:
        paths = {(m, t.name): result_path(spec.output_dir, m, t, c, spec) for m in models for t, c in plans}
        for path in paths.values() if distributed.is_main() else ():  # every lock before any work: a busy result refuses up front
            locks.enter_context(result_lock(path))
            clear_leftovers(path)
        for model_spec in models:
            todo: list[Planned] = []
            fingerprint = None if spec.force else model_fingerprint(model_spec, spec.load)
            for task, config in plans:
                path = paths[(model_spec, task.name)]
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
                if distributed.is_main():
                    clear_leftovers(item.path, keep_checkpoints=checkpoint_dir(item.path, model.info.fingerprint))
                report(f"running {item.task.name} on {model_spec} ...")
                results = run_task(model, item.task, item.config, item.path, spec)
                report(
                    f"{item.task.name} on {model_spec}: {summary(results)} -> {item.path} ({results.timing.seconds_total:.0f} s)"
                )
                outcomes.append(Outcome(model_spec, item.task.name, item.path, False, results))
            del model
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        for task, config in plans:
            runs = [o for o in outcomes if o.task == task.name]
            if task.comparative and len(runs) >= 2 and distributed.is_main():
                from harness.results.compare import write_comparison

                path = write_comparison(task, config, runs, spec)
                report(f"{task.name}: comparison of {len(runs)} models -> {path}")
    return outcomes


def _silent(_: str) -> None:
    """The report of ranks other than 0: one voice on the terminal."""


def summary(results: Results, limit: int = 4) -> str:
    """The task's headline metrics (the first few metrics when it names none), with intervals."""
    keys = [k for k in (results.task.headline_metrics or []) if k in results.metrics] or list(results.metrics)
    parts = [
        f"{k} {results.metrics[k].value:.3f} [{results.metrics[k].ci_low:.3f}, {results.metrics[k].ci_high:.3f}]"
        for k in keys[:limit]
    ]
    return "; ".join(parts)
