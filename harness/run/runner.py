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
import difflib
import fcntl
import gc
import glob
import hashlib
import logging
import os
import platform
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Sequence

import torch
from threadpoolctl import threadpool_limits

import harness
from harness.api.context import RunContext
from harness.api.registry import all_tasks, resolve_tasks
from harness.api.task import Task, parse_config
from harness.engine import distributed
from harness.engine.models import (
    LoadOptions,
    Model,
    cache_root,
    load_model,
    locate,
    model_fingerprint,
    model_quantization,
    pick_dtype,
    quantization_name,
    slugify,
    target_device,
)
from harness.errors import UsageError
from harness.results import Environment, ModelRecord, Results, TaskRecord, Timing, config_hash, read_results, write_results
from harness.results.stats import N_BOOTSTRAP
from harness.results.validate import TASK_NAME, refuse_invalid
from harness.safepath import UnsafePath, safe_join

log = logging.getLogger(__name__)

SEED_END = 2**32  # numpy's legacy seeding and torch.manual_seed's portable range is [0, 2**32)
BOOTSTRAP_RANGE = (100, 100_000)  # fewer: a 95% interval from two or three tail draws; more: n_boot x n index arrays
PLAIN_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_]{0,31}")


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
    check_preset(spec.preset)
    routed = split_task_args(classes, spec.task_args)
    device = target_device(spec.load).split(":")[0]
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


def result_path(output_dir: Path, model_spec: str, task: type[Task], config: Any, spec: RunSpec) -> Path:
    """<output-dir>/<model slug>/<task>-v<version>.json, with a suffix keyed by what else changes the numbers.

    The version is in the name, so a new task version never replaces the old version's
    results; the suffix appears when the config, seed, limit, resamples or the weights'
    precision (dtype, bitsandbytes) differ from the defaults. The slug is one folder per
    model (`slugify`), and the joined path is checked to stay inside `output_dir`.
    """
    if not TASK_NAME.fullmatch(task.name):
        raise UsageError(f"task name {task.name!r} cannot name a results file: use letters, digits, '_', '-' and '.'")
    version = task.version if PLAIN_VERSION.fullmatch(task.version) else "x" + hashlib.sha256(task.version.encode()).hexdigest()[:8]
    dtype = str(pick_dtype(spec.load, target_device(spec.load))).removeprefix("torch.")
    defaults = task.resolve_config(task.Config(), target_device(spec.load).split(":")[0])  # as plan_tasks resolves them
    default = (config_hash(asdict(defaults)), 0, None, N_BOOTSTRAP, "float32", None)
    key = (config_hash(asdict(config)), spec.seed, spec.limit, spec.bootstrap, dtype, quantization_name(spec.load))
    stem = f"{task.name}-v{version}" + ("" if key == default else f"-{config_hash({'k': list(key)})[:8]}")
    try:
        return safe_join(output_dir, slugify(model_spec, spec.load.revision), f"{stem}.json")
    except UnsafePath as e:
        raise UsageError(f"results for {model_spec} cannot be written inside {output_dir}: {e}") from None


def artifacts_dir(path: Path) -> Path:
    """The folder of a results file's plots and samples: its name without `.json`."""
    return path.parent / path.name.removesuffix(".json")


def checkpoint_dir(path: Path, fingerprint: str | None) -> Path:
    """Training checkpoints of a result, kept across a killed run; keyed by the weights, so a resumed run never mixes models."""
    digest = hashlib.sha256(str(fingerprint).encode()).hexdigest()[:8]
    return path.parent / f".{artifacts_dir(path).name}.checkpoints-{digest}"


@contextlib.contextmanager
def result_lock(path: Path) -> Iterator[IO[str]]:
    """Hold the lock of one result (a lock file beside it), or refuse at once with one line.

    Refusing rather than waiting: a run that waited on several results could deadlock
    against another run that holds them in another order. The lock dies with its process,
    so a killed run never leaves a result locked. On release the lock file goes, and with it
    the model's folder when nothing else is in it, so a failed run leaves nothing behind;
    a lock taken on a file another run has just removed is retaken on the new one.
    """
    lock = path.parent / f".{artifacts_dir(path).name}.lock"
    for _ in range(100):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(lock, "a")
        except FileNotFoundError:  # the folder went with another run's release: make it again
            continue
        except OSError as e:
            raise UsageError(f"cannot write results in {path.parent} ({e.strerror or e}): pass a writable --output-dir") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise UsageError(f"another run is writing {path}: wait for it to finish (this command then reuses its "
                             "result) or pass another --output-dir") from None
        if same_file(handle, lock):
            break
        handle.close()  # locked a file that was removed meanwhile
    else:
        raise UsageError(f"cannot hold the lock {lock}: other runs keep replacing it; run again")
    try:
        yield handle
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        handle.close()
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only when empty: a failed first run leaves no empty model folder


def same_file(handle: IO[str], path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def clear_leftovers(path: Path, keep_checkpoints: Path | None = None) -> None:
    """Remove what killed runs left beside `path`: staging folders, temporary files and, given the
    checkpoints to keep, the checkpoints of other weights.

    Only safe under the result's lock: then no live run owns any of them.
    """
    stem = artifacts_dir(path).name
    for item in path.parent.glob(f".{glob.escape(stem)}.*"):
        staged = item.name.startswith(f".{stem}.partial") or (item.name.startswith(f".{path.name}.") and item.name.endswith(".tmp"))
        stale = keep_checkpoints is not None and item.name.startswith(f".{stem}.checkpoints") and item != keep_checkpoints
        if not (staged or stale):
            continue
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)


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
        and all(artifact_exists(path, a) for a in old.artifacts)
    )
    return old if same else None


def artifact_exists(path: Path, artifact: str) -> bool:
    """A listed artifact is there, inside the results file's own folder (a result missing its plots is run again)."""
    try:
        return safe_join(path.parent, artifact).exists()
    except UnsafePath:
        return False


def environment(model: Model) -> Environment:
    import transformers

    device = model.input_device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return Environment(
        python=platform.python_version(), torch=torch.__version__, transformers=transformers.__version__,
        platform=platform.platform(), device_name=name,
    )


def run_task(model: Model, task: type[Task], config: Any, path: Path, spec: RunSpec) -> Results:
    """Run one task and write its results file; plots go to a folder named like the file.

    The task writes into a staging folder unique to this process, so two runs never share
    one; `install` then moves it in. `run` holds the result's lock around this call.
    """
    staging = path.parent / f".{artifacts_dir(path).name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    checkpoints = checkpoint_dir(path, model.info.fingerprint)
    main = distributed.is_main()  # with several data-parallel ranks, rank 0 alone writes anything
    ctx = RunContext(
        model=model, seed=spec.seed, limit=spec.limit, batch_size=spec.batch_size, bootstrap=spec.bootstrap,
        artifacts_dir=staging if main else None, checkpoint_dir=checkpoints, writes_files=main,
        cache_dir=cache_root() / "products",
        log_samples=spec.log_samples and main, show_progress=spec.show_progress if main else False,
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
                name=task.name, version=task.version, config=asdict(config), config_hash=config_hash(asdict(config)),
                description=task.description, paper=task.paper, headline_metrics=task.headline_metrics,
                finding=asdict(task.finding) if task.finding is not None else None,
                default_config=asdict(task.resolve_config(task.Config(), model.input_device.type)),
            ),
            model=ModelRecord(
                spec=info.spec, source=info.source, resolved_revision=info.revision, architecture=info.architecture,
                n_params=info.n_params, dtype=info.dtype, quantization=info.quantization, device=info.device,
                fingerprint=info.fingerprint,
            ),
            metrics=outcome.metrics,
            reference=outcome.reference,
            environment=environment(model),
            timing=Timing(seconds_total=round(seconds, 3), tokens_processed=model.tokens_processed - tokens_before,
                          phases=phases(ctx.phase_seconds, seconds)),
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            seed=spec.seed,
            limit=spec.limit,
            bootstrap=spec.bootstrap,
            notes=outcome.notes,
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


def install(path: Path, staging: Path, results: Results) -> None:
    """Put a finished run in place of any older result at `path`, consistent at every instant.

    The old results file goes first (from then on nothing lists the old plots), the old
    plots next, the new plots after them and the new results file last, atomically: a kill
    anywhere leaves no results file or one whose every artifact exists, never one listing
    plots that are gone.
    """
    folder = artifacts_dir(path)
    path.unlink(missing_ok=True)
    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder)
    elif folder.exists() or folder.is_symlink():
        folder.unlink()
    if staging.exists():
        staging.rename(folder)
    write_results(path, results)  # last: its presence means the run finished


def unique_models(spec: RunSpec) -> list[str]:
    """The `--model` values, each model once: two specs of one folder (`m`, `./m/`) share a slug and run once."""
    seen: dict[str, str] = {}
    for model_spec in spec.models:
        locate(model_spec, spec.load.revision)  # a bad spec fails here, before any folder or lock is made
        seen.setdefault(slugify(model_spec, spec.load.revision), model_spec)
    return list(seen.values())


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
                report(f"{item.task.name} on {model_spec}: {summary(results)} -> {item.path} ({results.timing.seconds_total:.0f} s)")
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
    parts = [f"{k} {results.metrics[k].value:.3f} [{results.metrics[k].ci_low:.3f}, {results.metrics[k].ci_high:.3f}]"
             for k in keys[:limit]]
    return "; ".join(parts)
