"""The one validator of results and comparison files: what `harness validate` says, `leaderboard build` applies and a run obeys.

A results file is untrusted input (a contributor's pull request can carry any bytes), so a
leaderboard accepts one only if every rule below holds, and `harness validate` reports
exactly these rules, one line per problem with the field's path. A run checks its own file
against them before writing it, so a run that exits 0 always leaves a file the leaderboard
accepts. The rules:

- a regular file (no link, FIFO or device: opened without blocking, so a FIFO cannot hang
  the reader) of at most `MAX_JSON_BYTES`, UTF-8 JSON nested at most `MAX_JSON_DEPTH` deep;
- the pydantic models the shipped JSON Schemas are generated from (`harness.results`,
  `harness.results.compare`);
- every metric's value and interval finite and within ±`MAX_ABS_VALUE` (larger numbers are
  corrupt or hostile, never measurements), the paper's reference numbers likewise;
- an unmeasured metric is not also a measured one, its key at most `MAX_NAME` and its reason
  at most `MAX_REASON` characters;
- a task name that can name a leaderboard file (`TASK_NAME`, not a reserved name);
- artifacts named by plain relative paths inside the file's own folder (`<file name without
  .json>/...`: no `..`, no absolute path, nothing beside the folder); whether each plot is a
  real PNG is checked when `leaderboard build` copies it, and reported there by name;
- a comparison names each model once, at least two, and each paired difference names two
  of those models.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.safepath import UnsafePath, read_plain_file

MAX_JSON_BYTES = 64 * 2**20
MAX_JSON_DEPTH = 64  # our own files nest at most 8 deep; deeper is hostile, and deep enough to break a recursive parser
MAX_ABS_VALUE = 1e12  # larger numbers are corrupt or hostile, not measurements
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # a task name becomes a file name
MAX_NAME, MAX_REASON = 200, 500  # an unmeasured metric's key and its reason: a page shows both
RESERVED_NAMES = {"index", "findings"}  # index.json lists the boards, findings.json holds the verdicts: neither is a board
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


class InvalidFile(ValueError):
    """A results or comparison file that breaks a rule; the message is its first problem."""


def is_number(x: Any) -> bool:
    """A value fit to rank and to embed in JSON: finite and not absurdly large."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) <= MAX_ABS_VALUE  # NaN and inf fail it too


def task_name_ok(name: str) -> bool:
    return bool(TASK_NAME.fullmatch(name)) and name.lower() not in RESERVED_NAMES


def json_depth(text: str) -> int:
    """How deep the brackets of a JSON text nest (strings skipped), without a recursive parser."""
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub("", text)):
        depth += 1 if m.group(0) in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json(text: str) -> Any:
    """JSON text checked for depth before it is parsed; ValueError when it is not JSON or too deep."""
    if json_depth(text) > MAX_JSON_DEPTH:
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} deep")
    return json.loads(text)


def read_json(path: Path) -> Any:
    """The parsed JSON of a regular file within the size and depth limits; InvalidFile otherwise."""
    try:
        text = read_plain_file(path, MAX_JSON_BYTES).decode("utf-8")
    except UnsafePath as e:
        raise InvalidFile(f"cannot read: {e}") from None
    except UnicodeDecodeError:
        raise InvalidFile("cannot read: not UTF-8 text") from None
    try:
        return parse_json(text)
    except (ValueError, RecursionError) as e:
        raise InvalidFile(f"not JSON: {e}") from None


def schema_problems(e: ValidationError) -> list[str]:
    return [f"{'.'.join(map(str, err['loc'])) or '(top level)'}: {err['msg']}" for err in e.errors()]


def _metric_problems(where: str, metric: Any) -> list[str]:
    return [
        f"{where}.{name}: {getattr(metric, name)!r} is not a finite number within ±{MAX_ABS_VALUE:g}"
        for name in ("value", "ci_low", "ci_high")
        if not is_number(getattr(metric, name))
    ]


def _artifact_problems(artifacts: list[str], stem: str | None) -> list[str]:
    """Artifacts must be plain relative paths inside the folder `stem` beside the file (when it is known)."""
    problems = []
    for a in artifacts:
        parts = a.split("/")
        if any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts) or len(parts) < 2:
            problems.append(f"artifacts: {a[:80]!r} is not a plain relative path inside the file's folder")
        elif stem is not None and parts[0] != stem:
            problems.append(f"artifacts: {a[:80]!r} is not inside the file's folder {stem[:60]}/")
    return problems


def results_problems(results: Any, stem: str | None = None) -> list[str]:
    """The rules beyond the schema that a `harness.results.Results` breaks (empty when it keeps them all)."""
    problems = []
    if not task_name_ok(results.task.name):
        problems.append(
            f"task.name: {results.task.name[:60]!r} cannot name a leaderboard file "
            "(letters, digits, '.', '_', '-'; not 'index' or 'findings')"
        )
    for key, m in results.metrics.items():
        problems += _metric_problems(f"metrics.{key}", m)
    for key, why in results.unmeasured.items():
        if key in results.metrics:
            problems.append(f"unmeasured.{key[:60]}: also a measured metric")
        if len(key) > MAX_NAME or len(why) > MAX_REASON:
            problems.append(f"unmeasured.{key[:60]}: a key over {MAX_NAME} or a reason over {MAX_REASON} characters")
    for model, values in (results.reference.metrics if results.reference else {}).items():
        problems += [
            f"reference.metrics.{model}.{k}: {v!r} is not a finite number within ±{MAX_ABS_VALUE:g}"
            for k, v in values.items()
            if not is_number(v)
        ]
    problems += _artifact_problems(results.artifacts, stem)
    return problems


def comparison_problems(comparison: Any, stem: str | None = None) -> list[str]:
    """The rules beyond the schema that a `harness.results.compare.Comparison` breaks."""
    problems = []
    if not task_name_ok(comparison.task.name):
        problems.append(f"task.name: {comparison.task.name[:60]!r} cannot name a leaderboard file")
    specs = [m.spec for m in comparison.models]
    if len(set(specs)) != len(specs):
        problems.append("models: a model is named more than once")
    for m in comparison.models:
        for key, metric in m.metrics.items():
            problems += _metric_problems(f"models.{m.spec[:60]}.metrics.{key}", metric)
    for i, d in enumerate(comparison.differences):
        problems += _metric_problems(f"differences.{i}", d)
        for side in (d.model_a, d.model_b):
            if side not in specs:
                problems.append(f"differences.{i}: {side[:60]!r} is not one of the compared models")
    problems += _artifact_problems(comparison.artifacts, stem)
    return problems


def check_data(data: Any, stem: str | None = None) -> tuple[Any, list[str]]:
    """(the Results or Comparison the parsed JSON holds, its problems); the model is None when the schema fails."""
    from harness.results import Results
    from harness.results.compare import Comparison

    comparative = isinstance(data, dict) and data.get("kind") == "comparison"
    try:
        parsed = (Comparison if comparative else Results).model_validate(data)
    except ValidationError as e:
        return None, schema_problems(e)
    return parsed, (comparison_problems if comparative else results_problems)(parsed, stem)


def stem_of(path: Path) -> str:
    """The folder of a results or comparison file's plots: its name without `.json`."""
    return path.name.removesuffix(".json")


def validate_file(path: Path) -> list[str]:
    """Problems with the results or comparison file at `path` (empty when a leaderboard accepts it)."""
    try:
        data = read_json(path)
    except InvalidFile as e:
        return [str(e)]
    return check_data(data, stem_of(path))[1]


def load_valid(path: Path, kind: type) -> Any:
    """The file at `path` as `kind` (Results or Comparison) if it keeps every rule; InvalidFile naming the first problem."""
    data = read_json(path)
    parsed, problems = check_data(data, stem_of(path))
    if parsed is not None and not isinstance(parsed, kind):
        raise InvalidFile(
            f"a {'comparison' if kind.__name__ == 'Results' else 'results'} file, not a {kind.__name__.lower()} file"
        )
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InvalidFile(problems[0] + more)
    return parsed


def refuse_invalid(model: Any, path: Path, what: str) -> None:
    """Raise a one-line UsageError when a file a run is about to write would break a rule (nothing is written)."""
    from harness.errors import UsageError
    from harness.results.compare import Comparison

    problems = (comparison_problems if isinstance(model, Comparison) else results_problems)(model, stem_of(path))
    if not problems and len(model.model_dump_json().encode()) > MAX_JSON_BYTES:
        problems = [f"over {MAX_JSON_BYTES} bytes"]
    if problems:
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise UsageError(
            f"{what}: no results file written, since no leaderboard would accept it ({problems[0]}{more}); "
            "the options or data leave nothing meaningful to measure: check them (harness list TASK)"
        )
