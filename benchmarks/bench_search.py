"""The batch-size search on a GPU: `auto` starts at 256 rows and halves on out-of-memory.

    python -m benchmarks.bench_search [--model smollm2-135m] [--cap-gib 3] [--repeat 3] [--n 256] [--longest 1024]

On `--n` prompts of 256 to `--longest` tokens, with the process's share of GPU memory capped at
`--cap-gib` (so that the search has something to find on a large card), for `score` and
`collect`:
- the size `auto` settles on, and its first call's time (the search included: each
  out-of-memory error costs the batch it failed on, the longest, since batches run longest
  first);
- a second call with the size found (a task keeps its sizer per kind of call);
- every fixed size from 8 to 256, or OOM where it does not fit under the cap;
- the largest difference of the auto results from those at a fixed 8 rows (batch composition
  moves bfloat16 results by rounding only).
On a CPU there is nothing to search (auto is a fixed size there) and the cap is ignored.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import machine, measure, measure_once, mixed_prompts, table
from harness.engine.batching import BatchSizer
from harness.engine.models import load_model
from harness.engine.scoring import score
from harness.engine.sites import collect

TARGETS = [1, 2, 3]
FIXED = (8, 16, 32, 64, 128, 256)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--cap-gib", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--longest", type=int, default=1024)
    args = parser.parse_args()
    model = load_model(args.model)
    device = model.input_device
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.cap_gib * 2**30 / total), device)
    prompts = mixed_prompts(model.tokenizer, n=args.n, shortest=min(256, args.longest), longest=args.longest)
    site = f"resid_post.{model.n_layers // 2}"
    calls = {
        "score": lambda b: score(model, prompts, TARGETS, b).logprobs,
        "collect": lambda b: collect(model, prompts, [site], "last", b)[site],
    }
    rows = []
    with torch.inference_mode():
        for name, call in calls.items():
            reference = as_tensor(call(8))
            sizer = BatchSizer("auto", device)
            first = measure_once(lambda: call(sizer)).seconds
            found = sizer.size
            auto = measure(lambda: call(sizer), args.repeat)
            diff = float((as_tensor(call(sizer)) - reference).abs().max())
            rows.append([name, "auto (search included)", f"{first:.2f}", str(found), ""])
            rows.append([name, f"auto, size found ({found})", f"{auto.seconds:.2f}", str(found), f"{diff:.1e}"])
            for size in FIXED:
                try:
                    t = measure(lambda: call(size), args.repeat)
                    rows.append([name, f"fixed {size}", f"{t.seconds:.2f}", str(size), ""])
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    rows.append([name, f"fixed {size}", "OOM", str(size), ""])
    cap = f"GPU memory capped at {args.cap_gib:g} GiB" if device.type == "cuda" else "CPU, no cap"
    print(
        f"{args.model}, {len(prompts)} prompts of {min(256, args.longest)}-{args.longest} tokens, {model.info.dtype}, {cap}; {machine()}\n"
    )
    print(table(["call", "batch size", "seconds", "rows per batch", "max |auto − fixed 8|"], rows))


def as_tensor(result) -> torch.Tensor:
    """Log-probabilities or activations as one float tensor on the CPU, rows in prompt order."""
    return torch.as_tensor(result).float().cpu()


if __name__ == "__main__":
    main()
