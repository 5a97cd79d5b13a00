"""probe-harness: interpretability experiments on pretrained language models, as a benchmark.

The engine lives here (CLI, model loading, sites and hooks, registry, runner, results);
tasks live in `tasks/`, model-agnostic analysis in `probes/`. Everything a task plugin
needs is importable from the package itself, and the built-in tasks use nothing else:

    from harness import Task, TaskResult, option, register_task

`RunContext` is what `Task.run` receives (scores, log-likelihoods, generation, activations,
interventions, intervals, artifacts); `Edit` is one intervention; `tokens` holds the token
helpers (the token of a character span, BOS-or-EOS).
"""

__version__ = "0.1.0"

from harness import tokens  # noqa: E402
from harness.context import RunContext  # noqa: E402
from harness.errors import UsageError  # noqa: E402
from harness.hub_data import load_hub_dataset  # noqa: E402
from harness.intervene import Edit  # noqa: E402
from harness.lens import Lens  # noqa: E402
from harness.models import Model  # noqa: E402
from harness.registry import register_task  # noqa: E402
from harness.results import Metric, Reference  # noqa: E402
from harness.scoring import Loglikelihoods, Scores  # noqa: E402
from harness.stats import metric  # noqa: E402
from harness.task import Finding, NoConfig, Task, TaskResult, check_template, option  # noqa: E402

# Parts with heavy imports (peft, safetensors) load on first use, so `harness list` stays quick.
_LAZY = {
    "TrainConfig": "harness.train", "TrainReport": "harness.train", "FineTuneResult": "harness.train",
    "load_sae": "harness.sae_io", "save_sae": "harness.sae_io",
}

__all__ = [
    "Edit", "FineTuneResult", "Finding", "check_template", "Lens", "Loglikelihoods", "Metric", "Model", "NoConfig", "Reference", "RunContext", "Scores",
    "Task", "TaskResult", "TrainConfig", "TrainReport", "UsageError", "load_sae", "metric", "option", "register_task",
    "save_sae", "tokens", "load_hub_dataset", "__version__",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
