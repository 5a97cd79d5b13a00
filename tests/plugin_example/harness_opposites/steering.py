"""A probe-and-patch task: is "opposite" a direction in the residual stream, and does adding it move the answer?"""

from dataclasses import dataclass

import numpy as np
import torch

from harness import Edit, Task, TaskResult, option, register_task
from probes.linear import cross_validate_probe, shuffled_labels

WORDS = [
    ("hot", "cold"),
    ("up", "down"),
    ("big", "small"),
    ("yes", "no"),
    ("day", "night"),
    ("left", "right"),
    ("fast", "slow"),
    ("old", "new"),
    ("open", "closed"),
    ("high", "low"),
]


@dataclass
class SteeringConfig:
    layer: int = option(1, "resid_post layer to probe and steer", ge=0)
    scale: float = option(2.0, "multiple of the mean difference added at the last token")


@register_task
class OppositeDirection(Task):
    name = "opposite_direction"
    version = "1.0"
    paper = "example plugin (no paper)"
    description = "A probe tells 'the opposite of X is' from 'a word like X is'; adding their difference moves the answer."
    Config = SteeringConfig
    headline_metrics = ["probe_acc", "probe_acc_shuffled", "steer_logprob_gain"]

    def run(self, model, config, ctx) -> TaskResult:
        site = f"resid_post.{config.layer}"
        opposite = [f"The opposite of {a} is" for a, _ in WORDS]
        similar = [f"A word like {a} is" for a, _ in WORDS]
        labels = np.array([1] * len(WORDS) + [0] * len(WORDS))
        word = np.tile(np.arange(len(WORDS)), 2)  # both prompts about a word are one unit

        # Probe: held-out accuracy, against the same probe on shuffled labels.
        X = ctx.collect(opposite + similar, [site])[site].numpy()  # (n, d) at the last token
        real = cross_validate_probe(X, labels, n_folds=5, seed=ctx.seed)
        control = cross_validate_probe(X, shuffled_labels(labels, ctx.rng(1)), n_folds=5, seed=ctx.seed)

        # Patch: add the mean difference to the "word like" prompts; does the opposite gain probability?
        direction = torch.as_tensor(config.scale * (X[labels == 1].mean(0) - X[labels == 0].mean(0)))
        answers = [model.tokenizer(" " + b, add_special_tokens=False)["input_ids"][0] for _, b in WORDS]
        before = ctx.score(similar, answers).logprobs.numpy().diagonal()
        with ctx.intervene([Edit(site, "add", direction, position="last")]):
            after = ctx.score(similar, answers).logprobs.numpy().diagonal()

        return TaskResult(
            metrics={
                "probe_acc": ctx.metric(real.correct.astype(float), unit=word),
                "probe_acc_shuffled": ctx.metric(control.correct.astype(float), unit=word, higher_is_better=None),
                "steer_logprob_gain": ctx.metric(after - before),
            },
            details={"layer": config.layer},
        )
