"""probe-harness: interpretability experiments on pretrained language models, as a benchmark.

The engine lives here (CLI, model loading, sites and hooks, registry, runner, results);
tasks live in `tasks/`, model-agnostic analysis in `probes/`. What a task plugin needs
is importable from the package itself:

    from harness import Task, TaskResult, metric, register_task
"""

__version__ = "0.1.0"

from harness.errors import UsageError  # noqa: E402
from harness.intervene import Edit  # noqa: E402
from harness.registry import register_task  # noqa: E402
from harness.results import Metric, Reference  # noqa: E402
from harness.stats import metric  # noqa: E402
from harness.task import Task, TaskResult  # noqa: E402

__all__ = ["Edit", "Metric", "Reference", "Task", "TaskResult", "UsageError", "metric", "register_task", "__version__"]
