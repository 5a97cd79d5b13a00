"""Every task end to end, with the time per phase the runner records, under several thread settings.

    python -m benchmarks.bench_tasks [--model gemma3-270m] [--preset quick] [--threads default,1,2] [--task T ...] [--anchor]

Each (task, thread setting) runs in a fresh process (`harness run --force`), so settings do not
leak into each other; `default` is what a user gets with no environment variable set, and the
benchmark shows whether it is ever slower than the best fixed setting. Prints one Markdown table:
seconds per setting, the default's ratio to the best fixed one, and the default run's phases
(from the results file's `timing.phases`). `--anchor` also times, under each thread setting, the
plain early-stop hook of `bench_capture.py` (middle layer, last token, 128 prompts, batch 16) and
gives each task's time as a multiple of it: a yardstick that moves with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import table

ROOT = Path(__file__).resolve().parent.parent


def run(model: str, task: str, preset: str, threads: str, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    if threads != "default":
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
    folder = out / threads
    cmd = [
        sys.executable,
        "-m",
        "harness.run.cli",
        "run",
        "--model",
        model,
        "--task",
        task,
        "--preset",
        preset,
        "--force",
        "--no-progress",
        "--output-dir",
        str(folder),
    ]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    (path,) = [p for p in folder.rglob(f"{task}*.json") if p.is_file() and p.parent.name != task]
    return json.loads(path.read_text())["timing"]


ANCHOR = """
import torch
from benchmarks.bench_capture import early_stop_hook
from benchmarks.common import measure, mixed_prompts, padded_batches
from harness.engine.models import load_model
model = load_model({model!r})
batches = padded_batches(model.tokenizer, mixed_prompts(model.tokenizer), 16, model.input_device)
with torch.inference_mode():
    print(measure(lambda: early_stop_hook(model, batches, [model.n_layers // 2], True), 3).seconds)
"""


def anchor(model: str, threads: str) -> float:
    """Seconds of the early-stop hook on the capture benchmark's prompts, in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    if threads != "default":
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
    done = subprocess.run(
        [sys.executable, "-c", ANCHOR.format(model=model)], check=True, env=env, cwd=ROOT, capture_output=True, text=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--threads", default="default,1,2")
    parser.add_argument("--task", action="append")
    parser.add_argument("--anchor", action="store_true")
    args = parser.parse_args()
    from harness.api.registry import all_tasks

    tasks = args.task or sorted(all_tasks())
    settings = args.threads.split(",")
    rows = []
    hook = {s: anchor(args.model, s) for s in settings} if args.anchor else {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in tasks:
            timings = {s: run(args.model, task, args.preset, s, Path(tmp) / task) for s in settings}
            seconds = {s: t["seconds_total"] for s, t in timings.items()}
            fixed = [s for s in settings if s != "default"]
            ratio = f"{seconds['default'] / min(seconds[s] for s in fixed):.2f}" if "default" in seconds and fixed else ""
            phases = timings.get("default", timings[settings[0]]).get("phases", {})
            shown = ", ".join(f"{k} {v:.0f}" for k, v in sorted(phases.items(), key=lambda kv: -kv[1]))
            multiples = [f"{seconds[s] / hook[s]:.1f}×" for s in settings] if hook else []
            rows.append([task, *(f"{seconds[s]:.0f}" for s in settings), ratio, *multiples, shown])
    print(
        f"{args.model}, --preset {args.preset}, seconds of task time"
        + ("; early-stop hook " + ", ".join(f"{hook[s]:.2f} s ({s})" for s in settings) if hook else "")
        + "\n"
    )
    print(
        table(
            [
                "task",
                *(f"threads {s}" for s in settings),
                "default ÷ best fixed",
                *(f"÷ hook ({s})" for s in settings if hook),
                "phases (default), s",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
