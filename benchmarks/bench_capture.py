"""Capturing activations: harness `collect` against what a researcher would otherwise write.

    python -m benchmarks.bench_capture [--model smollm2-135m] [--repeat 3] [--batch-size 16]

For one residual site at the middle layer and for every layer, at the last token and at every
token, on 128 mixed-length prompts (9-68 tokens), each in one process:
- harness `collect` (length-sorted batches, forward stopped after the deepest layer asked);
- `output_hidden_states=True` on padded batches in the prompts' own order (the whole model runs);
- a forward hook that stops the pass early on those padded batches (TransformerLens'
  `stop_at_layer` and nnsight's `tracer.stop()` cost the same, within a few percent);
- TransformerLens' `TransformerBridge` (`run_with_cache(..., stop_at_layer=)`) and nnsight
  (`.save()` + `tracer.stop()`), when installed (`pip install -e '.[bench]'`).
Prints a Markdown table: seconds, speed-up of `collect` over each, peak extra memory, and the
largest difference of `collect` from `output_hidden_states` (every layer but the last, whose
hidden state transformers returns after the final norm); above it, the padding bound
(`common.padding_bound`: what length sorting alone can gain over the padded batches). On a GPU
the harness and the plain loops run there (bfloat16); TransformerLens and nnsight stay on the
CPU comparison.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

import torch

from benchmarks.common import machine, measure, mixed_prompts, padded_batches, padding_bound, table
from harness.engine.models import load_model
from harness.engine.sites import collect


class Stop(Exception):
    pass


def take(hidden: torch.Tensor, mask: torch.Tensor, last: bool) -> list[torch.Tensor]:
    """Per prompt, the last real token's state or every real token's states (right or left padding)."""
    out = []
    for row, m in zip(hidden, mask.bool()):
        real = row[m]
        out.append((real[-1] if last else real).to("cpu", copy=True))  # a copy on the CPU, where collect's rows arrive
    return out


def hidden_states(model: Any, batches: list[dict], layers: list[int], last: bool) -> dict[int, list[torch.Tensor]]:
    out: dict[int, list[torch.Tensor]] = {L: [] for L in layers}
    for b in batches:
        hs = model.hf(**b, output_hidden_states=True).hidden_states
        for L in layers:
            out[L] += take(hs[L + 1], b["attention_mask"], last)
    return out


def early_stop_hook(model: Any, batches: list[dict], layers: list[int], last: bool) -> dict[int, list[torch.Tensor]]:
    out: dict[int, list[torch.Tensor]] = {L: [] for L in layers}
    deepest = max(layers)
    for b in batches:
        handles = []
        for L in layers:

            def hook(mod, args, output, L=L):
                h = output[0] if isinstance(output, tuple) else output
                out[L].extend(take(h, b["attention_mask"], last))
                if L == deepest:
                    raise Stop

            handles.append(model.blocks[L].register_forward_hook(hook))
        try:
            model.hf(**b)
        except Stop:
            pass
        finally:
            for h in handles:
                h.remove()
    return out


def transformer_lens_runner(folder: str, tokenizer: Any) -> Callable | None:
    """TransformerLens' bridge on its own copy of the weights (it switches attention to eager)."""
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        return None
    bridge = TransformerBridge.boot_transformers(folder, device="cpu", dtype=torch.float32, tokenizer=tokenizer)

    def run(batches: list[dict], layers: list[int], last: bool) -> dict[int, list[torch.Tensor]]:
        out: dict[int, list[torch.Tensor]] = {L: [] for L in layers}
        names = {f"blocks.{L}.hook_resid_post" for L in layers}
        for b in batches:
            _, cache = bridge.run_with_cache(
                b["input_ids"],
                attention_mask=b["attention_mask"],
                names_filter=lambda n: n in names,
                stop_at_layer=max(layers) + 1,
            )
            for L in layers:
                out[L] += take(cache[f"blocks.{L}.hook_resid_post"], b["attention_mask"], last)
        return out

    return run


def nnsight_runner(model: Any) -> Callable | None:
    """nnsight on its own copy of the weights, so its wrapping never touches the harness's model."""
    try:
        from nnsight import NNsight
        from transformers import AutoModelForCausalLM
    except ImportError:
        return None
    traced = NNsight(AutoModelForCausalLM.from_pretrained(model.hf.name_or_path, dtype=torch.float32).eval())
    blocks = traced
    for part in model.layout.blocks.split("."):
        blocks = getattr(blocks, part)

    def run(batches: list[dict], layers: list[int], last: bool) -> dict[int, list[torch.Tensor]]:
        out: dict[int, list[torch.Tensor]] = {L: [] for L in layers}
        for b in batches:
            saved: dict[int, Any] = {}  # filled inside the trace: nnsight runs its body apart from this frame
            with traced.trace(**b) as tracer:
                for L in layers:
                    saved[L] = blocks[L].output.save()
                tracer.stop()
            for L in layers:
                h = saved[L][0] if isinstance(saved[L], tuple) else saved[L]
                out[L] += take(h, b["attention_mask"], last)
        return out

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    model = load_model(args.model)
    tok = model.tokenizer
    prompts = mixed_prompts(tok)
    batches = padded_batches(tok, prompts, args.batch_size, model.input_device)
    on_cpu = model.input_device.type == "cpu"
    tl = transformer_lens_runner(str(model.hf.name_or_path), tok) if on_cpu else None
    nn = nnsight_runner(model) if on_cpu else None
    mid = model.n_layers // 2
    rows = []
    with torch.inference_mode():
        for what, layers in ((f"resid_post.{mid}", [mid]), ("every layer", list(range(model.n_layers)))):
            for last in (True, False):
                sites = [f"resid_post.{L}" for L in layers]
                position = "last" if last else "all"
                ours = measure(lambda: collect(model, prompts, sites, position, args.batch_size), args.repeat)
                got = collect(model, prompts, sites, position, args.batch_size)
                ref = hidden_states(model, batches, layers, last)
                # transformers' last hidden state has the final norm applied; the last block's output does not
                compared = [(s, L) for s, L in zip(sites, layers) if L < model.n_layers - 1]
                diff = max(
                    float((torch.as_tensor(got[s][i]).float() - ref[L][i].float()).abs().max())
                    for s, L in compared
                    for i in range(len(prompts))
                )
                scale = max(float(ref[L][i].float().abs().max()) for _, L in compared for i in range(len(prompts)))
                others = {
                    "output_hidden_states": lambda: hidden_states(model, batches, layers, last),
                    "early-stop hook": lambda: early_stop_hook(model, batches, layers, last),
                }
                if tl is not None:
                    others["TransformerLens bridge"] = lambda: tl(batches, layers, last)
                if nn is not None:
                    others["nnsight"] = lambda: nn(batches, layers, last)
                label = f"{what}, {'last token' if last else 'all tokens'}"
                rows.append(
                    [
                        label,
                        "harness collect",
                        f"{ours.seconds:.2f}",
                        "1.00",
                        f"{ours.peak_mib:.0f}",
                        f"{diff:.1e} ({diff / scale:.0e})",
                    ]
                )
                for name, fn in others.items():
                    t = measure(fn, args.repeat)
                    rows.append([label, name, f"{t.seconds:.2f}", f"{t.seconds / ours.seconds:.2f}", f"{t.peak_mib:.0f}", ""])
    print(
        f"{args.model}, {len(prompts)} prompts, batch {args.batch_size}, {model.info.dtype}; padding bound "
        f"{padding_bound(tok, prompts, args.batch_size):.2f}×; {machine()}\n"
    )
    print(
        table(
            [
                "sites",
                "method",
                "seconds",
                "× collect's time",
                "peak extra MiB",
                "max |collect − hidden_states| (÷ max |hidden_states|)",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
