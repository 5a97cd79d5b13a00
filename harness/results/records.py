"""The results file, schema version 1, defined once as pydantic models.

The shipped JSON Schema (`harness/results/schema/results.v1.schema.json`) is generated from
these models (`python -m harness.results.records`), and a test checks they agree, so the code,
the schema and the leaderboard cannot drift apart. Metric keys are stable: leaderboard
parsers read them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).parent / "schema" / "results.v1.schema.json"
TIMING_FIELDS = ("timing", "created_at")  # the only fields allowed to differ between two runs with one seed


class Metric(BaseModel):
    """One number with its 95% bootstrap interval over `n` examples."""

    model_config = ConfigDict(extra="forbid")
    value: float
    ci_low: float
    ci_high: float
    n: int = Field(ge=0)
    higher_is_better: Optional[bool] = True


class Reference(BaseModel):
    """The paper's numbers beside ours: {model: {metric: value}}; `notes` says where there is none."""

    model_config = ConfigDict(extra="forbid")
    source: str
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    notes: dict[str, str] = Field(default_factory=dict)


# The kinds of facet a finding has (`harness.Facet`, judged by `harness.report.findings`): the
# results contract holds them, so the plugin API and the reports read one spelling.
FACET_KINDS = ("behaviour", "representation", "causal")


class TaskRecord(BaseModel):
    """Which experiment ran; it carries what a leaderboard shows, so building one never imports task code."""

    model_config = ConfigDict(extra="forbid")
    name: str
    version: str
    config: dict[str, Any]
    config_hash: str
    description: str = ""
    paper: str = ""
    headline_metrics: Optional[list[str]] = None
    default_config: Optional[dict[str, Any]] = Field(
        default=None,
        description="the task's config defaults, resolved for this run's device, so a leaderboard can list what a run changed",
    )
    finding: Optional[dict[str, Any]] = Field(
        default=None, description="the task's Finding: effect and control metric keys, claim, paper's verdict"
    )


class ModelRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: str
    source: str
    resolved_revision: Optional[str] = None  # hub commit or sha256 of a GGUF file
    architecture: str
    n_params: int
    dtype: str
    quantization: Optional[str] = None
    device: str
    fingerprint: Optional[str] = Field(
        default=None,
        description="identity of the weights (hub commit, file digest or folder fingerprint); a result is reused only when it matches",
    )
    bos: Optional[str] = Field(
        default=None,
        description="the BOS policy: added by the tokenizer, prepended (the GPT-2 family, as TransformerLens does), or none",
    )
    n_layers: Optional[int] = Field(
        default=None, ge=1, description="blocks of the model: the depth its curves' layers are read against"
    )


class Environment(BaseModel):
    python: str
    torch: str
    transformers: str
    platform: str
    device_name: str


class Timing(BaseModel):
    seconds_total: float
    tokens_processed: int
    phases: dict[str, float] = Field(
        default_factory=dict,
        description="seconds per kind of model call (score, loglikelihood, generate, collect, stream, logit_lens, finetune; "
        "'(edited)' when interventions were in force) and 'analysis' for everything else (probes, statistics, plots)",
    )


class Curve(BaseModel):
    """One per-layer curve of a run: `values[i]` was measured at layer `layers[i]`.

    The one contract for per-layer numbers that the leaderboard charts and the comparisons
    across models read (`TaskResult.curves`). `metric` names the metric key the curve is the
    per-layer version of, where there is one (the leaderboard draws a finding's effect and its
    control from the curves of those keys), or a name of its own; curves that share `plot` are
    drawn in one comparison plot, one line style per `label`. A value may be None where a layer
    has no number (a fit that did not converge); charts skip it.
    """

    model_config = ConfigDict(extra="forbid")
    metric: str = Field(min_length=1, max_length=200)
    layers: list[int]
    values: list[Optional[float]]
    plot: str = Field(default="", max_length=200, description="curves drawn together in a comparison ('': one plot per metric)")
    label: str = Field(default="", max_length=200, description="the line's name in its plot ('': the metric)")
    xlabel: str = Field(default="layer", max_length=200)
    ylabel: str = Field(default="", max_length=200)

    @model_validator(mode="after")
    def _one_value_per_layer(self) -> Curve:
        if len(self.layers) != len(self.values):
            raise ValueError(f"curve {self.metric}: {len(self.layers)} layers for {len(self.values)} values")
        return self

    @classmethod
    def each(cls, series: dict[str, Sequence[Optional[float]]], layers: Iterable[int], **fields: Any) -> list[Curve]:
        """One curve per {metric key: [value per layer]}, all on the same `layers`."""
        layers = list(layers)
        return [
            cls(metric=key, layers=layers, values=[None if v is None else float(v) for v in values], **fields)
            for key, values in series.items()
        ]


class Results(BaseModel):
    """Everything one (model, task) run produced; the unit a leaderboard row is built from."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = SCHEMA_VERSION
    harness_version: str
    task: TaskRecord
    model: ModelRecord
    metrics: dict[str, Metric]
    unmeasured: dict[str, str] = Field(
        default_factory=dict,
        description="metrics the task measures but could not on this run, each with why (no unit to measure it on: "
        "a finding's facet on one reads 'too few units', n = 0)",
    )
    reference: Optional[Reference] = None
    environment: Environment
    timing: Timing
    created_at: str
    seed: int
    limit: Optional[int] = None
    bootstrap: int = Field(default=1000, ge=1, description="bootstrap resamples behind every interval (harness run --bootstrap)")
    notes: list[str] = Field(default_factory=list)
    curves: list[Curve] = Field(default_factory=list, description="per-layer curves (the charts and comparisons read these)")
    details: dict[str, Any] = Field(default_factory=dict, description="non-headline numbers: counts, settings, per-item tables")
    artifacts: list[str] = Field(default_factory=list, description="plots and samples, relative to the results file")


@dataclass(frozen=True)
class Experiment:
    """What sets a run's numbers apart from the weights: the one definition of "the same experiment".

    The result store names a results file by it and reuses a finished one only when it matches
    (`harness.run.store`), a leaderboard ranks runs together and keeps one row per model by
    parts of it (`board`, `row`), and the runs of a comparison must share its `setup`.
    """

    task: str
    version: str
    config_hash: str
    seed: int
    limit: int | None
    bootstrap: int
    dtype: str
    quantization: str | None

    @classmethod
    def of(cls, results: Results) -> Experiment:
        return cls(
            results.task.name,
            results.task.version,
            results.task.config_hash,
            results.seed,
            results.limit,
            results.bootstrap,
            results.model.dtype,
            results.model.quantization,
        )

    def file_key(self) -> list[Any]:
        """What a results file's name suffix hashes (the task and its version are in the name itself)."""
        return [self.config_hash, self.seed, self.limit, self.bootstrap, self.dtype, self.quantization]

    def board(self) -> tuple[str, str, str]:
        """The runs ranked together: one task version and config (runs with --limit are never ranked)."""
        return (self.task, self.version, self.config_hash)

    def row(self) -> tuple[str, str | None, int]:
        """With the model, one row of a board; a newer run of the same row replaces the older (resamples aside)."""
        return (self.dtype, self.quantization, self.seed)

    def setup(self) -> tuple[str, str, str, int, int | None]:
        """What the runs of a comparison share (precision is each model's own)."""
        return (self.task, self.version, self.config_hash, self.seed, self.limit)


def json_schema(model: type[BaseModel] | None = None, name: str = "results") -> dict[str, Any]:
    """The shipped JSON Schema of a results file (or, given its model and name, of another file kind)."""
    schema = (model or Results).model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"probe-harness/{name}.v{SCHEMA_VERSION}.schema.json"
    return schema


def config_hash(config: dict[str, Any]) -> str:
    """Stable short hash of a task config: results of different configs are never ranked together."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write to a temporary file beside `path`, then rename: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide results from other users and web servers
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_results(path: Path, results: Results) -> None:
    write_atomic(path, results.model_dump_json(indent=2) + "\n")


def read_results(path: Path) -> Results:
    return Results.model_validate_json(path.read_text())


if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2))
