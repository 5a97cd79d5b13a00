"""The results contract: what a run writes, and the rules a file must keep to be trusted.

`records` holds the pydantic models of a results file and their JSON Schema (shipped in
`schema/`), `stats` the one bootstrap behind every interval, `compare` the paired comparison
across models, and `validate` the one validator that `harness validate`, `leaderboard build`
and a run apply alike. Nothing here imports the engine (or torch): reading and checking
results needs neither.

The package re-exports the records, so `from harness.results import Results` reads as before.
"""

from harness.results.records import (
    SCHEMA_PATH,
    SCHEMA_VERSION,
    TIMING_FIELDS,
    Curve,
    Environment,
    Experiment,
    Metric,
    ModelRecord,
    Reference,
    Results,
    TaskRecord,
    Timing,
    config_hash,
    json_schema,
    read_results,
    write_atomic,
    write_results,
)

__all__ = [
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "TIMING_FIELDS",
    "Curve",
    "Environment",
    "Experiment",
    "Metric",
    "ModelRecord",
    "Reference",
    "Results",
    "TaskRecord",
    "Timing",
    "config_hash",
    "json_schema",
    "read_results",
    "write_atomic",
    "write_results",
]
