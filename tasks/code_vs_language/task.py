"""code_vs_language: few-shot logical inference (FLD, bAbI), scored per model and compared across models.

Uchiyama et al. 2024 (EMNLP, arXiv 2410.06735). Method, in the order the task runs it:

1. Data, per sub-task: generated FLD-style deductions (`fld_gen`) and bAbI-style stories
   (`babi_gen_{1,2,3,15,16}`), or the papers' data sets from the Hub (`fld_hub`,
   `fld_star_hub`, `babi_hub_{k}`); k solved shots from a disjoint pool, the same for every
   item and every model of a seed, so models are compared on identical prompts.
2. Choice scoring (headline): the summed log-probability of every candidate answer
   (" PROVED", " DISPROVED", " UNKNOWN"; for bAbI every answer of the sub-task) after the
   prompt through `ctx.loglikelihood`; argmax wins. Also length-normalised (per token).
3. Generation: greedy, 5 new tokens, stop at a newline; the first word must be a candidate
   (`format_rate`, the paper's instruction-following idea) and equal the gold answer.
4. Probe (`probe=true`): resid_post.L of every layer at the prompt's last token (after
   `Answer:`), a 5-fold cross-validated L2 logistic probe (C=1) of the gold label per layer,
   beside the same probe on shuffled labels; each its own best layer by one rule.

Every per-item score goes into `details["items"]` keyed by item id, so a comparison across
models (`harness.results.compare`) pairs the same items and shots, for reused results too.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from harness import Curve, Facet, Finding, Metric, ModelShape, Reference, Task, TaskResult, Workload, option, register_task
from probes.linear import cross_validate_grid, shuffled_labels
from probes.selection import best_layers

from .generators import BABI_TASKS, FLD_DEPTHS, LABELS, FLDItem, babi_candidates, generate_babi, generate_fld
from .loaders import BABI_REPOS, load_babi_hub, load_fld_hub
from .prompts import Item, build_prompt, choices, hub_candidates, parse_answer, pick_shots

PAPER = (
    "Uchiyama et al. 2024, Which Programming Language and What Features at Pre-training Stage Affect "
    "Downstream Logical Inference Performance? (EMNLP 2024, arXiv 2410.06735)"
)
GEN_SUBTASKS = ["fld_gen", *(f"babi_gen_{k}" for k in BABI_TASKS)]
HUB_SUBTASKS = ["fld_hub", "fld_star_hub", *(f"babi_hub_{k}" for k in BABI_TASKS)]
FLD_HUB_CONFIGS = {"fld_hub": "default", "fld_star_hub": "star"}
SUBTASK = re.compile(r"fld_gen|fld_hub|fld_star_hub|babi_gen_(\d+)|babi_hub_(\d+)")
GPU_ITEMS, CPU_ITEMS = 300, 30
SHOT_POOL = 60  # generated pool the shots are drawn from (split "shots", disjoint from "test")
HUB_SHOT_POOL = 200  # first rows of the hub's train split, the pool for hub sub-tasks
MIN_PROBE_CLASS = 5  # bAbI answer classes with fewer items are dropped from the probe


@dataclass
class CodeVsLanguageConfig:
    """The spec's settings; `n_items` none means 300 on GPU (the spec) and 30 on CPU."""

    subtasks: list[str] | None = option(
        None, "sub-tasks: fld_gen, babi_gen_{1,2,3,15,16}, fld_hub, fld_star_hub, babi_hub_{1..20}; none: every one of `source`"
    )
    source: Literal["gen", "hub"] = option("gen", "default sub-tasks: generated (offline) or the papers' data sets from the Hub")
    n_items: int | None = option(None, "items per generated sub-task; none: 300 on GPU, 30 on CPU", ge=3, le=10_000)
    shots: int = option(3, "solved examples before each query", ge=0, le=12)
    scoring: Literal["choice", "generate", "both"] = option(
        "both", "choice (log-likelihood of each answer), generate (greedy first word), or both"
    )
    limit: int = option(500, "items per hub sub-task (the first ones of the test split)", ge=1)
    fld_depths: list[int] = option(list(FLD_DEPTHS), "proof depths of generated FLD items", ge=1, le=3)
    seed: int = option(0, "data seed: items and shots (the same for every model)", ge=0, lt=2**32)
    babi_repo: str = option("facebook/babi_qa", "bAbI on the Hub: facebook/babi_qa or Muennighoff/babi")
    probe: bool = option(False, "per-layer linear probe of the gold label at the last prompt token, with a shuffled control")
    probe_shots: int = option(0, "shots in the probe prompts", ge=0, le=12)
    probe_depth: bool = option(False, "also probe the proof depth of FLD items")

    def __post_init__(self) -> None:
        for name in self.subtasks or []:
            match = SUBTASK.fullmatch(name)
            if not match:
                raise ValueError(f"subtasks: unknown sub-task {name!r}; use {', '.join(GEN_SUBTASKS + HUB_SUBTASKS)}")
            if match[1] is not None and int(match[1]) not in BABI_TASKS:
                raise ValueError(f"subtasks: {name} has no generator; generated bAbI tasks are {', '.join(map(str, BABI_TASKS))}")
            if match[2] is not None and not 1 <= int(match[2]) <= 20:
                raise ValueError(f"subtasks: {name}: bAbI has tasks 1 to 20")
        if self.subtasks is not None and len(set(self.subtasks)) != len(self.subtasks):
            raise ValueError("subtasks: a sub-task is listed twice")
        if self.babi_repo not in BABI_REPOS:
            raise ValueError(f"babi_repo={self.babi_repo}: use {' or '.join(BABI_REPOS)}")


def settled(config: CodeVsLanguageConfig, device: str) -> CodeVsLanguageConfig:
    """The config with its open defaults filled: the sub-tasks of `source`, the item count of the device."""
    return dataclasses.replace(
        config,
        subtasks=list(config.subtasks)
        if config.subtasks is not None
        else list(GEN_SUBTASKS if config.source == "gen" else HUB_SUBTASKS),
        n_items=config.n_items if config.n_items is not None else (GPU_ITEMS if device == "cuda" else CPU_ITEMS),
    )


@dataclass
class SubtaskData:
    """The items of one sub-task, their shots, and the answers scored for them."""

    name: str
    items: list[Item]
    pool: list[Item]
    candidates: tuple[str, ...]

    @property
    def is_fld(self) -> bool:
        return self.name.startswith("fld")


def load_subtask(name: str, config: CodeVsLanguageConfig) -> SubtaskData:
    """Generated items (split "test") and shot pool (split "shots"), or the hub's test split and train pool."""
    if name == "fld_gen":
        items = generate_fld(config.n_items, config.seed, config.fld_depths, "test")
        return SubtaskData(name, items, generate_fld(SHOT_POOL, config.seed, config.fld_depths, "shots"), LABELS)
    if name in FLD_HUB_CONFIGS:
        items = load_fld_hub(FLD_HUB_CONFIGS[name], "test", config.limit)
        return SubtaskData(name, items, load_fld_hub(FLD_HUB_CONFIGS[name], "train", HUB_SHOT_POOL), LABELS)
    task = int(name.rsplit("_", 1)[1])
    if name.startswith("babi_gen"):
        items = generate_babi(task, config.n_items, config.seed, "test")
        return SubtaskData(name, items, generate_babi(task, SHOT_POOL, config.seed, "shots"), babi_candidates(task))
    items = load_babi_hub(task, "test", config.limit, config.babi_repo)
    return SubtaskData(name, items, load_babi_hub(task, "train", HUB_SHOT_POOL, config.babi_repo), hub_candidates(items))


def majority_hits(gold: np.ndarray) -> np.ndarray:
    """1 where the gold answer is the most frequent one (ties: the first in sorted order), else 0.

    Its mean is the majority baseline. Bootstrapping these indicators, rather than the
    maximum label share of each resample, keeps the baseline's interval centred: the maximum
    of three resampled shares of balanced labels is always above 1/3.
    """
    values, counts = np.unique(gold, return_counts=True)
    return (gold == values[np.argmax(counts)]).astype(float)


@register_task
class CodeVsLanguage(Task):
    name = "code_vs_language"
    version = "1.1"  # 1.1: bAbI intervals resample stories; the finding reads the paired gap to the majority baseline
    paper = PAPER
    description = (
        "Few-shot logical inference (FLD-style deductions, bAbI-style stories) by answer log-likelihood "
        "and by generation; run over several models it writes a comparison with paired intervals."
    )
    Config = CodeVsLanguageConfig
    comparative = True
    # `--preset quick`: sized so every task finishes on a laptop CPU; its own config hash, never mixed with full runs.
    presets = {"quick": {"n_items": 30, "subtasks": ["fld_gen", "babi_gen_1"]}}
    headline_metrics = [
        "fld_acc",
        "babi_acc",
        "format_rate",
        "fld_gen_acc",
        "babi_gen_1_acc",
        "babi_gen_2_acc",
        "babi_gen_3_acc",
        "babi_gen_15_acc",
        "babi_gen_16_acc",
    ]
    metric_descriptions = {
        "fld_acc_minus_majority_baseline": "per FLD item, right (choice) minus the pooled majority label's hit: the finding's paired gap",
        "{subtask}_acc": "accuracy of the answer with the highest summed log-probability (choice; generation when scoring=generate); n = items",
        "{subtask}_acc_norm": "the same with log-probability per token (length-normalised)",
        "{subtask}_gen_acc": "greedy generation: first word (upper case for FLD, lower for bAbI) equals the gold answer",
        "{subtask}_format_rate": "share of generations whose first word is one of the candidate answers",
        "{subtask}_majority_baseline": "accuracy of always giving the sub-task's most frequent gold answer",
        "fld_acc, babi_acc": "the {subtask}_acc rows of all FLD / all bAbI sub-tasks pooled (equal-size sub-tasks: the mean of their accuracies)",
        "fld_majority_baseline": "the majority baseline over the pooled FLD items (the finding's control)",
        "format_rate": "format rate over every generation of the run",
        "{subtask}_probe[_shuffled]_best_acc": "probe=true: held-out accuracy of the gold-answer probe (of shuffled labels) at its own best layer",
        "{subtask}_probe[_shuffled]_best_layer": "probe=true: that best layer (resid_post.L); accuracy per layer in details.probe",
        "{subtask}_probe_majority": "probe=true: majority rate of the probe's labels (classes under 5 items dropped)",
        "{subtask}_probe_depth_best_acc, _best_layer": "probe_depth=true: the same for a probe of FLD proof depth",
    }
    finding = Finding(
        claim="few-shot FLD accuracy (choice scoring) lies above always giving the most frequent label (paired per item); "
        "the paper's claim itself (code-trained beats language-trained) is read off the comparison's paired differences",
        paper_verdict="GPT-2-small models trained on one programming language beat those trained on as many natural-language "
        "tokens on FLD and bAbI, by a few points near chance (no numbers reported)",
        facets=(Facet("behaviour", "fld_acc_minus_majority_baseline", 0.0, "per item, right minus the majority label's hit"),),
    )

    @classmethod
    def resolve_config(cls, config: CodeVsLanguageConfig, device: str) -> CodeVsLanguageConfig:
        return settled(config, device)

    @classmethod
    def workload(cls, config: CodeVsLanguageConfig, shape: ModelShape) -> Workload:
        """Per item a prompt of `shots` solved examples (about 150 tokens each) and the query, scored against
        each answer (the shared context once) and/or answered greedily (a few tokens)."""
        subtasks = len(config.subtasks) if config.subtasks is not None else 6
        items = subtasks * (config.n_items or 300) if config.source == "gen" else subtasks * config.limit
        prompt = 150 * (config.shots + 1)
        passes = {"choice": 1, "generate": 1, "both": 2}[config.scoring]
        return Workload(
            forward_tokens=items * prompt * passes,
            generated_tokens=items * 4 if config.scoring != "choice" else 0,
            activation_bytes=items * shape.n_layers * shape.d_model * 4 if config.probe else 0,
        )

    def run(self, model, config: CodeVsLanguageConfig, ctx) -> TaskResult:
        metrics: dict[str, Metric] = {}
        items_table: dict[str, dict[str, list]] = {}
        pooled: dict[str, list[str]] = {}
        details: dict[str, Any] = {"n_layers": model.n_layers, "subtasks": {}}
        curves: list[Curve] = []
        notes = self.notes(config)
        gold_of: dict[str, np.ndarray] = {}
        units_of: dict[str, list[str]] = {}
        for name in config.subtasks:
            data = load_subtask(name, config)
            data.items = list(ctx.limited(data.items))
            shots = pick_shots(data.pool, data.items, config.shots, config.seed)
            prompts = [build_prompt(item, shots) for item in data.items]
            table, sub_metrics, gold, units = self.score_subtask(ctx, data, prompts, config)
            items_table[name] = table
            units_of[name] = units
            gold_of[name] = gold
            metrics.update(sub_metrics)
            details["subtasks"][name] = {
                "n_items": len(data.items),
                "candidates": list(data.candidates),
                "shots": [s.uid for s in shots],
            }
            if config.probe:
                metrics.update(self.probe(ctx, model, data, config, details, curves))
        self.aggregate(ctx, config, items_table, gold_of, units_of, metrics, pooled)
        if config.probe:
            self.plot_probe(ctx, curves)
        details["items"] = items_table
        details["item_units"] = units_of
        details["pooled"] = pooled
        return TaskResult(
            metrics=metrics,
            curves=curves,
            reference=Reference(
                source=PAPER,
                notes={
                    "fld_acc": "no reference: the paper reports its accuracies in plots only; a 124M model scores near chance (1/3)"
                },
            ),
            details=details,
            notes=notes,
        )

    # Behaviour ----------------------------------------------------------------------

    def score_subtask(
        self, ctx, data: SubtaskData, prompts: list[str], config
    ) -> tuple[dict[str, list], dict[str, Metric], np.ndarray, list[str]]:
        """Choice and generation scores of one sub-task: the per-item table and its metrics."""
        name, n, k = data.name, len(data.items), len(data.candidates)
        gold = np.array([choices(item, data.candidates).gold for item in data.items])
        table: dict[str, list] = {"id": [item.uid for item in data.items]}
        units = [getattr(item, "unit", item.uid) for item in data.items]  # a bAbI story's questions share it
        record: dict[str, list] = {}
        if config.scoring in ("choice", "both"):
            continuations = [f" {c}" for c in data.candidates]
            ll = ctx.loglikelihood([p for p in prompts for _ in range(k)], continuations * n, desc=f"{name} choices")
            summed = ll.logprob.reshape(n, k)
            normalised = summed / ll.n_tokens.reshape(n, k)
            pred, pred_norm = summed.argmax(1), normalised.argmax(1)
            table[f"{name}_acc"] = (pred == gold).astype(int).tolist()
            table[f"{name}_acc_norm"] = (pred_norm == gold).astype(int).tolist()
            record["choice"] = [data.candidates[i] for i in pred]
            record["choice_norm"] = [data.candidates[i] for i in pred_norm]
        if config.scoring in ("generate", "both"):
            texts = ctx.generate(prompts, max_new_tokens=5, stop=["\n"], desc=f"{name} generation")
            parsed = [parse_answer(t, data.candidates) for t in texts]
            gen_correct = [int(p == item.answer) for p, item in zip(parsed, data.items)]
            table[f"{name}_gen_acc"] = gen_correct
            table[f"{name}_format_rate"] = [int(p is not None) for p in parsed]
            if config.scoring == "generate":
                table[f"{name}_acc"] = gen_correct
            record["generation"] = texts
        for r, item in enumerate(data.items):
            ctx.log_sample({"subtask": name, "id": item.uid, "gold": item.answer, **{key: v[r] for key, v in record.items()}})
        metrics = {key: ctx.metric(np.asarray(values, dtype=float), unit=units) for key, values in table.items() if key != "id"}
        metrics[f"{name}_majority_baseline"] = ctx.metric(majority_hits(gold), unit=units)
        return table, metrics, gold, units

    def aggregate(
        self, ctx, config, items_table, gold_of, units_of, metrics: dict[str, Metric], pooled: dict[str, list[str]]
    ) -> None:
        """fld_acc and babi_acc pool their sub-tasks' items; format_rate pools every generation; fld's
        gap to the majority baseline is paired per item."""
        groups = {
            "fld": [s for s in config.subtasks if s.startswith("fld")],
            "babi": [s for s in config.subtasks if s.startswith("babi")],
        }
        for family, names in groups.items():
            if not names:
                continue
            keys = [f"{s}_acc" for s in names]
            pooled[f"{family}_acc"] = keys
            metrics[f"{family}_acc"] = ctx.metric(
                np.concatenate([items_table[s][k] for s, k in zip(names, keys)]).astype(float),
                unit=sum((units_of[s] for s in names), []),
            )
        if groups["fld"]:
            # Labels are shared by every FLD sub-task, so their pooled majority rate is the baseline to beat.
            gold = np.concatenate([gold_of[s] for s in groups["fld"]])
            units = sum((units_of[s] for s in groups["fld"]), [])
            hits = majority_hits(gold)
            metrics["fld_majority_baseline"] = ctx.metric(hits, unit=units)
            correct = np.concatenate([items_table[s][f"{s}_acc"] for s in groups["fld"]]).astype(float)
            metrics["fld_acc_minus_majority_baseline"] = ctx.metric(correct - hits, unit=units)
        if config.scoring in ("generate", "both"):
            keys = [f"{s}_format_rate" for s in config.subtasks]
            pooled["format_rate"] = keys
            metrics["format_rate"] = ctx.metric(
                np.concatenate([items_table[s][k] for s, k in zip(config.subtasks, keys)]).astype(float),
                unit=sum((units_of[s] for s in config.subtasks), []),
            )

    # Probe --------------------------------------------------------------------------

    def probe(self, ctx, model, data: SubtaskData, config, details: dict, curves: list[Curve]) -> dict[str, Metric]:
        """Per layer, a probe of the gold label at the last prompt token, and the same on shuffled labels."""
        name = data.name
        shots = pick_shots(data.pool, data.items, config.probe_shots, config.seed)
        prompts = [build_prompt(item, shots) for item in data.items]
        targets = {"": np.array([item.answer for item in data.items])}
        if config.probe_depth and data.is_fld and all(isinstance(i, FLDItem) and i.depth is not None for i in data.items):
            targets["_depth"] = np.array([item.depth for item in data.items])
        layers = list(range(model.n_layers))
        acts = ctx.collect(prompts, [f"resid_post.{L}" for L in layers], positions="last", desc=f"{name} probe activations")
        X = {L: acts[f"resid_post.{L}"].numpy().astype(np.float32) for L in layers}
        out: dict[str, Metric] = {}
        info = details.setdefault("probe", {})
        for suffix, y in targets.items():
            values, counts = np.unique(y, return_counts=True)
            keep = np.isin(y, values[counts >= MIN_PROBE_CLASS])
            if len(np.unique(y[keep])) < 2:
                info[f"{name}{suffix}"] = {"skipped": f"fewer than two classes with {MIN_PROBE_CLASS} or more items"}
                continue
            y_kept = y[keep]
            labels = {"probe": y_kept, "shuffled": shuffled_labels(y_kept, ctx.rng(len(out) + 1))}
            fits = cross_validate_grid({L: X[L][keep] for L in layers}, labels, n_folds=5, seed=ctx.seed, C=1.0)
            best = best_layers({method: {L: f.accuracy for L, f in per_layer.items()} for method, per_layer in fits.items()})
            key = f"{name}_probe{suffix}"
            for method, tag in (("probe", ""), ("shuffled", "_shuffled")):
                if suffix and method == "shuffled":
                    continue  # the depth probe is a side reading; the shuffled control belongs to the headline probe
                out[f"{key}{tag}_best_acc"] = ctx.metric(fits[method][best[method]].correct.astype(float))
                out[f"{key}{tag}_best_layer"] = ctx.metric(np.array([best[method]], dtype=float), higher_is_better=None)
            out[f"{key}_majority"] = ctx.metric(majority_hits(y_kept))
            info[f"{name}{suffix}"] = {
                "n": int(keep.sum()),
                "classes": sorted(map(str, np.unique(y_kept))),
                "best_layer": best,
                "acc_by_layer": {m: [round(fits[m][L].accuracy, 6) for L in layers] for m in fits},
            }
            for method in fits:
                curves.append(
                    Curve(
                        metric=f"{key}{'' if method == 'probe' else '_' + method}_acc",
                        plot=key,
                        label=method,
                        layers=layers,
                        values=info[f"{name}{suffix}"]["acc_by_layer"][method],
                        xlabel="layer (resid_post.L)",
                        ylabel="held-out probe accuracy",
                    )
                )
        return out

    def plot_probe(self, ctx, curves: list[Curve]) -> None:
        """One panel per probed target: accuracy by layer, real and shuffled labels."""
        plots = sorted({c.plot for c in curves})
        if not plots:
            return
        fig = ctx.figure(figsize=(5, 3 * len(plots)))
        axes = np.atleast_1d(fig.subplots(len(plots), 1, squeeze=False)[:, 0])
        for ax, plot in zip(axes, plots):
            for curve in (c for c in curves if c.plot == plot):
                ax.plot(
                    curve.layers, curve.values, marker="o", ms=3, ls="-" if curve.label == "probe" else ":", label=curve.label
                )
            ax.set_title(plot), ax.set_xlabel("layer (resid_post.L)"), ax.set_ylabel("held-out accuracy")
            ax.legend(fontsize=7)
        ctx.save_figure(fig, "probe_layers.png")

    # Notes --------------------------------------------------------------------------

    @staticmethod
    def notes(config: CodeVsLanguageConfig) -> list[str]:
        """The departures from the paper that change a number."""
        notes = [
            f"{config.shots} shots, the spec's prompt wording and FLD label-balanced shots: the paper gives neither its shot count nor its prompts",
            "models are compared as given, not the paper's token-matched GPT-2-small models trained from scratch on one corpus each",
            "fld_acc and babi_acc pool the items of their sub-tasks (equal to the mean of the sub-task accuracies when sub-tasks are of equal size)",
            "intervals use the run's --bootstrap resamples (the spec's n_boot)",
        ]
        if any(s.endswith("_gen") or s.startswith("babi_gen") for s in config.subtasks or []):
            notes.append(
                f"generated items ({config.n_items} per sub-task) stand in for FLD.v2 and bAbI; source=hub reads the papers' data sets"
            )
        if any(s.startswith("babi_hub") for s in config.subtasks or []):
            notes.append("hub bAbI candidates are every gold answer of the loaded test items")
        return notes
