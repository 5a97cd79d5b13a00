"""Run every engine request on a tiny model and save what this process got (run alone or under torchrun)."""

import os
import sys

import torch

from harness import Edit, RunContext
from harness.engine.models import from_hf
from tests.tiny_models import tiny_model, tiny_tokenizer

PROMPTS = [f"Mary went to the kitchen number {i} and" + " then" * (i % 5) for i in range(11)]


def main(out: str) -> None:
    torch.manual_seed(0)
    model = from_hf(tiny_model("llama"), tiny_tokenizer(), spec="tiny-llama")
    ctx = RunContext(model=model, batch_size=2, show_progress=False)
    result = {
        "score": ctx.score(PROMPTS, [5, 6, 7]).logprobs,
        "loglikelihood": torch.as_tensor(ctx.loglikelihood(PROMPTS, [" an apple"] * len(PROMPTS)).logprob),
        "collect": ctx.collect(PROMPTS, ["resid_post.1", "mlp_act.0"], positions="last")["resid_post.1"],
        "mean": ctx.collect(PROMPTS, ["mlp_act.1"], positions="all", reduce="mean")["mlp_act.1"],
        "one_batch": ctx.collect(PROMPTS[:1], ["resid_post.0"], positions="last")["resid_post.0"],  # a rank with no batch
        "tokens": ctx.collect(PROMPTS[:5], ["resid_post.0"], positions="all")["resid_post.0"],
        "greedy": ctx.generate(PROMPTS, 4),
        "sampled": ctx.generate(PROMPTS, 6, temperature=1.0, seed=3),
    }
    result["stream"] = torch.cat(list(ctx.stream(PROMPTS * 3, "resid_post.1", max_tokens=9)))
    result["linear"] = ctx.collect(PROMPTS, ["linear.1.self_attn.q_proj"], positions="all", reduce="mean")["linear.1.self_attn.q_proj"]
    with ctx.intervene([Edit("resid_post.0", "scale", 0.5, position="all")]):
        result["edited"] = ctx.score(PROMPTS, [5, 6, 7]).logits
    torch.save(result, os.path.join(out, f"rank{os.environ.get('RANK', '0')}.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
