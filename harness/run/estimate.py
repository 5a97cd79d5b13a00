"""`harness run --dry-run`: what a run will cost, from the model's config alone, before 15 GB of weights load.

For each (model, task) it prints the task's `Workload` on the model's shape (forward tokens,
generated tokens, the activations it holds) and an estimate of its analysis: the CPU-side
work (probe fits, neuron scoring and its bootstrap, SAE training on a CPU) measured by
`benchmarks/bench_scale.py` at the Mistral-7B shape and scaled by the growth exponents that
benchmark fitted. The model's share depends on the GPU; the forward tokens and 2 x parameters
FLOPs per token say how large it is.

The config is read as `from_pretrained` would (a hub model from the local cache, a local
folder's config.json, a GGUF file's metadata); no weights are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.api.task import ModelShape, Workload
from harness.errors import UsageError


@dataclass(frozen=True)
class AnalysisCost:
    """One task's analysis as bench_scale measured it: seconds and peak GiB at a reference shape, and growth."""

    seconds: float  # at REFERENCE, the full default config, 2 CPU cores
    peak_gib: float  # resident memory above the process's level, activations included
    width: float  # seconds ~ d^width (d_model, or d_mlp for neuron scoring)
    depth: float  # seconds ~ n_layers^depth


REFERENCE = ModelShape(n_layers=32, d_model=4096, d_mlp=14336, vocab=32000)

# benchmarks/bench_scale.py at the Mistral-7B shape (seconds and peak, full default configs, 2 CPU
# cores), the exponents from the same runs at the SmolLM2-135M shape (30 x 576, MLP 1,536): docs/scaling.md,
# "Every task at 7B and 70B". language_neurons grows with its units (layers x MLP width), 1.44 in each.
ANALYSIS_COSTS: dict[str, AnalysisCost] = {
    "weekday_circle": AnalysisCost(seconds=16.6, peak_gib=0.08, width=0.76, depth=1.0),
    "month_circle": AnalysisCost(seconds=185.3, peak_gib=0.19, width=0.98, depth=1.0),
    "number_helix": AnalysisCost(seconds=75.3, peak_gib=0.15, width=0.94, depth=1.0),
    "multiplication_digits": AnalysisCost(seconds=653.5, peak_gib=1.18, width=0.88, depth=1.0),
    "language_neurons": AnalysisCost(seconds=2776.0, peak_gib=1.43, width=1.44, depth=1.44),
    "polysemy_sae": AnalysisCost(seconds=760.1, peak_gib=13.78, width=1.93, depth=0.0),
    "incontext_unlearning": AnalysisCost(seconds=14.3, peak_gib=0.72, width=0.2, depth=1.0),
    "scrambled_text": AnalysisCost(seconds=44.6, peak_gib=0.22, width=0.24, depth=1.0),
    "code_vs_language": AnalysisCost(seconds=1.0, peak_gib=0.01, width=0.0, depth=0.0),
}
WIDTH_OF = {"language_neurons": "d_mlp"}  # which width a task's analysis grows with (default d_model)


def analysis_seconds(task: str, shape: ModelShape) -> float | None:
    """The analysis's seconds on `shape` (the task's default config) from its cost at REFERENCE, or None
    for a task bench_scale does not know."""
    cost = ANALYSIS_COSTS.get(task)
    if cost is None:
        return None
    width = WIDTH_OF.get(task, "d_model")
    ratio = getattr(shape, width) / getattr(REFERENCE, width)
    return cost.seconds * ratio**cost.width * (shape.n_layers / REFERENCE.n_layers) ** cost.depth


def shape_of(config: Any) -> ModelShape:
    """The shape a transformers config describes (a multimodal config's text part)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    get = lambda *names: next((getattr(text, n) for n in names if getattr(text, n, None) is not None), None)  # noqa: E731
    n_layers, d_model = get("num_hidden_layers", "n_layer", "num_layers"), get("hidden_size", "n_embd", "d_model")
    vocab = get("vocab_size")
    if not (n_layers and d_model and vocab):
        raise UsageError(
            f"the config of {getattr(config, '_name_or_path', 'this model')} names no layer count, width or "
            "vocabulary: --dry-run cannot size it"
        )
    d_mlp = get("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size") or 4 * d_model
    heads = get("num_attention_heads", "n_head") or 1
    head_dim = get("head_dim") or d_model // heads
    kv = get("num_key_value_heads") or heads
    attention = 2 * d_model * heads * head_dim + 2 * d_model * kv * head_dim  # q and o, k and v (grouped queries)
    mlp = (3 if getattr(text, "intermediate_size", None) else 2) * d_model * d_mlp  # gated (Llama-style) or not
    tied = bool(getattr(text, "tie_word_embeddings", False))
    n_params = n_layers * (attention + mlp) + (1 if tied else 2) * vocab * d_model
    return ModelShape(int(n_layers), int(d_model), int(d_mlp), int(vocab), int(n_params))


def read_config(spec: str, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """The model's transformers config, without its weights: cache, folder or GGUF metadata."""
    from transformers import AutoConfig

    from harness.engine.identity import locate

    found = locate(spec, revision)
    try:
        if found.source in ("bundled", "gguf"):
            path = Path(found.where)
            return AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
        return AutoConfig.from_pretrained(found.where, revision=found.revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        where = (
            "the local cache (download it once, or point --model at a folder with its config.json)"
            if found.source == "hub"
            else found.where
        )
        raise UsageError(f"no config for {spec} in {where}: {str(e).splitlines()[0][:120]}") from None


@dataclass
class Estimate:
    """One row of the dry run."""

    model: str
    task: str
    workload: Workload | None
    analysis_seconds: float | None
    model_flops: float | None  # 2 x parameters x forward tokens (generation counted as one token per step)


def estimate(spec: Any) -> list[Estimate]:
    """The dry run of a `RunSpec`: one Estimate per (model, task), tasks planned as a real run plans them
    (for `--device cuda`, or `--device-map`, as on a GPU even where this machine has none)."""
    from harness.run.plan import plan_tasks

    load = spec.load
    planning = "cuda" if (load.device_map or load.load_in_4bit or load.load_in_8bit) else None
    if load.device is not None:
        planning = load.device.split(":")[0]  # a run planned for a GPU, from a machine without one
    planned = plan_tasks(spec, device=planning)
    rows = []
    for model in spec.models:
        shape = shape_of(read_config(model, spec.load.revision, spec.load.trust_remote_code))
        for task, config in planned:
            work = task.workload(config, shape)
            tokens = (work.forward_tokens + work.generated_tokens) if work else None
            rows.append(
                Estimate(
                    model,
                    task.name,
                    work,
                    analysis_seconds(task.name, shape),
                    2.0 * shape.n_params * tokens if tokens is not None and shape.n_params else None,
                )
            )
    return rows


def human(n: float | None, unit: str = "") -> str:
    if n is None:
        return "?"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 172800 else f"{seconds / 86400:.1f} days"


def format_estimates(rows: list[Estimate]) -> str:
    """The dry run's table: one line per (model, task)."""
    header = [
        "model",
        "task",
        "forward tokens",
        "generated",
        "activations held",
        "model FLOPs",
        "analysis, default config (2 CPU cores)",
    ]
    lines = [
        [
            r.model,
            r.task,
            human(r.workload.forward_tokens) if r.workload else "?",
            human(r.workload.generated_tokens) if r.workload else "?",
            human(r.workload.activation_bytes, "B") if r.workload else "?",
            human(r.model_flops),
            duration(r.analysis_seconds),
        ]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    notes = sorted({f"{r.task}: {r.workload.notes}" for r in rows if r.workload and r.workload.notes})
    total = sum(r.analysis_seconds or 0 for r in rows)
    out.append(
        f"\nanalysis in all: about {duration(total)} on 2 CPU cores (benchmarks/bench_scale.py); "
        "the model's share depends on the GPU. Nothing was loaded or run."
    )
    out += notes
    return "\n".join(out)
