"""`harness validate`: is this a results file a leaderboard will accept, and if not, what is wrong?

The check uses the pydantic models the shipped JSON Schema is generated from (a test keeps
the two equal), so it needs no extra package and says the same as the schema, one line per
problem, with the field's path.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pydantic import ValidationError

from harness.results import Results


def validate_file(path: Path) -> list[str]:
    """Problems with the results file at `path` (empty when it is valid)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return [f"cannot read: {e.__class__.__name__}: {e}"]
    try:
        data = json.loads(text)
    except ValueError as e:
        return [f"not JSON: {e}"]
    if isinstance(data, dict) and data.get("kind") == "comparison":
        from harness.compare import validate_comparison_file

        return validate_comparison_file(path)
    try:
        results = Results.model_validate(data)
    except ValidationError as e:
        return [f"{'.'.join(map(str, err['loc'])) or '(top level)'}: {err['msg']}" for err in e.errors()]
    problems = []
    for key, m in results.metrics.items():
        for name in ("value", "ci_low", "ci_high"):
            if not math.isfinite(getattr(m, name)):
                problems.append(f"metrics.{key}.{name}: not a finite number")
    return problems
