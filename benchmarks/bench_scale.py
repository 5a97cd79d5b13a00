"""The analysis side of every task at the papers' model shapes, on CPU, without the weights.

    python -m benchmarks.bench_scale --shape mistral-7b [--preset full|quick] [--tasks ...] [--layers N]
    python -m benchmarks.bench_scale --fit [--tasks ...]      # growth exponents in width, depth and problems

A model's share of a run (forward passes, generation) runs on the GPU and is what
`benchmarks/gpu_check.sh` measures; everything else (probe fits, neuron scoring and its
re-selecting bootstrap, circle and helix fits with their scrambled nulls, SAE training and
PS-Eval, the logit lens's readout, every interval) runs here, and its cost grows with the
width and depth of the model while the GPU's does not. Each task's real analysis code is
driven with synthetic activations of the exact shape a model of `--shape` gives, with the
structure the analysis looks for planted in them (a circle in the weekday states, a helix in
the number states, digit directions at '=', language-specific neurons, sparse features), so
the code paths a real finding takes are the ones timed.

Each (task, shape, preset) runs in a fresh process: its seconds, and its peak resident memory
above the process's level before the synthetic activations were made, both in all and less
the activations themselves (what the task must hold, `held MiB`). `--layers N` runs the first
N layers of the shape and scales the time by depth (every analysis here loops over layers:
`--fit` measures the depth exponent that says so), and the peak by adding the activations of
the layers not run (what grows with depth). `--fit` runs each task on a grid of
small shapes and fits time ~ width^a depth^b problems^c by least squares on the logs.

The sizes (`TaskSize`) are the tasks' defaults: `full` is the task's config with nothing
changed (its CPU resolution where it has one: polysemy_sae trains on 20k tokens here, on 2M
on a GPU, which `polysemy_sae@gpu` times per step), `quick` is `--preset quick`.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from benchmarks.common import machine, measure_once, rss_mib, table

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Shape:
    """What sets the analysis's cost: layers, residual width, MLP width, vocabulary."""

    n_layers: int
    d_model: int
    d_mlp: int
    vocab: int

    def with_layers(self, n: int) -> "Shape":
        return Shape(n, self.d_model, self.d_mlp, self.vocab)


SHAPES = {
    "smollm2-135m": Shape(30, 576, 1536, 49152),
    "gemma3-270m": Shape(18, 640, 2048, 262144),
    "mistral-7b": Shape(32, 4096, 14336, 32000),  # Mistral-7B-v0.1, Llama-2-7B; Llama-3-8B has a 128k vocabulary
    "llama3-70b": Shape(80, 8192, 28672, 128256),
}


def parse_shape(text: str) -> Shape:
    """A named shape, or LAYERSxD_MODELxD_MLPxVOCAB (e.g. 32x4096x14336x32000)."""
    if text in SHAPES:
        return SHAPES[text]
    parts = text.split("x")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise SystemExit(f"--shape {text}: use one of {', '.join(SHAPES)} or LAYERSxD_MODELxD_MLPxVOCAB")
    return Shape(*map(int, parts))


def ctx(bootstrap: int = 1000) -> Any:
    from harness.api.context import RunContext

    return RunContext(model=None, show_progress=False, bootstrap=bootstrap)


def orthonormal(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    """k random orthonormal directions in R^d, as rows."""
    q, _ = np.linalg.qr(rng.standard_normal((d, k)))
    return q.T


# --- the tasks' analyses -----------------------------------------------------------------------


def circles(shape: Shape, preset: str, m: int, held: list[float]) -> None:
    """weekday_circle / month_circle: circle probe, its three controls and 100 scrambled orders, every layer."""
    from probes.circle import circle_targets, cross_validate_circle, shuffled_labels
    from tasks.circles.task import MONTHS, N_ORDERS, WEEKDAYS, make_problems, orders_metric, probe_metrics, scrambled_order

    c, rng = ctx(), np.random.default_rng(0)
    problems = make_problems(WEEKDAYS if m == 7 else MONTHS, "paper")
    alpha, beta = np.array([p.alpha for p in problems]), np.array([p.beta for p in problems])
    plane = orthonormal(rng, 4, shape.d_model)
    X = {}
    for L in range(shape.n_layers):  # a circle in alpha, one in beta, noise: what the states at alpha hold
        X[L] = (
            3 * circle_targets(alpha, m) @ plane[:2]
            + circle_targets(beta, m) @ plane[2:]
            + rng.standard_normal((len(problems), shape.d_model))
        )
    held.append(sum(x.nbytes for x in X.values()) / 2**20)
    labels = {
        "probe": alpha,
        "shuffled": shuffled_labels(alpha, c.rng(1)),
        "scrambled_order": scrambled_order(alpha, m, c.rng(4)),
    }
    fits = {method: {L: cross_validate_circle(X[L], lab, beta, m, 5) for L in X} for method, lab in labels.items()}
    fits["random_plane"] = {L: cross_validate_circle(X[L], alpha, beta, m, 5, random_plane=c.rng(2)) for L in X}
    targets = {method: circle_targets(labels.get(method, alpha), m) for method in fits}
    _, best = probe_metrics(c, fits, targets)
    orders = np.stack([scrambled_order(alpha, m, c.rng(6 + k)) for k in range(N_ORDERS)])
    orders_metric(c, X, orders, fits["probe"][best["probe"]], alpha, beta, m, 5)


def weekday_circle(shape: Shape, preset: str, held: list[float]) -> None:
    circles(shape, preset, 7, held)


def month_circle(shape: Shape, preset: str, held: list[float]) -> None:
    circles(shape, preset, 12, held)


def number_helix(shape: Shape, preset: str, held: list[float]) -> None:
    """Held-out helix, line, circle, polynomial and PCA fits at every layer, 50 digit relabellings, the full-data fits."""
    from probes.helix import basis_functions, cross_validate, helix_basis, kfold_indices
    from tasks.number_helix.task import FITS, N_RELABELLINGS, NumberHelix, fit_metrics, relabelled_metric, scrambled_digits

    c, rng = ctx(), np.random.default_rng(0)
    a = np.arange(100)
    basis = helix_basis(a)
    W = rng.standard_normal((basis.shape[1], shape.d_model))
    X = {L: 3 * basis @ W + rng.standard_normal((100, shape.d_model)) for L in range(shape.n_layers)}
    held.append(sum(x.nbytes for x in X.values()) / 2**20)
    shuffled = c.rng(1).permutation(a)
    folds = kfold_indices(100, 5, c.rng(2))
    bases = basis_functions((2.0, 5.0, 10.0, 100.0))
    fits: dict[int, dict] = {}
    for L in X:
        fits[L] = {name: cross_validate(X[L], a, folds, f, 100) for name, f in bases.items()}
        fits[L]["helix_shuffled"] = cross_validate(X[L], shuffled, folds, bases["helix"], 100)
        fits[L]["pca9_recon"] = cross_validate(X[L], a, folds, pca_k=9)
    _, best = fit_metrics(c, {k: {L: fits[L][k] for L in X} for k in FITS})
    relabellings = np.stack([scrambled_digits(a, c.rng(10 + k)) for k in range(N_RELABELLINGS)])
    relabelled_metric(c, X, relabellings, fits[best["helix"]]["helix"], folds, bases["helix"], 100)
    for L in X:
        NumberHelix.fit_layer(X[L], a, shuffled, bases, 100, 4)


def multiplication_digits(shape: Shape, preset: str, held: list[float]) -> None:
    """The units-digit probe at '=' and its controls (a's, b's, first digit, shuffled), logistic, per layer."""
    from probes.linear import cross_validate_grid, shuffled_labels
    from probes.selection import best_layers

    c, rng = ctx(), np.random.default_rng(0)
    n = 300 if preset == "quick" else 2000
    layers = [L for L in (0, 4, 8, 12, 16) if L < shape.n_layers] if preset == "quick" else list(range(shape.n_layers))
    a, b = rng.integers(100, 1000, n), rng.integers(100, 1000, n)
    labels = {
        "last_digit": a * b % 10,
        "a_last_digit": a % 10,
        "b_last_digit": b % 10,
        "first_digit": np.array([int(str(p)[0]) for p in a * b]),
    }
    labels["shuffled"] = shuffled_labels(labels["last_digit"], rng)
    dirs = orthonormal(rng, 40, shape.d_model).astype(np.float32)
    onehot = np.concatenate(
        [np.eye(10, dtype=np.float32)[labels[k]] for k in ("last_digit", "a_last_digit", "b_last_digit", "first_digit")], 1
    )
    X = {L: onehot @ dirs * 2 + rng.standard_normal((n, shape.d_model), dtype=np.float32) for L in layers}
    held.append(sum(x.nbytes for x in X.values()) / 2**20)
    fits = cross_validate_grid(X, labels, n_folds=5, seed=0)
    best = best_layers({name: {L: fits[name][L].accuracy for L in layers} for name in labels})
    for name in labels:
        c.metric(fits[name][best[name]].correct.astype(float))


def language_neurons(shape: Shape, preset: str, held: list[float]) -> None:
    """AP of every MLP neuron for six languages, selection, forcing values, the held-out check, and the
    intervals (fixed-selection AP, and edge share and overlap re-selected on every bootstrap draw)."""
    from probes.neurons import default_k
    from tasks.language_neurons.data import LANGS
    from tasks.language_neurons.task import POOL_FACTOR, LanguageNeurons, SentenceResampling, UnitSpace, score_languages

    c, rng = ctx(), np.random.default_rng(0)
    rows, held_rows = 80, 20  # the shipped parallel sample: 80 scoring rows, 20 held out, six languages each
    space = UnitSpace.mlp([shape.d_mlp] * shape.n_layers)
    n_units = space.n_units
    planted = {j: rng.choice(n_units, size=max(1, n_units // 200), replace=False) for j in range(len(LANGS))}

    def pooled_for(n_rows: int) -> tuple[torch.Tensor, np.ndarray]:
        labels = np.repeat(np.arange(len(LANGS)), n_rows)
        x = torch.from_numpy(np.abs(rng.standard_normal((len(labels), n_units), dtype=np.float32)))
        for j, units in planted.items():  # language j's neurons fire on its sentences
            x[np.flatnonzero(labels == j)[:, None], units[None, :]] += 1.5
        return x, labels

    pooled, labels = pooled_for(rows)
    held.append(pooled.numel() * 4 / 2**20)
    k = default_k(n_units)
    scores = score_languages(pooled, labels, k)
    columns = {L: np.concatenate([scores.top[L], scores.bottom[L]]) for L in LANGS}
    pool = min(POOL_FACTOR * k, n_units)
    scoring = SentenceResampling(pooled, labels, columns, ap=scores.ap, k=k, pool=pool)
    del pooled
    held_pooled, held_labels = pooled_for(held_rows)
    heldout = SentenceResampling(held_pooled, held_labels, columns)
    del held_pooled
    units, held_units = np.tile(np.arange(rows), len(LANGS)), np.tile(np.arange(held_rows), len(LANGS))
    LanguageNeurons.detection_metrics(c, scores, scores.force, scoring, heldout, space, shape.n_layers, units, held_units, pool)


def polysemy_steps(shape: Shape, preset: str, gpu: bool) -> tuple[int, int]:
    from tasks.polysemy_sae.task import CPU_BATCH, CPU_TOKENS, GPU_BATCH, GPU_TOKENS

    if preset == "quick":
        return 20_000, 1024
    return (GPU_TOKENS, GPU_BATCH) if gpu else (CPU_TOKENS, CPU_BATCH)


def polysemy_sae(shape: Shape, preset: str, held: list[float], gpu: bool = False, max_steps: int | None = None) -> dict:
    """Train the SAE (expansion 16) on streamed batches of sparse synthetic residuals, then PS-Eval:
    top latents of 200 pairs, the random-start SAE control, raw-site baselines, the pair probe, the cosine."""
    from probes.polysemy import compare_top_units, cosine_baseline, decoder_cosine, probe_baseline
    from probes.sae import SAETrainConfig, SAETrainer, reconstruction
    from tasks.polysemy_sae.task import random_start_sae

    rng = np.random.default_rng(0)
    d = shape.d_model
    atoms = torch.from_numpy(rng.standard_normal((4 * d, d), dtype=np.float32)) / math.sqrt(d)

    def sparse(n: int, seed: int) -> torch.Tensor:  # each token a sum of 8 of 4d feature directions
        g = torch.Generator().manual_seed(seed)
        idx = torch.randint(0, len(atoms), (n, 8), generator=g)
        return (atoms[idx] * torch.rand(n, 8, 1, generator=g)).sum(1) * math.sqrt(d)

    tokens, batch = polysemy_steps(shape, preset, gpu)
    steps = math.ceil(tokens / batch)
    run_steps = steps if max_steps is None else min(steps, max_steps)
    trainer = SAETrainer(d, SAETrainConfig(expansion=16, seed=0), site="resid_pre.0")
    start = time.perf_counter()
    for s in range(run_steps):
        trainer.step(sparse(batch, s))
    train_seconds = time.perf_counter() - start
    sae, _ = trainer.export()  # as the task does: the trainer, its gradients and Adam's moments go
    del trainer
    n = 100  # the shipped pairs: 100, two contexts each
    h = sparse(2 * n, 10_000)
    prompts_tokens = sparse(2 * n * 12, 10_001)  # every token of the pairs' prompts, about 12 each
    words = np.repeat(np.arange(35), 3)[:n]
    labels = rng.integers(0, 2, n)
    with torch.no_grad():
        z = sae.encode(h).numpy()
        z_random = random_start_sae(d, sae.cfg.d_sae, prompts_tokens, seed=1).encode(h).numpy()
    top = compare_top_units(z[:n], z[n:])
    compare_top_units(z_random[:n], z_random[n:])
    hn = h.numpy()
    compare_top_units(hn[:n], hn[n:])
    probe_baseline(hn[:n], hn[n:], labels, words)
    cosine_baseline(hn[:n], hn[n:], labels, words)
    reconstruction(sae, prompts_tokens)
    decoder_cosine(sae.W_dec.detach().numpy(), top.k1, top.k2)
    return {"steps": steps, "steps_run": run_steps, "train_seconds": train_seconds}


def incontext_unlearning(shape: Shape, preset: str, held: list[float]) -> None:
    """The logit lens's readout (final norm, unembedding, log-softmax, ranks) of 50 eval prompts at every layer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.engine.lens import _ranks, unembed
    from harness.engine.models import from_hf

    config = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.d_model,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        hf = LlamaForCausalLM(config)
    hf = hf.to_empty(device="cpu")
    torch.nn.init.normal_(hf.get_input_embeddings().weight, std=0.02)
    hf.tie_weights()
    model = from_hf(hf, _tokenizer())
    n, targets = 50, torch.arange(4)
    states = {L: torch.randn(n, shape.d_model) for L in range(shape.n_layers)}
    held.append(sum(s.numel() * 4 for s in states.values()) / 2**20)
    for L, x in states.items():
        for start in range(0, n, 64):
            logits = unembed(model, x[start : start + 64])
            logits.log_softmax(-1)[:, targets]
            logits.argmax(-1)
            _ranks(logits, targets)


def _tokenizer() -> Any:
    from tests.tiny_models import tiny_tokenizer

    return tiny_tokenizer()


def item_metrics(n_items: int, n_metrics: int) -> None:
    """Tasks whose analysis is intervals over items (no activation of model width): n_metrics bootstraps."""
    c, rng = ctx(), np.random.default_rng(0)
    for _ in range(n_metrics):
        c.metric(rng.random(n_items) < 0.5, unit=np.arange(n_items) // 3)


def scrambled_text(shape: Shape, preset: str, held: list[float]) -> None:
    """Recovery and QA intervals, and the restoration probe: word identity from the last token's state, per layer."""
    from probes.text_metrics import probe_transfer

    rng = np.random.default_rng(0)
    n_words, n_frames = (20, 8) if preset == "quick" else (50, 8)
    word_ids, frame_ids = np.repeat(np.arange(n_words), n_frames), np.tile(np.arange(n_frames), n_words)
    dirs = rng.standard_normal((n_words, shape.d_model)).astype(np.float32)
    for L in range(shape.n_layers):
        orig = dirs[word_ids] + rng.standard_normal((len(word_ids), shape.d_model), dtype=np.float32)
        scrambled = {
            v: dirs[word_ids] * 0.5 + rng.standard_normal((len(word_ids), shape.d_model), dtype=np.float32)
            for v in ("random_100", "keepfirstlast")
        }
        probe_transfer(orig, word_ids, frame_ids, scrambled)
    held.append(0.0)
    item_metrics(100 if preset == "full" else 10, 40)


def code_vs_language(shape: Shape, preset: str, held: list[float]) -> None:
    """Accuracy intervals over items: nothing here has the model's width."""
    held.append(0.0)
    item_metrics(200 if preset == "full" else 30, 30)


TASKS: dict[str, Callable[..., Any]] = {
    "weekday_circle": weekday_circle,
    "month_circle": month_circle,
    "number_helix": number_helix,
    "multiplication_digits": multiplication_digits,
    "language_neurons": language_neurons,
    "polysemy_sae": polysemy_sae,
    "incontext_unlearning": incontext_unlearning,
    "scrambled_text": scrambled_text,
    "code_vs_language": code_vs_language,
}


# --- one measurement per process ----------------------------------------------------------------


def measure_alone(task: str, shape: Shape, preset: str) -> dict:
    """Run one task's analysis in this process and return its time and memory (`--one`)."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    held: list[float] = []
    extra: dict = {}
    base = rss_mib()
    gpu = task.endswith("@gpu")
    fn = TASKS[task.removesuffix("@gpu")]
    kwargs = {"gpu": True, "max_steps": 5} if gpu else {}
    t = measure_once(lambda: extra.update(fn(shape, preset, held, **kwargs) or {}))
    seconds = t.seconds
    if gpu:  # the GPU setting's steps, timed on a few and scaled: the CPU runs 20k tokens, a GPU 2M
        seconds = extra["train_seconds"] / extra["steps_run"] * extra["steps"] + (t.seconds - extra["train_seconds"])
    return {
        "task": task,
        "shape": asdict(shape),
        "preset": preset,
        "seconds": seconds,
        "peak_mib": t.peak_mib,
        "held_mib": sum(held),
        "base_mib": base,
        **extra,
    }


def measure(task: str, shape: Shape, preset: str, layers: int | None = None) -> dict:
    """One task in a fresh process; with `layers`, on that many layers, the time scaled to the whole depth."""
    run_shape = shape.with_layers(min(layers, shape.n_layers)) if layers else shape
    spec = "x".join(str(v) for v in asdict(run_shape).values())
    cmd = [sys.executable, "-m", "benchmarks.bench_scale", "--one", task, "--shape", spec, "--preset", preset]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        return {"task": task, "error": (done.stderr.strip().splitlines() or ["killed"])[-1][:200]}
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if run_shape.n_layers != shape.n_layers:  # the layers' activations grow with depth, the work space does not
        scale = shape.n_layers / run_shape.n_layers
        out["measured_layers"] = run_shape.n_layers
        out["seconds"] *= scale
        out["peak_mib"] += out["held_mib"] * (scale - 1)
        out["held_mib"] *= scale
    return out


def fit_exponents(task: str, preset: str) -> dict[str, float]:
    """time ~ width^a depth^b: least squares on the logs of a grid of small shapes."""
    grid = [(4, 512), (4, 2048), (16, 512)]  # width x4 at fixed depth, depth x4 at fixed width
    xs, ys = [], []
    for n_layers, d in grid:
        r = measure(task, Shape(n_layers, d, int(3.5 * d), 32000), preset)
        if "error" in r:
            continue
        xs.append([1.0, math.log(d), math.log(n_layers)])
        ys.append(math.log(max(r["seconds"], 1e-3)))
    coef, *_ = np.linalg.lstsq(np.array(xs), np.array(ys), rcond=None)
    return {"width": float(coef[1]), "depth": float(coef[2])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="mistral-7b", help=f"{', '.join(SHAPES)} or LAYERSxD_MODELxD_MLPxVOCAB")
    parser.add_argument("--preset", choices=["full", "quick"], default="full")
    parser.add_argument("--tasks", nargs="+", default=[*TASKS, "polysemy_sae@gpu"])
    parser.add_argument("--layers", type=int, help="run this many layers and scale the time to the shape's depth")
    parser.add_argument("--fit", action="store_true", help="fit the growth exponents on a grid of small shapes")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # one measurement, in the child process
    args = parser.parse_args()
    shape = parse_shape(args.shape)
    if args.one:
        print(json.dumps(measure_alone(args.one, shape, args.preset)))
        return
    print(
        f"{args.shape} ({shape.n_layers} layers, d_model {shape.d_model}, d_mlp {shape.d_mlp}, vocab {shape.vocab}), "
        f"--preset {args.preset}, analysis only, one process per row; {machine()}\n"
    )
    if args.fit:
        rows = []
        for task in args.tasks:
            e = fit_exponents(task, args.preset)
            rows.append([task, f"{e['width']:.2f}", f"{e['depth']:.2f}"])
            print(f"{task}: {e}", file=sys.stderr, flush=True)
        print(table(["task", "time ~ width^", "time ~ depth^"], rows))
        return
    rows, out = [], []
    for task in args.tasks:
        r = measure(task, shape, args.preset, args.layers)
        out.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
        if "error" in r:
            rows.append([task, "failed", r["error"], "", ""])
            continue
        note = f"{r['measured_layers']} layers run, scaled" if "measured_layers" in r else ""
        if "steps" in r and r.get("steps_run") != r["steps"]:
            note = (note + "; " if note else "") + f"{r['steps_run']} of {r['steps']} SAE steps run, scaled"
        rows.append([task, f"{r['seconds']:.1f}", f"{r['peak_mib'] / 1024:.2f}", f"{r['held_mib'] / 1024:.2f}", note])
    print(table(["task", "analysis s", "peak GiB", "of which activations held GiB", "note"], rows))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
