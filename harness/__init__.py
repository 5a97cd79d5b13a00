"""probe-harness: interpretability experiments on pretrained language models, as a benchmark.

The engine lives here (CLI, model loading, sites and hooks, registry, runner, results);
tasks live in `tasks/`, model-agnostic analysis in `probes/`.
"""

__version__ = "0.1.0"
