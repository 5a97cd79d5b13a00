"""Scoring, log-likelihoods and generation: the harness against a plain transformers loop.

    python -m benchmarks.bench_score [--model smollm2-135m] [--repeat 3] [--batch-size 16]

On 128 mixed-length prompts (9-68 tokens), in one process:
- `score` against a plain `logits_to_keep=1` forward on padded batches in the prompts' own
  order (about half of whose tokens are padding, so length sorting alone bounds the speed-up
  near 2x); `score(full_vocab=False)` too, the patching runs' target-only unembedding;
- `loglikelihood` of a 6-token continuation against a plain full-logits forward;
- `generate` (16 new tokens, greedy) against `model.generate` on the same padded batches;
- `--batch-size auto` against fixed sizes 8, 16 and 32 for `score` and `collect`, and 16, 32
  and 64 for `generate` (64 prompts, 8 tokens: decoding wants wider batches on a CPU); on a
  GPU against 16, 64 and 256 for all three.
`--calls` picks some of: score, targets, loglikelihood, generate, batch (all by default).
Runs on the GPU where there is one (bfloat16, the harness's default there). Prints a Markdown
table of seconds and ratios, with the padding bound of the forward-pass calls: the plain
loop's padded tokens over the harness's (`common.padding_bound`), what length sorting alone
can gain.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import machine, measure_together, mixed_prompts, padded_batches, padding_bound, table
from harness.engine.models import load_model
from harness.engine.scoring import generate, loglikelihood, score
from harness.engine.sites import collect

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
    return [model.hf.generate(**b, max_new_tokens=n, do_sample=False, pad_token_id=model.tokenizer.pad_token_id) for b in batches]


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
    device = model.input_device
    left = padded_batches(tok, prompts, size, device)  # the harness tokenizer pads on the left, as generation needs
    cont = " and then the story ended"
    n_cont = len(tok(prompts[0] + cont)["input_ids"]) - len(tok(prompts[0])["input_ids"])
    with_cont = padded_batches(tok, [p + cont for p in prompts], size, device)
    bound = padding_bound(tok, prompts, size)
    bound_cont = padding_bound(tok, [p + cont for p in prompts], size)
    rows = []
    with torch.inference_mode():
        comparisons = [
            ("score", "score", lambda: score(model, prompts, TARGETS, size), lambda: plain_score(model, left)),
            (
                "targets",
                "score, target logits only",
                lambda: score(model, prompts, TARGETS, size, full_vocab=False),
                lambda: plain_score(model, left),
            ),
            (
                "loglikelihood",
                "loglikelihood",
                lambda: loglikelihood(model, prompts, [cont] * len(prompts), size),
                lambda: plain_loglikelihood(model, with_cont, n_cont),
            ),
            (
                "generate",
                "generate, 16 tokens",
                lambda: generate(model, prompts, 16, size),
                lambda: plain_generate(model, left, 16),
            ),
        ]
        for key, name, ours_fn, plain_fn in comparisons:
            if key not in calls:
                continue
            timed = measure_together({"ours": ours_fn, "plain": plain_fn}, args.repeat)
            ours, plain = timed["ours"], timed["plain"]
            gain = plain.seconds / ours.seconds
            limit = {"score": bound, "targets": bound, "loglikelihood": bound_cont}.get(key)
            of_bound = f"{limit:.2f}× ({gain / limit:.0%})" if limit else ""
            rows.append([name, f"{ours.seconds:.2f}", f"{plain.seconds:.2f}", f"{gain:.2f}×", of_bound])
        sizes = {}
        gpu = device.type == "cuda"
        for call, fn, fixed in (
            ("score", lambda b: score(model, prompts, TARGETS, b), (16, 64, 256) if gpu else (8, 16, 32)),
            (
                "collect",
                lambda b: collect(model, prompts, [f"resid_post.{model.n_layers // 2}"], "last", b),
                (16, 64, 256) if gpu else (8, 16, 32),
            ),
            ("generate", lambda b: generate(model, prompts[:64], 8, b), (16, 64, 256) if gpu else (16, 32, 64)),
        ):
            if "batch" not in calls:
                break
            timed = measure_together({str(b): (lambda b=b: fn(b)) for b in ("auto", *fixed)}, args.repeat)
            for b in ("auto", *fixed):
                sizes[(call, b)] = timed[str(b)].seconds
            best = min((sizes[(call, b)], b) for b in fixed)
            rows.append(
                [
                    f"{call}, batch auto vs best fixed ({best[1]})",
                    f"{sizes[(call, 'auto')]:.2f}",
                    f"{best[0]:.2f}",
                    f"{best[0] / sizes[(call, 'auto')]:.2f}×",
                    "",
                ]
            )
    print(f"{args.model}, {len(prompts)} prompts, batch {size}, {model.info.dtype}; {machine()}\n")
    print(table(["call", "harness s", "plain s", "speed-up", "padding bound (share reached)"], rows))


if __name__ == "__main__":
    main()
