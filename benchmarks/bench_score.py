"""Scoring, log-likelihoods and generation: the harness against a plain transformers loop.

    python benchmarks/bench_score.py [--model smollm2-135m] [--repeat 3] [--batch-size 16]

On 128 mixed-length prompts (9-68 tokens), in one process:
- `score` against a plain `logits_to_keep=1` forward on padded batches in the prompts' own
  order (about half of whose tokens are padding, so length sorting alone bounds the speed-up
  near 2x); `score(full_vocab=False)` too, the patching runs' target-only unembedding;
- `loglikelihood` of a 6-token continuation against a plain full-logits forward;
- `generate` (16 new tokens, greedy) against `model.generate` on the same padded batches;
- `--batch-size auto` against fixed sizes 8, 16 and 32 for `score` and `collect`, and 16, 32
  and 64 for `generate` (64 prompts, 8 tokens: decoding wants wider batches on a CPU).
`--calls` picks some of: score, targets, loglikelihood, generate, batch (all by default).
Prints a Markdown table of seconds and ratios.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import machine, measure_together, mixed_prompts, padded_batches, table
from harness.models import load_model
from harness.scoring import generate, loglikelihood, score
from harness.sites import collect

TARGETS = [1, 2, 3]


def plain_score(model, batches) -> list[torch.Tensor]:
    out = []
    for b in batches:
        logits = model.hf(**b, logits_to_keep=1).logits[:, -1].float()
        out.append(logits.log_softmax(-1)[:, TARGETS])
    return out


def plain_loglikelihood(model, batches, n_cont: int) -> list[torch.Tensor]:
    out = []
    for b in batches:
        logits = model.hf(**b).logits.float()
        ids = b["input_ids"][:, -n_cont:]
        lp = logits[:, -n_cont - 1 : -1].log_softmax(-1).gather(-1, ids[..., None])[..., 0]
        out.append(lp.sum(-1))
    return out


def plain_generate(model, batches, n: int) -> list[torch.Tensor]:
    return [model.hf.generate(**b, max_new_tokens=n, do_sample=False, pad_token_id=model.tokenizer.pad_token_id)
            for b in batches]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--calls", default="score,targets,loglikelihood,generate,batch")
    args = parser.parse_args()
    calls = set(args.calls.split(","))
    model = load_model(args.model)
    tok = model.tokenizer
    prompts = mixed_prompts(tok)
    size = args.batch_size
    left = padded_batches(tok, prompts, size)  # the harness tokenizer pads on the left, as generation needs
    cont = " and then the story ended"
    n_cont = len(tok(prompts[0] + cont)["input_ids"]) - len(tok(prompts[0])["input_ids"])
    with_cont = padded_batches(tok, [p + cont for p in prompts], size)
    rows = []
    with torch.inference_mode():
        comparisons = [
            ("score", "score", lambda: score(model, prompts, TARGETS, size), lambda: plain_score(model, left)),
            ("targets", "score, target logits only", lambda: score(model, prompts, TARGETS, size, full_vocab=False),
             lambda: plain_score(model, left)),
            ("loglikelihood", "loglikelihood", lambda: loglikelihood(model, prompts, [cont] * len(prompts), size),
             lambda: plain_loglikelihood(model, with_cont, n_cont)),
            ("generate", "generate, 16 tokens", lambda: generate(model, prompts, 16, size),
             lambda: plain_generate(model, left, 16)),
        ]
        for key, name, ours_fn, plain_fn in comparisons:
            if key not in calls:
                continue
            timed = measure_together({"ours": ours_fn, "plain": plain_fn}, args.repeat)
            ours, plain = timed["ours"], timed["plain"]
            rows.append([name, f"{ours.seconds:.2f}", f"{plain.seconds:.2f}", f"{plain.seconds / ours.seconds:.2f}×"])
        sizes = {}
        for call, fn, fixed in (("score", lambda b: score(model, prompts, TARGETS, b), (8, 16, 32)),
                                ("collect", lambda b: collect(model, prompts, [f"resid_post.{model.n_layers // 2}"], "last", b),
                                 (8, 16, 32)),
                                ("generate", lambda b: generate(model, prompts[:64], 8, b), (16, 32, 64))):
            if "batch" not in calls:
                break
            timed = measure_together({str(b): (lambda b=b: fn(b)) for b in ("auto", *fixed)}, args.repeat)
            for b in ("auto", *fixed):
                sizes[(call, b)] = timed[str(b)].seconds
            best = min((sizes[(call, b)], b) for b in fixed)
            rows.append([f"{call}, batch auto vs best fixed ({best[1]})", f"{sizes[(call, 'auto')]:.2f}", f"{best[0]:.2f}",
                         f"{best[0] / sizes[(call, 'auto')]:.2f}×"])
    print(f"{args.model}, {len(prompts)} prompts, batch {size}; {machine()}\n")
    print(table(["call", "harness s", "plain s", "speed-up"], rows))


if __name__ == "__main__":
    main()
