"""Engine speed on a bundled model: what length-sorted batching, early stopping and
logits_to_keep buy. Run by hand, never by CI:

    python -m benchmarks.bench_engine [--model smollm2-135m] [--repeat 3]

Prints seconds per call (best of --repeat) for each variant on the 193 weekday and month
prompts, and on the 1584 month_circle patching runs.
"""

from __future__ import annotations

import argparse
import time

import torch

from harness.engine.models import load_model
from harness.engine.scoring import score
from harness.engine.sites import collect
from tasks.circles.task import MONTHS, WEEKDAYS, make_problems, name_positions


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    start = time.perf_counter()
    model = load_model(args.model)
    print(f"load {args.model}: {time.perf_counter() - start:.1f} s ({model.n_layers} layers, {model.info.device})")
    prompts = [p.prompt for p in make_problems(WEEKDAYS, "paper") + make_problems(MONTHS, "paper")]
    n = model.n_layers
    months = make_problems(MONTHS, "paper")
    patch_prompts = [p.prompt for p in months for _ in range(11)]  # the month_circle patching runs
    patch_at = [pos for pos in name_positions(model.tokenizer, months) for _ in range(11)]
    rows = [
        ("collect resid_post.0 (stops after block 0)", lambda: collect(model, prompts, ["resid_post.0"])),
        (f"collect resid_post.{n // 2} (stops half way)", lambda: collect(model, prompts, [f"resid_post.{n // 2}"])),
        (f"collect all {n} layers", lambda: collect(model, prompts, [f"resid_post.{L}" for L in range(n)])),
        ("collect logits (whole model, all positions)", lambda: collect(model, prompts, ["logits"])),
        ("score, batch auto (logits at the last position)", lambda: score(model, prompts, [1, 2, 3])),
        ("score, batch 1", lambda: score(model, prompts, [1, 2, 3], batch_size=1)),
        ("score 1584 patching runs", lambda: score(model, patch_prompts, [1, 2, 3])),
        (
            "score 1584 patching runs, shared prefixes reused",
            lambda: score(model, patch_prompts, [1, 2, 3], prefix_lengths=patch_at),
        ),
    ]
    with torch.inference_mode():
        for label, fn in rows:
            print(f"{label:<52} {best_of(args.repeat, fn):7.2f} s")


if __name__ == "__main__":
    main()
