"""The result store: where each experiment's results file lives (named by what sets its numbers),
its lock, what killed runs left beside it, whether a finished result can be reused, and the
atomic install of a new one."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import logging
import os
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any, Iterator

from harness.api.task import Task
from harness.engine.models import model_quantization, pick_dtype, quantization_name, slugify, target_device
from harness.errors import UsageError
from harness.results import Experiment, Results, config_hash, read_results, write_results
from harness.results.stats import N_BOOTSTRAP
from harness.results.validate import TASK_NAME
from harness.run.plan import RunSpec
from harness.safepath import UnsafePath, safe_join

log = logging.getLogger(__name__)


PLAIN_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_]{0,31}")


def result_path(output_dir: Path, model_spec: str, task: type[Task], config: Any, spec: RunSpec) -> Path:
    """<output-dir>/<model slug>/<task>-v<version>.json, with a suffix keyed by what else changes the numbers.

    The version is in the name, so a new task version never replaces the old version's
    results; the suffix appears when the config, seed, limit, resamples or the weights'
    precision (dtype, bitsandbytes) differ from the defaults. The slug is one folder per
    model (`slugify`), and the joined path is checked to stay inside `output_dir`.
    """
    if not TASK_NAME.fullmatch(task.name):
        raise UsageError(f"task name {task.name!r} cannot name a results file: use letters, digits, '_', '-' and '.'")
    version = (
        task.version if PLAIN_VERSION.fullmatch(task.version) else "x" + hashlib.sha256(task.version.encode()).hexdigest()[:8]
    )
    dtype = str(pick_dtype(spec.load, target_device(spec.load))).removeprefix("torch.")
    defaults = task.resolve_config(task.Config(), target_device(spec.load).split(":")[0])  # as plan_tasks resolves them
    default = Experiment(task.name, task.version, config_hash(asdict(defaults)), 0, None, N_BOOTSTRAP, "float32", None)
    key = planned(task, config, spec, dtype, quantization_name(spec.load))  # the precision asked (a GGUF's is in the slug)
    stem = f"{task.name}-v{version}" + (
        "" if key.file_key() == default.file_key() else f"-{config_hash({'k': key.file_key()})[:8]}"
    )
    try:
        return safe_join(output_dir, slugify(model_spec, spec.load.revision), f"{stem}.json")
    except UnsafePath as e:
        raise UsageError(f"results for {model_spec} cannot be written inside {output_dir}: {e}") from None


def planned(task: type[Task], config: Any, spec: RunSpec, dtype: str, quantization: str | None) -> Experiment:
    """The experiment a run of `task` with `config` (settled) under `spec` is."""
    return Experiment(
        task.name, task.version, config_hash(asdict(config)), spec.seed, spec.limit, spec.bootstrap, dtype, quantization
    )


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
            raise UsageError(
                f"another run is writing {path}: wait for it to finish (this command then reuses its "
                "result) or pass another --output-dir"
            ) from None
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
        staged = item.name.startswith(f".{stem}.partial") or (
            item.name.startswith(f".{path.name}.") and item.name.endswith(".tmp")
        )
        stale = keep_checkpoints is not None and item.name.startswith(f".{stem}.checkpoints") and item != keep_checkpoints
        if not (staged or stale):
            continue
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)


def reusable(
    path: Path, task: type[Task], config: Any, spec: RunSpec, model_spec: str, dtype: str, fingerprint: str | None
) -> Results | None:
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
        Experiment.of(old) == planned(task, config, spec, dtype, model_quantization(model_spec, spec.load))
        and old.model.spec == model_spec
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
