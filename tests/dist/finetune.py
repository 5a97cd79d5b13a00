"""Fine-tune a LoRA adapter on a tiny model and save what this process got (run alone or under torchrun).

argv: OUT [stop_after_step]. With a step, the run raises after that step's checkpoint (a killed run);
the next call with the same OUT resumes from the checkpoint folder OUT/checkpoints.
"""

import os
import sys
from pathlib import Path

import torch

from harness.engine.train import TrainConfig, finetune_lora
from tests.tiny_models import WEEKDAYS, tiny_model, tiny_tokenizer

# 10 examples in batches of 3: the plan holds batches of 3 and of 1, so some steps leave a rank without an example
EXAMPLES = [(f"Today is {day}. Tomorrow is", f" {WEEKDAYS[(i + 1) % 7]}.") for i, day in enumerate(WEEKDAYS)]
EXAMPLES += [(f"The month after {m} is", f" {n}") for m, n in [("May", "June"), ("June", "July"), ("March", "April")]]
CONFIG = TrainConfig(steps=8, batch_size=3, lr=1e-2, lora_dropout=0.0, checkpoint_every=2)


class Killed(Exception):
    pass


def main(out: str, stop_after: int | None) -> None:
    torch.manual_seed(0)
    model = tiny_model("llama").requires_grad_(False)

    def on_step(step: int, loss: float) -> None:
        if stop_after is not None and step == stop_after:
            raise Killed

    try:
        result = finetune_lora(model, tiny_tokenizer(), EXAMPLES, CONFIG, checkpoint_dir=Path(out) / "checkpoints",
                               progress=lambda it, desc, total=None: it, on_step=on_step)
    except Killed:
        return
    report = result.report
    adapter = {n: p.detach().clone() for n, p in result.model.named_parameters() if "lora_" in n}
    torch.save({"losses": report.losses, "grad_norms": report.grad_norms, "tokens": report.tokens,
                "reply_tokens": report.reply_tokens, "resumed_from": report.resumed_from, "adapter": adapter},
               os.path.join(out, f"rank{os.environ.get('RANK', '0')}.pt"))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
