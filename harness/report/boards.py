"""The files of a leaderboard: one board per task version and config, its rows, and the comparisons
beside it, as stored in `<task>.json`; reading them back and showing one in the terminal."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict

from harness.errors import UsageError
from harness.results import Metric, Reference
from harness.results.compare import PairedDifference
from harness.results.validate import RESERVED_NAMES, task_name_ok

LEADERBOARD_VERSION = 1
N_HEADLINE = 6  # columns shown for a task whose results name no headline metrics
FINDINGS_FILE = "findings.json"  # the findings matrix (harness.report.findings documents its fields)


class Row(BaseModel):
    """One model's result on one board, as stored in `<task>.json`."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())
    model: str
    model_revision: Optional[str] = None
    dtype: str
    quantization: Optional[str] = None
    n_params: Optional[int] = None
    metrics: dict[str, Metric]
    unmeasured: dict[str, str] = {}  # metrics the run could not measure (no unit), each with why
    config_hash: str
    task_version: str
    harness_version: str = ""
    seed: int
    date: str = ""
    created_at: str = ""  # absent in boards built before merging existed; `date` stands in
    notes: list[str] = []
    artifacts: list[str] = []
    curves: dict[str, list[list[float]]] = {}  # per-layer curves by metric key: [[relative depth, value], ...]

    def key(self) -> tuple:
        return (self.model, self.dtype, self.quantization, self.seed)

    def when(self) -> str:
        return self.created_at or self.date


class Board(BaseModel):
    """The rows of one task version and config hash: only these are ranked together."""

    model_config = ConfigDict(extra="ignore")
    task_version: str
    config_hash: str
    config: dict[str, Any]
    default_config: Optional[dict[str, Any]] = None  # the task's defaults as the newest run recorded them
    headline_metrics: list[str]
    reference: Optional[Reference] = None
    finding: Optional[dict[str, Any]] = None  # the task's Finding as the newest run recorded it (harness.report.findings)
    rows: list[Row]


class ComparisonView(BaseModel):
    """One comparison across models as a board stores it: models as rows, `columns` as columns, paired differences."""

    model_config = ConfigDict(extra="ignore")
    task_version: str
    config_hash: str
    seed: int
    bootstrap: int
    created_at: str
    models: list[str]
    columns: list[str]
    metrics: dict[str, dict[str, Metric]]  # {model: {metric key: Metric}}
    differences: list[PairedDifference]
    notes: list[str] = []
    artifacts: list[str] = []

    def key(self) -> tuple:
        return (self.task_version, self.config_hash, tuple(self.models), self.seed, self.bootstrap)


class TaskBoards(BaseModel):
    """The file `<task>.json`: a task's description, paper, boards and comparisons across models."""

    model_config = ConfigDict(extra="ignore")
    task: str
    description: str = ""
    paper: str = ""
    boards: list[Board]
    comparisons: list[ComparisonView] = []
    leaderboard_version: int = LEADERBOARD_VERSION


@dataclass
class BuildReport:
    used: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    written: set[str] = field(default_factory=set)  # asset files this build wrote, relative to --out
    removed: list[str] = field(default_factory=list)  # asset files clean-up deleted


def json_safe(value: Any) -> Any:
    """A config as JSON can carry it: NaN and infinities (which JSON lacks) become their names."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def to_json(data: Any) -> str:
    """Strict JSON (no NaN or Infinity, which browsers refuse), so every file parses anywhere."""
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def read_board(out_dir: Path, task: str) -> dict[str, Any]:
    path = out_dir / f"{task}.json"
    if not task_name_ok(task) or not path.is_file():
        known = sorted(p.stem for p in out_dir.glob("*.json") if p.stem.lower() not in RESERVED_NAMES)
        raise UsageError(
            f"no leaderboard for {task} in {out_dir}: run `harness leaderboard build` (have: {', '.join(known) or 'none'})"
        )
    return json.loads(path.read_text())


def format_metric(m: dict[str, Any] | None) -> str:
    if m is None:
        return "-"
    return f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


def format_table(board: dict[str, Any]) -> str:
    """A board as a plain-text table: one row per model, then the paper's numbers."""
    metrics = board["headline_metrics"]
    header = ["model", *metrics]
    lines = [[row["model"], *(format_metric(row["metrics"].get(m)) for m in metrics)] for row in board["rows"]]
    reference = board.get("reference") or {}
    for model, values in (reference.get("metrics") or {}).items():
        if any(m in values for m in metrics):
            lines.append([f"paper: {model}", *(f"{values[m]:.3f}" if m in values else "" for m in metrics)])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines)])
