"""Peak memory of the two corpus-sized reads as the corpus grows 10x: neuron scoring and SAE streaming.

    python -m benchmarks.bench_memory [--model smollm2-135m] [--sentences 60] [--factor 10]

Each (read, corpus size) runs in a fresh process that loads the model and hands the heap freed
while loading back to the system (`malloc_trim`), so the numbers are the read's own: one call,
no warm-up, its peak resident memory above the level after loading, sampled every 5 ms, with
what it returns kept.
- neuron scoring, as language_neurons reads it: `collect` of every MLP neuron of every layer
  with `reduce="mean"` (positions "all"), on the shipped six-language sentences, repeated to the
  corpus size. The result, one float32 mean per (sentence, neuron), is the table the average
  precision ranks whole, so it grows with the sentences by design; it prints beside the peak,
  with the token-level activations the hook never keeps: the peak less the table must stay flat;
- SAE streaming, as polysemy_sae trains: `stream` of one residual site over the shipped corpus,
  repeated to the size, each batch dropped as a trainer drops it after its step.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import machine, measure_once, table
from harness.engine.models import load_model
from harness.engine.sites import collect, stream

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "tasks"


def neuron_scoring(model: Any, n: int) -> dict:
    """language_neurons' read: every MLP neuron's mean over each of `n` sentences."""
    rows = [json.loads(line) for line in (TASKS / "language_neurons" / "data" / "parallel_6lang.jsonl").read_text().splitlines()]
    pool = [row[lang] for row in rows for lang in ("en", "de", "fr", "es", "zh", "ja")]
    texts = [pool[i % len(pool)] for i in range(n)]
    sites = [f"mlp_act.{L}" for L in range(model.n_layers)]
    got: dict[str, torch.Tensor] = {}
    t = measure_once(lambda: got.update(collect(model, texts, sites, "all", reduce="mean")))
    width = sum(v.shape[1] for v in got.values())
    tokens = sum(len(x) for x in model.tokenizer(texts)["input_ids"])
    return dict(
        peak=t.peak_mib, seconds=t.seconds, table=n * width * 4 / 2**20, tokens=tokens, token_level=tokens * width * 4 / 2**20
    )


def sae_streaming(model: Any, n: int) -> dict:
    """polysemy_sae's read: one residual site over `n` corpus lines, each batch dropped after use."""
    lines = [x for x in (TASKS / "polysemy_sae" / "data" / "corpus.txt").read_text().splitlines() if x.strip()]
    texts = [lines[i % len(lines)] for i in range(n)]
    site = f"resid_post.{model.n_layers // 2}"
    count = [0]

    def run() -> None:
        for batch in stream(model, iter(texts), site, max_tokens=64):
            count[0] += len(batch)

    t = measure_once(run)
    return dict(peak=t.peak_mib, seconds=t.seconds, table=0.0, tokens=count[0], token_level=count[0] * model.d_model * 4 / 2**20)


READS = {"neurons": neuron_scoring, "stream": sae_streaming}


def read_alone(model_name: str, what: str, n: int) -> None:
    """One read in this process (`--read`): load, trim the heap loading freed, measure, print JSON."""
    model = load_model(model_name)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with torch.inference_mode():
        print(json.dumps(READS[what](model, n)))


def read(model: str, what: str, n: int) -> dict:
    """One read in a fresh process, so no other read's memory is counted."""
    cmd = [sys.executable, "-m", "benchmarks.bench_memory", "--model", model, "--read", what, "--n", str(n)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--sentences", type=int, default=60)
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--read", choices=sorted(READS), help=argparse.SUPPRESS)  # one read, in the child process
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:
        read_alone(args.model, args.read, args.n)
        return
    rows = []
    for what, label in (("neurons", "neuron scoring (collect, reduce=mean)"), ("stream", "SAE streaming (stream)")):
        for n in (args.sentences, args.sentences * args.factor):
            r = read(args.model, what, n)
            rows.append(
                [
                    label,
                    str(n),
                    str(r["tokens"]),
                    f"{r['seconds']:.1f}",
                    f"{r['peak']:.0f}",
                    f"{r['table']:.0f}",
                    f"{r['token_level']:.0f}",
                ]
            )
    print(f"{args.model}, one process per row, peak resident memory above the loaded model; {machine()}\n")
    print(
        table(
            [
                "read",
                "texts",
                "tokens",
                "seconds",
                "peak extra MiB",
                "of which the result table MiB",
                "token-level activations MiB (never held)",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
