"""incontext_unlearning: forget on request, and the logit lens that shows the model only pretends.

Takashiro et al. 2025 (arXiv 2410.00382). Method, in the order the task runs it:

1. Data: train and eval items of the chosen source (the shipped fictional-author sample,
   TOFU from the Hub, or the AGE file); each eval item gives a forget example (the fact the
   question needs is tagged; gold `forgot`) and a retain example (an unrelated target is
   tagged; gold: the true answer).
2. Forget tags `<<UNL>>`/`<</UNL>>` become special tokens for the run (mean embedding rows);
   the tokenizer and embedding matrices are restored afterwards, so the next task sees the
   model exactly as loaded.
3. Mode: `prompt_only` evaluates the model as it is (with the plain instruction by default,
   since an untuned model ignores the tags); `finetune` trains a LoRA adapter on the train
   items' forget and retain examples through the engine (`ctx.finetuned`) with the authors'
   settings, and evaluates with it attached; `adapter=PATH` evaluates a saved adapter.
4. Scoring: greedy replies of at most 20 tokens, the authors' strict rules and our lenient
   ones; every interval resamples items, so an item's forget, retain and baseline rows
   move together.
5. Logit lens at the last prompt position: per layer, the probability, rank and top-1 rate
   of the answer's first token and of `forgot`'s, per group (forget, retain), and the
   internal-answer score: among forget examples answered `forgot`, the share whose answer
   token is the lens's top-1 at some layer before the last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import numpy as np

from harness import (
    Curve,
    Facet,
    Finding,
    Metric,
    ModelShape,
    Reference,
    Task,
    TaskResult,
    UsageError,
    Workload,
    added_tokens,
    option,
    register_task,
    tokens,
)

from .data import Example, QAItem, TaskData, load_data, make_examples
from .prompts import (
    FORGET_TAGS,
    METRICS,
    ItemScore,
    baseline_prompt,
    example_prompt,
    first_line,
    has_chat_template,
    score_item,
    score_table,
    training_pair,
    training_pairs,
)
from .reference import reference_numbers

PAPER = (
    "Takashiro, Kojima, Gambardella, Cao, Iwasawa, Matsuo 2025, Answer When Needed, Forget When Not: Language "
    "Models Pretend to Forget via In-Context Knowledge Unlearning (arXiv 2410.00382)"
)
GROUPS = ("forget", "retain")
LENS_TOKENS = ("answer", "forgot")
ADAPTER_ARTIFACT = "adapter"


@dataclass
class UnlearningConfig:
    """Defaults run the shipped sample on CPU; `mode=finetune` uses the authors' LoRA settings.

    The spec's `n_boot` and `seed` are the engine's `--bootstrap` and `--seed`.
    """

    source: Literal["sample", "hub", "age_file"] = option(
        "sample", "data: sample (shipped fictional authors), hub (TOFU through datasets), age_file (local AGE file)"
    )
    age_path: Optional[str] = option(None, "the AGE JSON/JSONL file or the authors' saved folder (source=age_file)")
    mode: Literal["prompt_only", "finetune"] = option(
        "prompt_only", "prompt_only: evaluate the model as it is; finetune: train a LoRA adapter first"
    )
    domain: Literal["id", "ood"] = option("id", "id: eval items like the training ones; ood: TOFU world facts")
    target: Optional[Literal["answer", "subject"]] = option(
        None, "what the forget tags hold: answer or subject (author/person); none: the source's own"
    )
    prompt_style: Optional[Literal["text", "tags"]] = option(
        None, "text (plain forget instruction) or tags (<<UNL>>...); none: text for prompt_only, tags for a fine-tune"
    )
    optimizer: Literal["adamw", "adopt"] = option("adamw", "fine-tuning optimizer: adamw (torch) or adopt")
    steps: Optional[int] = option(
        None, "fine-tuning steps; none: 300 on CUDA (the spec's), 40 on CPU (one epoch of the sample)", ge=1
    )
    lr: float = option(2e-4, "learning rate (constant after 3% warm-up)", gt=0)
    batch_size: int = option(4, "fine-tuning batch size", ge=1)
    lora_r: int = option(4, "LoRA rank", ge=1)
    lora_alpha: int = option(8, "LoRA alpha", ge=1)
    max_new_tokens: int = option(20, "longest reply generated", ge=1)
    lens: bool = option(True, "run the logit lens on every eval example")
    adapter: Optional[str] = option(None, "a saved adapter folder to evaluate without training (implies a fine-tune's prompts)")


GPU_STEPS, CPU_STEPS = 300, 40
AUTHORS_STEPS = 120  # 3 epochs of TOFU ID at the authors' batch size


def settled(config: UnlearningConfig, device: str) -> UnlearningConfig:
    """The config with its source-, mode- and hardware-dependent defaults filled in (what runs is what is hashed).

    300 fine-tuning steps take about 45 minutes for smollm2-135m on two CPU cores, so CPU
    runs default to one epoch of the sample (40 steps); CUDA runs get the spec's 300.
    """
    target = config.target or ("subject" if config.source == "age_file" else "answer")
    tuned = config.mode == "finetune" or config.adapter is not None
    style = config.prompt_style or ("tags" if tuned else "text")
    steps = config.steps or (GPU_STEPS if device == "cuda" else CPU_STEPS)
    return dataclasses.replace(config, target=target, prompt_style=style, steps=steps)


def forget_tags(model: Any) -> contextlib.AbstractContextManager[tuple[int, ...]]:
    """The forget tags as special tokens for the block; tokenizer and embeddings restored on exit
    (`harness.added_tokens`: the next task of the invocation sees the model unchanged)."""
    return added_tokens(model, FORGET_TAGS)


@dataclass
class Evaluation:
    """Everything one evaluation produced: per-item scores and outputs, and the lens if it ran."""

    scores: list[ItemScore]
    outputs: list[dict[str, str]]
    lens: dict[str, Any] | None


def reply_first_token(tokenizer: Any, example: Example, reply: str, style: str) -> int:
    """The first token of `reply` as the fine-tuning reply writes it after the prompt (chat or plain form)."""
    prompt, text = training_pair(tokenizer, dataclasses.replace(example, gold=reply), style)
    return tokens.continuation_tokens(tokenizer, prompt, text)[0]


def lens_summary(
    lens: Any, examples: Sequence[Example], answer_ids: list[int], forgot_ids: list[int], targets: list[int]
) -> dict[str, Any]:
    """Curves per group and token (mean probability, median rank, top-1 rate per layer) and per-example top-1 flags."""
    col = {t: k for k, t in enumerate(targets)}
    prob = lens.logprobs.exp().numpy()
    ranks = lens.ranks.numpy()
    top = lens.top_token.numpy()
    n_layers = prob.shape[1]
    rows = np.arange(len(examples))
    token_cols = {"answer": np.array([col[a] for a in answer_ids]), "forgot": np.array([col[f] for f in forgot_ids])}
    curves: dict[str, dict[str, dict[str, list[float]]]] = {}
    for group in GROUPS:
        sel = np.array([e.kind == group for e in examples])
        curves[group] = {}
        for name in LENS_TOKENS:
            p = prob[rows[sel], :, token_cols[name][sel]]  # (n_group, n_layers)
            r = ranks[rows[sel], :, token_cols[name][sel]]
            curves[group][name] = {
                "prob": [float(x) for x in p.mean(0)],
                "rank_median": [float(x) for x in np.median(r, 0)],
                "top1_rate": [float(x) for x in (r == 0).mean(0)],
            }
    answer_top_early = (top[:, : n_layers - 1] == np.array(answer_ids)[:, None]).any(1)
    return {"curves": curves, "answer_top1_before_last": answer_top_early, "n_layers": n_layers}


def evaluate(
    model: Any, ctx: Any, items: Sequence[QAItem], examples: Sequence[Example], config: UnlearningConfig, desc: str
) -> Evaluation:
    """Greedy replies to every forget, retain and baseline prompt, scored per item; then the lens."""
    tok = model.tokenizer
    style = config.prompt_style
    prompts = [example_prompt(tok, e, style) for e in examples]
    baselines = [baseline_prompt(tok, item.question) for item in items]
    generated = ctx.generate(prompts + baselines, max_new_tokens=config.max_new_tokens, desc=f"{desc}: replies")
    if not has_chat_template(tok):
        generated = [first_line(g) for g in generated]
    replies, baseline_replies = generated[: len(prompts)], generated[len(prompts) :]
    scores, outputs = [], []
    for k, item in enumerate(items):
        forget, retain = examples[2 * k], examples[2 * k + 1]
        assert forget.item_id == retain.item_id == item.id and forget.kind == "forget" and retain.kind == "retain"
        out = {"forget": replies[2 * k], "retain": replies[2 * k + 1], "baseline": baseline_replies[k]}
        scores.append(score_item(item.answer, out["forget"], out["retain"], out["baseline"]))
        outputs.append(out)
        ctx.log_sample(
            {
                "item": item.id,
                "question": item.question,
                "answer": item.answer,
                "forget_target": forget.target,
                "retain_target": retain.target,
                "forget_prompt": prompts[2 * k],
                **{f"{kind}_reply": text for kind, text in out.items()},
                **dataclasses.asdict(scores[-1]),
            }
        )
    lens = None
    if config.lens:
        answer_ids = [reply_first_token(tok, e, e.answer, style) for e in examples]
        forgot_ids = [reply_first_token(tok, e, "forgot", style) for e in examples]
        targets = sorted(set(answer_ids) | set(forgot_ids))
        raw = ctx.logit_lens(prompts, targets, desc=f"{desc}: logit lens")
        lens = lens_summary(raw, examples, answer_ids, forgot_ids, targets)
        lens["answer_is_forgot_token"] = int(sum(a == f for a, f in zip(answer_ids, forgot_ids)))
    return Evaluation(scores, outputs, lens)


def score_metrics(ctx: Any, scores: Sequence[ItemScore], units: Sequence[str] | None = None) -> dict[str, Metric]:
    """Every spec metric over items (one row per item: forget, retain and baseline stay together).

    units: the author or person each item asks about (`item_units`): the items of one author
    share the context the model saw, so whole authors are resampled and `n` counts them."""
    table = score_table(scores)
    return {
        name: ctx.metric(table, unit=units, statistic=stat, higher_is_better=better) for name, (stat, better) in METRICS.items()
    }


def item_units(items: Sequence[QAItem]) -> list[str]:
    """The unit of each item: its subject (author, person), or the item itself where the source names none (TOFU)."""
    return [item.subject or f"item:{item.id}" for item in items]


def internal_answer_metric(
    ctx: Any, scores: Sequence[ItemScore], lens: dict[str, Any], units: Sequence[str] | None = None
) -> Metric | None:
    """Among forget examples answered `forgot` (strict), the share whose answer is top-1 at a layer before the last.

    None when no forget example was forgotten: the share has no denominator.
    """
    early = lens["answer_top1_before_last"][0::2]  # forget examples come first in each item's pair
    forgotten = np.array([s.forget_strict for s in scores], dtype=bool)
    if not forgotten.any():
        return None
    return ctx.metric(
        early[forgotten].astype(float), unit=np.asarray(units)[forgotten] if units is not None else None, higher_is_better=None
    )


def adapter_digest(folder: Path) -> str:
    """sha256 over the adapter folder's files, recorded so a result names the adapter it evaluated."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def reference_for(config: UnlearningConfig, data: TaskData) -> Reference:
    """The paper's numbers (approximate, percent / 100) for the closest setting to this run's."""
    ref = reference_numbers()
    dataset = "age" if config.source == "age_file" else "tofu"
    key = f"{dataset}_{config.domain}"
    metrics: dict[str, dict[str, float]] = {}
    tuned = config.mode == "finetune" or config.adapter is not None
    if tuned:
        for model, row in ref["tofu_lora"].items():
            if f"{key}_forget_acc" in row:
                metrics[f"{model} LoRA ({key.replace('_', ' ').upper()})"] = {
                    "forget_acc": row[f"{key}_forget_acc"] / 100,
                    "retain_acc": row[f"{key}_retain_acc"] / 100,
                }
        for model, row in ref["finetuning_method_table_lora"].items():
            if f"{key}_forget_acc" in row:
                metrics[f"{model} LoRA ({key.replace('_', ' ').upper()}, fine-tuning-method table)"] = {
                    "forget_acc": row[f"{key}_forget_acc"] / 100,
                    "retain_acc": row[f"{key}_retain_acc"] / 100,
                }
        score = ref["internal_answer_score_llama2_7b"]["lora"].get(key)
        if score is not None:
            metrics.setdefault(f"Llama2-7B LoRA ({key.replace('_', ' ').upper()})", {})["internal_answer_score"] = score
    else:
        for method, row in ref["baselines_llama2_7b_tofu_id"].items():
            metrics[f"Llama2-7B {method.replace('_', ' ')} (TOFU ID)"] = {k: v / 100 for k, v in row.items()}
    notes = {
        "all": "approximate: from a third-party summary of the paper, percent divided by 100; "
        "with 20 ID eval items the paper's own intervals are about ±0.15-0.20"
    }
    if config.source == "sample":
        notes["data"] = "the paper did not use our fictional-author sample: its numbers are on TOFU or AGE"
    for name in (
        "forget_acc_lenient",
        "retain_acc_contains",
        "over_forget_rate",
        "forget_minus_over_forget",
        "harmonic",
        "baseline_retain_acc",
    ):
        notes[name] = "no reference: the paper reports no value for this metric"
    if tuned:
        notes["internal_answer_score"] = (
            "the definitions may differ: ours is the share of forgotten forget examples whose answer "
            "token is the logit-lens top-1 at a layer before the last; the paper's score is read "
            "off its figures and its exact definition was not found"
        )
    return Reference(source=ref["source"], metrics=metrics, notes=notes)


def plot_lens(ctx: Any, curves: dict[str, Any], group: str, title: str) -> None:
    fig = ctx.figure(figsize=(6.5, 3.5))
    ax_prob, ax_top = fig.subplots(1, 2)
    for name, colour in zip(LENS_TOKENS, ("tab:blue", "tab:red")):
        c = curves[group][name]
        ax_prob.plot(c["prob"], marker="o", ms=3, color=colour, label=f"{name} token")
        ax_top.plot(c["top1_rate"], marker="o", ms=3, color=colour, label=f"{name} token")
    ax_prob.set_yscale("log")
    ax_prob.set_xlabel("layer (resid_post.L)"), ax_prob.set_ylabel("mean lens probability")
    ax_top.set_xlabel("layer (resid_post.L)"), ax_top.set_ylabel("top-1 rate")
    ax_top.set_ylim(-0.02, 1.02)
    ax_prob.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    ctx.save_figure(fig, f"lens_{group}.png")


@register_task
class IncontextUnlearning(Task):
    name = "incontext_unlearning"
    version = "1.1"  # 1.1: intervals resample authors; the paired forget-minus-over-forget gap carries the finding
    paper = PAPER
    description = (
        "A fact wrapped in forget tags: does the model answer 'forgot' when the question needs it and answer "
        "the rest, and does a logit lens still find the answer in its middle layers?"
    )
    Config = UnlearningConfig
    # `--preset quick`: sized so every task finishes on a laptop CPU; its own config hash, never mixed with full runs.
    presets = {"quick": {"mode": "prompt_only"}}
    headline_metrics = [
        "forget_acc",
        "retain_acc",
        "over_forget_rate",
        "harmonic",
        "baseline_retain_acc",
        "internal_answer_score",
    ]
    metric_descriptions = {
        "forget_acc": "forget examples answered exactly 'forgot' (the authors' strict rule); n = authors (items of one author resampled together)",
        "forget_minus_over_forget": "per item, forget_acc's 'forgot' minus over_forget_rate's: the finding's paired gap",
        "forget_acc_lenient": "forget examples whose reply does not contain the answer",
        "retain_acc": "retain examples answered exactly with the answer (the authors' rule)",
        "retain_acc_contains": "retain examples whose reply contains the answer",
        "over_forget_rate": "retain examples answered 'forgot' (lower is better)",
        "harmonic": "harmonic mean of forget_acc and retain_acc_contains",
        "baseline_retain_acc": "the question alone, no forget text, answered exactly (same model state)",
        "internal_answer_score": "among forget examples answered 'forgot', the share whose answer token is the logit "
        "lens's top-1 at some layer before the last (pretending); n = those examples",
    }
    finding = Finding(
        claim="the model says 'forgot' when the tagged fact is the one asked about more often than when it is not "
        "(paired per item, resampling authors)",
        paper_verdict="holds after LoRA on Llama2-7B/13B and Mistral-7B (TOFU ID forget 0.85-1.00 vs retain 0.75-0.80, "
        "approximate); fails zero-shot (0/0)",
        facets=(
            Facet(
                "behaviour",
                "forget_minus_over_forget",
                0.0,
                "per item, forgot on the forget example minus forgot on its retain example",
            ),
        ),
    )

    @classmethod
    def resolve_config(cls, config: UnlearningConfig, device: str) -> UnlearningConfig:
        return settled(config, device)

    @classmethod
    def refusal(cls, config: UnlearningConfig, load: Any) -> str | None:
        """Training a LoRA adapter needs float base weights: this engine does not fine-tune 4/8-bit models (QLoRA)."""
        quantised = getattr(load, "load_in_4bit", False) or getattr(load, "load_in_8bit", False)
        if quantised and config.mode == "finetune" and config.adapter is None:
            return (
                "mode=finetune trains a LoRA adapter on float weights: drop --load-in-4bit/--load-in-8bit, or "
                "evaluate a saved adapter (--task-arg adapter=DIR) or mode=prompt_only on the quantised model"
            )
        return None

    @classmethod
    def workload(cls, config: UnlearningConfig, shape: ModelShape) -> Workload:
        """100 eval prompts (about 150 tokens) answered (up to max_new_tokens); the logit lens at every layer
        (a vocabulary-wide readout per layer); a fine-tune of `steps` batches when mode=finetune."""
        finetune = (config.steps or 300) * config.batch_size * 150 * 3 if config.mode == "finetune" else 0
        return Workload(
            forward_tokens=100 * 150 * 2 + finetune,
            generated_tokens=100 * 2 * config.max_new_tokens,
            activation_bytes=100 * shape.n_layers * shape.d_model * 4 + 64 * shape.vocab * 4,
            notes="fine-tuning counts three passes per token (forward, backward)" if finetune else "",
        )

    def run(self, model: Any, config: UnlearningConfig, ctx: Any) -> TaskResult:
        adapter = Path(config.adapter) if config.adapter is not None else None
        if adapter is not None and not (adapter / "adapter_config.json").is_file():
            raise UsageError(
                f"adapter={adapter}: no saved adapter there (adapter_config.json); "
                f"give the 'adapter' folder of a finetune run's artifacts"
            )
        data = load_data(config.source, config.domain, config.target, config.age_path)
        items = list(ctx.limited(data.eval))
        eval_examples = make_examples(items, data.eval_target, ctx.rng(2))
        notes = self.notes(config, model)
        details: dict[str, Any] = {
            "source": data.source,
            "domain": data.domain,
            "train_target": data.train_target,
            "eval_target": data.eval_target,
            "prompt_style": config.prompt_style,
            "n_eval_items": len(items),
            "n_train_items": len(data.train),
            "chat_template": has_chat_template(model.tokenizer),
        }

        with forget_tags(model) as tag_ids:
            details["forget_tag_ids"] = list(tag_ids)
            if adapter is not None:
                details["adapter"] = {"path": str(adapter), "sha256": adapter_digest(adapter)}
                notes.append(f"evaluated the saved adapter at {adapter} without training")
                with ctx.adapter(adapter):
                    result = evaluate(model, ctx, items, eval_examples, config, "adapter")
            elif config.mode == "finetune":
                from harness import TrainConfig  # loads peft: only when training

                train_examples = make_examples(data.train, data.train_target, ctx.rng(1))
                pairs = training_pairs(model.tokenizer, train_examples, config.prompt_style)
                train = TrainConfig(
                    steps=config.steps,
                    batch_size=config.batch_size,
                    lr=config.lr,
                    optimizer=config.optimizer,
                    lora_r=config.lora_r,
                    lora_alpha=config.lora_alpha,
                    seed=ctx.seed,
                )
                with ctx.finetuned(pairs, train, name=ADAPTER_ARTIFACT) as tuned:
                    result = evaluate(model, ctx, items, eval_examples, config, "fine-tuned")
                details["training"] = self.training_details(tuned.report, train, len(pairs))
            else:
                result = evaluate(model, ctx, items, eval_examples, config, "prompt only")

        metrics = score_metrics(ctx, result.scores, item_units(items))
        curves: list[Curve] = []
        if result.lens is not None:
            lens_curves = result.lens["curves"]
            details["lens_curve"] = lens_curves
            curves = [
                Curve(metric=f"lens_{group}_{name}_prob", plot=f"lens_{group}", label=f"{name} token",
                      layers=list(range(len(c["prob"]))), values=c["prob"], xlabel="layer (resid_post.L)",
                      ylabel="mean logit-lens probability")
                for group, by_token in lens_curves.items() for name, c in by_token.items()
            ]  # fmt: skip
            details["lens_answer_is_forgot_token"] = result.lens["answer_is_forgot_token"]
            internal = internal_answer_metric(ctx, result.scores, result.lens, item_units(items))
            if internal is None:
                notes.append("internal_answer_score not reported: no forget example was answered 'forgot'")
            else:
                metrics["internal_answer_score"] = internal
            for group in GROUPS:
                plot_lens(ctx, lens_curves, group, f"{group} examples: logit lens at the last prompt position")
        details["replies"] = [{"item": item.id, **out} for item, out in zip(items, result.outputs)]
        return TaskResult(metrics=metrics, reference=reference_for(config, data), curves=curves, details=details, notes=notes)

    @staticmethod
    def training_details(report: Any, train: Any, n_pairs: int) -> dict[str, Any]:
        losses = report.losses
        k = min(5, len(losses))
        return {
            "settings": dataclasses.asdict(train),
            "n_pairs": n_pairs,
            "steps": report.steps,
            "loss_first5": float(np.mean(losses[:k])),
            "loss_last5": float(np.mean(losses[-k:])),
            "losses": [round(x, 5) for x in losses],
            "tokens": report.tokens,
            "reply_tokens": report.reply_tokens,
            "resumed_from": report.resumed_from,
            "seconds": round(report.seconds, 2),
            "peak_memory_bytes": report.peak_memory_bytes,
        }

    @staticmethod
    def notes(config: UnlearningConfig, model: Any) -> list[str]:
        """Every departure from the paper's method that changes a number."""
        notes = [
            "forget tags are added as special tokens with the mean embedding row (our choice) for this task only; "
            "the tokenizer and embeddings are restored afterwards"
        ]
        if config.mode == "prompt_only" and config.adapter is None:
            notes.append(
                "prompt_only: the model is not fine-tuned (the paper's results are after LoRA tuning)"
                + (
                    "; the forget request is the plain instruction (prompt_style=text, our choice)"
                    if config.prompt_style == "text"
                    else ""
                )
            )
        else:
            notes.append(
                "loss on the reply tokens only (the paper's formula; the authors' trainer also scored the "
                "prompt), torch AdamW or ADOPT instead of paged AdamW 32-bit, fp32 on CPU and bf16 autocast on CUDA"
            )
            if config.adapter is None and config.steps != AUTHORS_STEPS:
                notes.append(
                    f"fine-tuned for {config.steps} steps (the spec's CUDA default is {GPU_STEPS}, 7.5 epochs of "
                    f"TOFU ID; the authors ran 3 epochs, {AUTHORS_STEPS} steps: give steps={AUTHORS_STEPS} to match)"
                )
            if config.optimizer == "adopt":
                notes.append(
                    "ADOPT with the task's lr and weight decay 0.001 applied decoupled (its paper's default is "
                    "lr 1e-3, no weight decay)"
                )
        if not has_chat_template(model.tokenizer):
            notes.append(
                "no chat template: plain 'Question: ...\\nAnswer:' prompts, and each reply is cut at its "
                "first line break before scoring (our choice)"
            )
        if config.source == "sample":
            notes.append(
                "data: the shipped fictional-author sample (written for this project), not TOFU or AGE; its "
                "facts are invented, so retain and baseline questions can be answered only by chance "
                "(retain_acc, retain_acc_contains, harmonic, baseline_retain_acc near 0 by construction): "
                "forget_acc against over_forget_rate carries the finding; source=hub gives the paper's retain side"
            )
        notes.append(
            "baseline_retain_acc asks the eval questions without forget text, with the same model state "
            "(adapter attached when there is one)"
        )
        return notes
