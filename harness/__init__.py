"""probe-harness: interpretability experiments on pretrained language models, as a benchmark.

The tree is the design's map:

    harness/api/      the plugin contract: Task, option, TaskResult, Finding, the registry, RunContext
    harness/engine/   everything that touches a model: loading, layouts, sites, requests, training
    harness/run/      the command line and the runner (planning, result store, execution)
    harness/results/  the results contract: schema, statistics, comparisons, the one validator
    harness/report/   leaderboards, findings, charts, the page, publishing (no torch)

Tasks live in `tasks/`, model-agnostic analysis in `probes/`. Everything a task plugin needs
is importable from the package itself, and the built-in tasks use nothing else:

    from harness import Task, TaskResult, option, register_task

`RunContext` is what `Task.run` receives (scores, log-likelihoods, generation, activations,
interventions, intervals, artifacts); `Edit` is one intervention; `tokens` holds the token
helpers (the token of a character span, BOS-or-EOS).

Every name loads on first use, so reading results and building leaderboards never imports
torch. The modules' former flat paths (`harness.models`, `harness.sites`, ...) still import,
as the same module objects, for code written against them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "RunContext": "harness.api.context",
    "Facet": "harness.api.task",
    "Finding": "harness.api.task",
    "NoConfig": "harness.api.task",
    "Task": "harness.api.task",
    "TaskResult": "harness.api.task",
    "ModelShape": "harness.api.task",
    "Workload": "harness.api.task",
    "check_template": "harness.api.task",
    "option": "harness.api.task",
    "register_task": "harness.api.registry",
    "UsageError": "harness.errors",
    "load_hub_dataset": "harness.engine.hub_data",
    "added_tokens": "harness.engine.added_tokens",
    "add_special_tokens": "harness.engine.added_tokens",
    "Edit": "harness.engine.intervene",
    "Lens": "harness.engine.lens",
    "Model": "harness.engine.models",
    "Loglikelihoods": "harness.engine.scoring",
    "Scores": "harness.engine.scoring",
    "TrainConfig": "harness.engine.train",
    "TrainReport": "harness.engine.train",
    "FineTuneResult": "harness.engine.train",
    "load_sae": "harness.engine.sae_io",
    "save_sae": "harness.engine.sae_io",
    "Curve": "harness.results.records",
    "Metric": "harness.results.records",
    "read_results": "harness.report.table",
    "Reference": "harness.results.records",
    "metric": "harness.results.stats",
}
_MODULES = {"tokens": "harness.engine.tokens"}

# The flat layout's module paths, for code written before the sub-packages.
MOVED = {
    "harness.task": "harness.api.task",
    "harness.registry": "harness.api.registry",
    "harness.context": "harness.api.context",
    **{
        f"harness.{m}": f"harness.engine.{m}"
        for m in (
            "models",
            "bundled",
            "layout",
            "sites",
            "scoring",
            "intervene",
            "batching",
            "generation",
            "lens",
            "train",
            "distributed",
            "tokens",
            "sae_io",
            "hub_data",
            "optim",
        )
    },
    "harness.cli": "harness.run.cli",
    "harness.runner": "harness.run.runner",
    "harness.stats": "harness.results.stats",
    "harness.compare": "harness.results.compare",
    "harness.validate": "harness.results.validate",
    "harness.leaderboard": "harness.report.build",
    "harness.leaderboard_page": "harness.report.page",
    "harness.findings": "harness.report.findings",
    "harness.charts": "harness.report.charts",
    "harness.publish": "harness.report.publish",
}

__all__ = sorted([*_EXPORTS, *_MODULES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    raise AttributeError(f"module 'harness' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import harness.models` gives the module now at `harness.engine.models` (the same object)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name in MOVED or any(name.startswith(old + ".") for old in MOVED):
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec: Any) -> Any:
        old = next(o for o in MOVED if spec.name == o or spec.name.startswith(o + "."))
        module = importlib.import_module(MOVED[old] + spec.name[len(old) :])
        self._spec = module.__spec__
        return module

    def exec_module(self, module: Any) -> None:
        module.__spec__ = self._spec  # the module keeps its own name and spec


sys.meta_path.insert(0, _MovedModules())
