"""A complete third-party task: does the model prefer the opposite of a word as the next token?"""

from dataclasses import dataclass

import numpy as np

from harness import Task, TaskResult, option, register_task

PAIRS = [("hot", "cold"), ("up", "down"), ("big", "small"), ("yes", "no"), ("day", "night"), ("left", "right")]


@dataclass
class OppositesConfig:
    n_pairs: int = option(6, "word pairs to ask about", ge=1, le=len(PAIRS))


@register_task
class OppositeWords(Task):
    name = "opposite_words"
    version = "1.0"
    paper = "example plugin (no paper)"
    description = "'The opposite of hot is': is the opposite the model's favourite among the answers?"
    Config = OppositesConfig
    headline_metrics = ["accuracy"]

    def run(self, model, config, ctx) -> TaskResult:
        pairs = PAIRS[: config.n_pairs]
        prompts = [f"The opposite of {a} is" for a, _ in pairs]
        answers = [model.tokenizer(" " + b, add_special_tokens=False)["input_ids"][0] for _, b in pairs]
        scores = ctx.score(prompts, answers)  # logits of every answer after every prompt
        correct = scores.logits.argmax(-1).numpy() == np.arange(len(pairs))
        return TaskResult(metrics={"accuracy": ctx.metric(correct.astype(float))})
