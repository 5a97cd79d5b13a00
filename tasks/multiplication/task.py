"""multiplication_digits: leading digits easy, units digit hard, and what the residual stream knows.

Gambardella, Iwasawa, Matsuo (2024), "Language Models Do Hard Arithmetic Tasks Easily and
Hardly Do Easy Arithmetic Tasks" (ACL 2024, arXiv 2406.02356). Method, in the order the
task runs it:

1. Data: for each cell (n, m), `n_per_cell` pairs a (n digits) x b (m digits), drawn
   uniformly from the run's seeded generator, one independent stream per cell (changing
   the list of cells leaves each cell's problems unchanged); pairs whose product has one
   digit are redrawn. Prompt `instruction + "{a}*{b}="`, expected continuation P = str(a*b).
2. Behaviour, per problem, at three steps of the answer:
   - first digit: the next token after the prompt;
   - own answer: greedy generation; the units digit is right if the parsed number has
     len(P) digits and ends in P[-1]; its confidence is the probability of P[-1] after
     prompt + G[:len(P)-1] (G: the model's own greedy digits; 0 if G is shorter);
   - given prefix: the next token after prompt + P[:-1] (teacher forcing).
   Accuracy is the argmax over the ten digit tokens; confidence the full-vocabulary
   probability of the correct digit token (the paper's quantity; with
   `mc_dropout_samples=K` averaged over K dropout passes, as the paper did).
3. Representation: resid_post.L at the "=" token for `probe_n` fresh problems of
   `probe_cell`; a linear probe per layer (probes.linear: standardised multinomial
   logistic regression, C by inner CV, 5-fold stratified outer CV) for the units digit of
   the product, with controls a % 10 and b % 10 (visible in the prompt), the leading digit
   P[0], and shuffled units-digit labels.

Digit tokenisation (`digit_scoring`): a merged token ("40") is never scored as a digit.
- teacher_forced: prompt + P tokenised jointly; every digit of P must be its own token,
  one of the ten digit tokens (Llama, Mistral, Gemma, Qwen2, SmolLM2 split digits); each
  scored context is the string before that digit's token, and its own tokenisation must
  equal the joint one up to that token (checked for every context).
- spaced: operands and answer written with a space between digits ("1 2 * 3 4 = 4 0 8",
  spaces put around the template's operators), so a GPT-2-style BPE gives one token per
  digit (" 4"), or the digit after a separate space token; the same checks apply.
- generate: greedy generation and parsing; accuracies only, confidences null (omitted
  from metrics, listed in details["null_metrics"]).
- auto: teacher_forced if "0123456789" and "=9876543210" tokenise one token per digit,
  else generate. The resolved mode is details["digit_scoring"].
Given-prefix in generate mode: the continuation of prompt + P[:-1] must start with P[-1].

Metric keys (every one with a 95% bootstrap interval over problems and its n):
- pooled over cells: first_digit_acc, first_digit_conf, last_digit_acc,
  last_digit_acc_lenient (last generated digit right, any length), last_digit_conf,
  last_digit_acc_given_prefix, last_digit_conf_given_prefix, conditioning_gain
  (mean conf given prefix / mean own conf - 1, bootstrapped as a ratio of means; omitted
  when the own confidence is 0), chance_first_digit, chance_last_digit (majority-label
  rate of P[0] and P[-1]);
- per cell: the same keys with "@NxM", e.g. last_digit_conf@5x5 (the paper's headline
  cell; details["headline_cell"] is the largest cell run);
- probe: every probe, the real one and each control (a % 10, b % 10, P[0], shuffled
  units-digit labels), is reported at its own best layer by one rule (probes.selection:
  highest held-out accuracy, ties to the earliest layer), so a real-minus-control gap
  compares best with best. Each value is a maximum over layers chosen on the same held-out
  predictions it reports, so it is slightly optimistic, the controls by the same amount;
  the interval leaves that choice out (said in the results' notes):
  probe_last_digit_acc, probe_best_layer, probe_a_last_digit_acc, probe_b_last_digit_acc,
  probe_first_digit_acc, probe_shuffled_acc, chance_probe_last_digit,
  probe_cell_last_digit_acc_given_prefix (behaviour on the probe problems themselves) and
  rep_behaviour_gap = probe_last_digit_acc - probe_cell_last_digit_acc_given_prefix (paired
  bootstrap over problems). Per-layer lists and each method's layer are in details["probe"]
  and the artifact probe_layers.json.

Choices where the paper is silent, as the spec directs: cells 2x2..5x5, the template
"{a}*{b}=", deterministic confidences unless mc_dropout_samples > 0 (dropout rate 0.1,
applied to nn.Dropout modules and attention dropout), and `--limit N` limits every cell
and the probe set to their first N problems.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal, Union

import numpy as np
import torch

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
    check_template,
    option,
    register_task,
)
from probes.linear import cross_validate_grid, majority_rate, shuffled_labels
from probes.selection import best_layers
from tasks.multiplication.digits import (
    DigitTokenError,
    check_prompts_end_in_equals,
    forced_context,
    parse_digits,
    render_prompt,
    resolve_mode,
)
from tasks.multiplication.problems import DEFAULT_CELLS, Problem, cell_rng, make_problems, parse_cell, parse_cells

log = logging.getLogger(__name__)


PAPER = (
    "Gambardella, Iwasawa, Matsuo 2024, Language Models Do Hard Arithmetic Tasks Easily and "
    "Hardly Do Easy Arithmetic Tasks (ACL 2024, arXiv 2406.02356)"
)


BEHAVIOUR = (
    "first_digit_acc",
    "first_digit_conf",
    "last_digit_acc",
    "last_digit_acc_lenient",
    "last_digit_conf",
    "last_digit_acc_given_prefix",
    "last_digit_conf_given_prefix",
)


CONFIDENCES = ("first_digit_conf", "last_digit_conf", "last_digit_conf_given_prefix", "conditioning_gain")


PROBE_LABELS = {"last_digit": "(a*b) % 10", "a_last_digit": "a % 10", "b_last_digit": "b % 10", "first_digit": "P[0]"}


# MC dropout.
def config_dropout(hf: Any) -> float:
    values = [v for k, v in hf.config.to_dict().items() if "dropout" in k and isinstance(v, (int, float))]
    return float(max(values, default=0.0))


# Config.
@dataclass
class MultiplicationConfig:
    """Defaults are the paper's settings where it gives them (see the module docstring)."""

    cells: list[str] = option(DEFAULT_CELLS, "digit lengths n x m of a and b, e.g. 2x2,5x5; grid: all of 1..5 x 1..5")
    n_per_cell: int = option(200, "problems per cell", ge=1)
    seed: int = option(0, "data seed, combined with the run's --seed", ge=0, lt=2**32)
    template: str = option("{a}*{b}=", "prompt with {a} and {b}; must end with '='")
    instruction: str = option("", "text prepended to every prompt as is")
    digit_scoring: Literal["auto", "teacher_forced", "spaced", "generate"] = option(
        "auto", "how digits are scored: teacher forcing on digit tokens, spaced digits, or generation (accuracies only)"
    )
    mc_dropout_samples: int = option(0, "confidences averaged over this many Monte Carlo dropout passes (0: deterministic)", ge=0)
    mc_dropout_p: float = option(0.1, "dropout rate of the MC passes", ge=0, lt=1)
    probe: bool = option(True, "fit the per-layer units-digit probe at '='")
    probe_n: int = option(2000, "problems of the probe cell", ge=10)
    probe_cell: str = option("3x3", "the cell the probe is trained on")
    probe_layers: Union[Literal["all"], list[int]] = option("all", "layers to probe: all, or a list such as 0,4,8")

    def __post_init__(self) -> None:
        parse_cells(self.cells)
        parse_cell(self.probe_cell)
        check_template(self.template, ("a", "b"))
        if not self.template.rstrip().endswith("="):
            raise ValueError(f"template {self.template!r} must end with '=' (the answer follows it)")
        if self.probe_layers != "all" and any(L < 0 for L in self.probe_layers):
            raise ValueError(f"probe_layers={self.probe_layers}: layers are 0 or more")


@register_task
class MultiplicationDigits(Task):
    name = "multiplication_digits"
    version = "1.0"
    paper = PAPER
    description = (
        "n-digit x m-digit multiplication ('12*34='): confidence in the first and the units digit of the "
        "product, the units digit given the correct higher digits, and a linear probe for it at '='."
    )
    Config = MultiplicationConfig
    # `--preset quick`: sized so every task finishes on a laptop CPU; its own config hash, never mixed with full runs.
    presets = {"quick": {"n_per_cell": 30, "probe_n": 300, "probe_layers": [0, 4, 8, 12, 16]}}
    headline_metrics = [
        "last_digit_conf@5x5",
        "last_digit_conf_given_prefix@5x5",
        "conditioning_gain@5x5",
        "first_digit_acc",
        "last_digit_acc_given_prefix",
        "probe_last_digit_acc",
        "rep_behaviour_gap",
    ]
    finding = Finding(
        claim="the units digit is confident given the correct prefix: its probability after the true higher digits "
        "beats its probability after the model's own answer (5x5, paired per problem)",
        paper_verdict="holds on Llama 2 13B (0.43 vs 0.13) and Mistral 7B (0.55 vs 0.22)",
        facets=(
            Facet(
                "behaviour",
                "last_digit_conf_prefix_minus_own@5x5",
                0.0,
                "per problem, the units digit's probability after the true prefix minus after the model's own",
            ),
        ),
    )
    metric_descriptions = {
        "first_digit_acc": "the first product digit is the argmax of the ten digit tokens after '=' (generate mode: the first generated digit is right)",
        "first_digit_conf": "probability (full vocabulary) of the correct first digit after '='",
        "last_digit_acc": "the model's own greedy answer has the product's length and ends in its units digit",
        "last_digit_acc_lenient": "the last digit the model generates is the units digit, whatever the length",
        "last_digit_conf": "probability of the correct units digit after the model's own higher digits (0 when its answer is too short or cannot be tokenised: counted in notes)",
        "last_digit_acc_given_prefix": "the units digit is the argmax after the correct higher digits (teacher forcing)",
        "last_digit_conf_given_prefix": "probability of the correct units digit after the correct higher digits",
        "last_digit_conf_prefix_minus_own": "per problem whose own answer reached the units digit and was scored, last_digit_conf_given_prefix minus last_digit_conf: the finding's paired gap; n = those problems",
        "conditioning_gain": "mean confidence given the prefix / mean own confidence - 1 (ratio of means, bootstrapped over problems)",
        "chance_first_digit": "majority-label rate of the first product digit (chance line)",
        "chance_last_digit": "majority-label rate of the units digit (chance line)",
        "*@NxM": "the same quantity on cell NxM only (n-digit times m-digit problems)",
        "probe_last_digit_acc": "held-out accuracy of a linear probe for (a*b) % 10 on resid_post at '=', at its own best layer",
        "probe_best_layer": "the layer the units-digit probe is reported at (highest held-out accuracy, ties to the earliest)",
        "probe_a_last_digit_acc": "control: probe for a % 10 (visible in the prompt), at its own best layer",
        "probe_b_last_digit_acc": "control: probe for b % 10 (visible in the prompt), at its own best layer",
        "probe_first_digit_acc": "control: probe for the first product digit P[0], at its own best layer",
        "probe_shuffled_acc": "control: probe for permuted units-digit labels, at its own best layer (memorisation plus the maximum over layers)",
        "chance_probe_last_digit": "majority-label rate of the units digit on the probe problems",
        "probe_cell_last_digit_acc_given_prefix": "behaviour on the probe problems: units digit right given the correct prefix",
        "rep_behaviour_gap": "probe_last_digit_acc - probe_cell_last_digit_acc_given_prefix, paired over the same problems",
    }

    @classmethod
    def workload(cls, config: MultiplicationConfig, shape: ModelShape) -> Workload:
        """Per cell n_per_cell problems (about 14 tokens) answered (about 8 tokens) and scored digit by digit;
        the probe cell's '=' state at every probed layer, float32."""
        cells = len(config.cells)
        layers = shape.n_layers if config.probe_layers == "all" else len(config.probe_layers)
        probe = config.probe_n if config.probe else 0
        return Workload(
            forward_tokens=cells * config.n_per_cell * 14 * 3 + probe * 14 * 2,
            generated_tokens=cells * config.n_per_cell * 8,
            activation_bytes=probe * layers * shape.d_model * 4,
        )

    def run(self, model, config: MultiplicationConfig, ctx) -> TaskResult:
        tok = model.tokenizer
        cells = parse_cells(config.cells)
        layers = self.probe_layers(config, model.n_layers)
        problems_by_cell = {
            f"{n}x{m}": list(ctx.limited(make_problems(n, m, config.n_per_cell, cell_rng(ctx, config.seed, n, m, 0))))
            for n, m in cells
        }
        pn, pm = parse_cell(config.probe_cell)
        probe_problems = (
            list(ctx.limited(make_problems(pn, pm, config.probe_n, cell_rng(ctx, config.seed, pn, pm, 1))))
            if config.probe
            else []
        )
        checked = [p for ps in problems_by_cell.values() for p in ps] + probe_problems
        spaced_check = config.digit_scoring == "spaced"
        mode, digit_ids = resolve_mode(
            tok,
            config.digit_scoring,
            [render_prompt(config.template, config.instruction, p.a, p.b, spaced_check) for p in checked],
            [p.product for p in checked],
        )
        spaced = mode == "spaced"
        metrics: dict[str, Metric] = {}
        unmeasured: dict[str, str] = {}
        notes: list[str] = []
        curves: list[Curve] = []
        details: dict[str, Any] = {
            "digit_scoring": mode,
            "digit_token_ids": digit_ids,
            "n_layers": model.n_layers,
            "cells": [f"{n}x{m}" for n, m in cells],
        }
        if mode == "generate":
            details["null_metrics"] = list(CONFIDENCES)
            notes.append(
                "digit_scoring=generate: accuracies only, confidences are null "
                "(for confidences with a digit-merging tokenizer, try digit_scoring=spaced)"
            )
        if config.mc_dropout_samples:
            if config_dropout(model.hf) == 0:
                log.warning("the model's config has no dropout: MC dropout uses mc_dropout_p=%s", config.mc_dropout_p)
            notes.append(f"confidences averaged over {config.mc_dropout_samples} MC dropout passes, p={config.mc_dropout_p}")

        # Behaviour, cell by cell, pooled at the end.
        per_cell: dict[str, dict[str, np.ndarray]] = {}
        for cell, problems in problems_by_cell.items():
            per_cell[cell] = self.behaviour(ctx, model, problems, config, mode, digit_ids, desc=cell)
            for i, p in enumerate(problems):
                ctx.log_sample(
                    {
                        "cell": cell,
                        "a": p.a,
                        "b": p.b,
                        "product": p.product,
                        **{k: _jsonable(v[i]) for k, v in per_cell[cell].items()},
                    }
                )
        pooled = {k: np.concatenate([per_cell[c][k] for c in per_cell]) for k in per_cell[next(iter(per_cell))]}
        notes += self.fallback_notes(pooled, details)
        all_problems = [p for c in problems_by_cell for p in problems_by_cell[c]]
        metrics.update(self.behaviour_metrics(ctx, pooled, all_problems, mode, suffix="", unmeasured=unmeasured))
        table: dict[str, dict[str, float | None]] = {}
        for cell, values in per_cell.items():
            cell_metrics = self.behaviour_metrics(
                ctx, values, problems_by_cell[cell], mode, suffix=f"@{cell}", unmeasured=unmeasured
            )
            metrics.update(cell_metrics)
            table[cell] = {k.split("@")[0]: round(v.value, 6) for k, v in cell_metrics.items()}
        details["per_cell"] = table
        details["headline_cell"] = max(per_cell, key=lambda c: (sum(map(int, c.split("x"))), c))
        details["examples"] = self.examples(per_cell, problems_by_cell, config, spaced)
        self.plot_heatmap(ctx, table, mode)

        # Representation at "=".
        if config.probe:
            if len(probe_problems) < 10:
                notes.append("probe skipped: fewer than 10 probe problems (raise --limit)")
            else:
                metrics.update(self.probe(ctx, model, probe_problems, layers, config, mode, digit_ids, details, curves))
                if len(layers) > 1:
                    notes.append(
                        f"probe accuracies are each method's maximum over {len(layers)} layers (each its own "
                        "best layer by the same rule, details.probe.best_layer); the intervals leave out "
                        "that choice, which favours every method alike"
                    )
        return TaskResult(
            metrics=metrics, reference=self.reference(), curves=curves, details=details, notes=notes, unmeasured=unmeasured
        )

    # Behaviour.
    def behaviour(self, ctx, model, problems: list[Problem], config, mode: str, digit_ids, desc: str) -> dict[str, np.ndarray]:
        """Per-problem correctness and confidences at the first digit, the own units digit, and given the prefix."""
        spaced = mode == "spaced"
        tok = model.tokenizer
        prompts = [render_prompt(config.template, config.instruction, p.a, p.b, spaced) for p in problems]
        check_prompts_end_in_equals(tok, prompts)
        products = [p.product for p in problems]
        max_new = max(len(P) for P in products) * (2 if spaced else 1) + 2
        generated = ctx.generate(prompts, max_new_tokens=max_new, desc=f"{desc} answers")
        G = [parse_digits(g, spaced) for g in generated]
        first_g = np.array([bool(g) and g[0] == P[0] for g, P in zip(G, products)])
        last_acc = np.array([len(g) == len(P) and g[-1] == P[-1] for g, P in zip(G, products)])
        lenient = np.array([bool(g) and g[-1] == P[-1] for g, P in zip(G, products)])
        out: dict[str, np.ndarray] = {
            "last_digit_acc": last_acc,
            "last_digit_acc_lenient": lenient,
            "generated": np.array(generated, dtype=object),
            "parsed": np.array(G, dtype=object),
        }
        if mode == "generate":
            prefixed = [prompt + P[:-1] for prompt, P in zip(prompts, products)]
            cont = ctx.generate(prefixed, max_new_tokens=2, desc=f"{desc} given prefix")
            out["first_digit_acc"] = first_g
            out["last_digit_acc_given_prefix"] = np.array([c[:1] == P[-1] for c, P in zip(cont, products)])
            return out

        # Teacher-forced contexts: first digit, units digit given the true prefix, units digit after the own prefix.
        first = [forced_context(tok, q, P, 0, spaced, digit_ids) for q, P in zip(prompts, products)]
        given = [forced_context(tok, q, P, len(P) - 1, spaced, digit_ids) for q, P in zip(prompts, products)]
        own: list[str | None] = []
        status: list[str] = []  # why an own confidence is 0 without being scored: "short" or "untokenisable"
        for q, P, g in zip(prompts, products, G):
            if len(g) < len(P) - 1:
                own.append(None)  # the model stopped before the units position: confidence 0
                status.append("short")
                continue
            try:
                own.append(forced_context(tok, q, g[: len(P) - 1] + P[-1], len(P) - 1, spaced, digit_ids))
                status.append("scored")
            except DigitTokenError as e:
                log.info("own-answer context not scored (confidence 0): %s", e)
                own.append(None)
                status.append("untokenisable")
        out["own_conf_status"] = np.array(status, dtype=object)
        has_own = [i for i, c in enumerate(own) if c is not None]
        contexts = first + given + [own[i] for i in has_own]
        target = np.array(
            [int(P[0]) for P in products] + [int(P[-1]) for P in products] + [int(products[i][-1]) for i in has_own]
        )
        scores = ctx.score(contexts, digit_ids, desc=f"{desc} digits")
        correct = scores.logits.argmax(-1).numpy() == target
        probs = scores.logprobs.exp().numpy()[np.arange(len(target)), target]
        if config.mc_dropout_samples:
            probs = self.mc_probs(ctx, model, contexts, digit_ids, target, config)
        k = len(problems)
        own_conf = np.zeros(k)
        own_conf[has_own] = probs[2 * k :]
        out.update(
            {
                "first_digit_acc": correct[:k],
                "first_digit_conf": probs[:k],
                "last_digit_acc_given_prefix": correct[k : 2 * k],
                "last_digit_conf_given_prefix": probs[k : 2 * k],
                "last_digit_conf": own_conf,
            }
        )
        return out

    @staticmethod
    def fallback_notes(pooled: dict[str, np.ndarray], details: dict[str, Any]) -> list[str]:
        """Count the problems whose numbers come from a fallback rather than a measurement, for the notes."""
        n = len(pooled["parsed"])
        no_digits = int(sum(g == "" for g in pooled["parsed"]))
        details["n_generations_without_digits"] = no_digits
        notes = []
        if no_digits:
            notes.append(
                f"{no_digits} of {n} generations contain no digit; they count as wrong (last_digit_acc, "
                "first_digit_acc in generate mode)"
            )
        if "own_conf_status" in pooled:
            status = pooled["own_conf_status"]
            short, untok = int(np.sum(status == "short")), int(np.sum(status == "untokenisable"))
            details["own_conf_zero"] = {"short": short, "untokenisable": untok}
            if short:
                notes.append(f"last_digit_conf: {short} of {n} own answers stop before the units digit; their confidence is 0")
            if untok:
                notes.append(
                    f"last_digit_conf: {untok} of {n} own answers cannot be tokenised digit by digit in context; "
                    "their confidence is set to 0 (not measured)"
                )
        return notes

    def mc_probs(self, ctx, model, contexts: list[str], digit_ids, target: np.ndarray, config) -> np.ndarray:
        """Mean probability of the target digit over K forward passes with dropout on (the paper's confidence)."""
        total = np.zeros(len(contexts))
        with ctx.dropout(config.mc_dropout_p) as n_sites:
            if n_sites == 0:
                raise UsageError("mc_dropout_samples needs dropout modules, and this model has none: set mc_dropout_samples=0")
            torch.manual_seed(ctx.seed)
            for _ in range(config.mc_dropout_samples):
                lp = ctx.score(contexts, digit_ids, desc="MC dropout").logprobs.numpy()
                total += np.exp(lp[np.arange(len(target)), target])
        return total / config.mc_dropout_samples

    @staticmethod
    def behaviour_metrics(
        ctx, values: dict[str, np.ndarray], problems: list[Problem], mode: str, suffix: str, unmeasured: dict[str, str]
    ) -> dict[str, Metric]:
        """The behaviour metrics of one cell (or, suffix "", of all); `unmeasured` gains the gaps no problem could score."""
        out: dict[str, Metric] = {}
        for key in BEHAVIOUR:
            if key in values:
                out[key + suffix] = ctx.metric(values[key].astype(float))
        if "last_digit_conf" in values:
            rows = np.stack([values["last_digit_conf_given_prefix"], values["last_digit_conf"]], 1)
            if rows[:, 1].mean() > 0:
                out["conditioning_gain" + suffix] = ctx.metric(rows, statistic=_gain, higher_is_better=None)
            # Paired only where the own answer reached the units digit and was scored: a 0 put in for an
            # answer that stopped short, or could not be tokenised, is no measurement to pair with.
            scored = values["own_conf_status"] == "scored" if "own_conf_status" in values else np.ones(len(rows), bool)
            if scored.any():
                out["last_digit_conf_prefix_minus_own" + suffix] = ctx.metric(rows[scored, 0] - rows[scored, 1])
            else:
                unmeasured["last_digit_conf_prefix_minus_own" + suffix] = (
                    "no problem's own answer reached the units digit and was scored"
                )
        for key, digit in (("chance_first_digit", 0), ("chance_last_digit", -1)):
            labels = np.array([p.product[digit] for p in problems])
            majority = max(set(labels.tolist()), key=lambda d: (np.sum(labels == d), d))
            out[key + suffix] = ctx.metric((labels == majority).astype(float), higher_is_better=None)
        return out

    def examples(self, per_cell, problems_by_cell, config, spaced: bool) -> list[dict[str, str]]:
        """Two problems per cell with the model's own answer, for reading a results file."""
        out = []
        for cell, problems in problems_by_cell.items():
            for i, p in enumerate(problems[:2]):
                out.append(
                    {
                        "prompt": render_prompt(config.template, config.instruction, p.a, p.b, spaced),
                        "product": p.product,
                        "generated": str(per_cell[cell]["generated"][i]),
                    }
                )
        return out

    # Representation.
    @staticmethod
    def probe_layers(config, n_layers: int) -> list[int]:
        if config.probe_layers == "all":
            return list(range(n_layers))
        layers = sorted(set(config.probe_layers))
        if layers[-1] >= n_layers:
            raise UsageError(
                f"--task-arg probe_layers={config.probe_layers}: layer {layers[-1]} is past the model's "
                f"depth ({n_layers} layers, 0..{n_layers - 1})"
            )
        return layers

    def probe(
        self,
        ctx,
        model,
        problems: list[Problem],
        layers: list[int],
        config,
        mode: str,
        digit_ids,
        details,
        curves: list[Curve],
    ) -> dict[str, Metric]:
        spaced = mode == "spaced"
        prompts = [render_prompt(config.template, config.instruction, p.a, p.b, spaced) for p in problems]
        check_prompts_end_in_equals(model.tokenizer, prompts)
        acts = ctx.collect(prompts, [f"resid_post.{L}" for L in layers], positions="last", desc="probe activations")
        X = {L: acts[f"resid_post.{L}"].numpy() for L in layers}
        del acts
        labels = {
            "last_digit": np.array([p.a * p.b % 10 for p in problems]),
            "a_last_digit": np.array([p.a % 10 for p in problems]),
            "b_last_digit": np.array([p.b % 10 for p in problems]),
            "first_digit": np.array([int(p.product[0]) for p in problems]),
        }
        pn, pm = parse_cell(config.probe_cell)
        labels["shuffled"] = shuffled_labels(labels["last_digit"], cell_rng(ctx, config.seed, pn, pm, 2))
        fits = cross_validate_grid(X, labels, n_folds=5, seed=ctx.seed)  # independent fits, spread over worker processes
        by_layer = {name: [round(fits[name][L].accuracy, 6) for L in layers] for name in labels}
        # One rule for every method: the real probe and each control at its own best layer.
        best = best_layers({name: {L: fits[name][L].accuracy for L in layers} for name in labels})
        chance = {name: majority_rate(y) for name, y in labels.items()}
        out: dict[str, Metric] = {}
        target_best = best["last_digit"]
        out["probe_last_digit_acc"] = ctx.metric(fits["last_digit"][target_best].correct.astype(float))
        out["probe_best_layer"] = Metric(
            value=target_best, ci_low=target_best, ci_high=target_best, n=len(problems), higher_is_better=None
        )
        for name in ("a_last_digit", "b_last_digit", "first_digit"):
            out[f"probe_{name}_acc"] = ctx.metric(fits[name][best[name]].correct.astype(float))
        out["probe_shuffled_acc"] = ctx.metric(fits["shuffled"][best["shuffled"]].correct.astype(float), higher_is_better=None)
        out["chance_probe_last_digit"] = ctx.metric(
            (labels["last_digit"] == np.bincount(labels["last_digit"]).argmax()).astype(float), higher_is_better=None
        )

        # Behaviour on the same problems: does the model output what its residual stream encodes?
        products = [p.product for p in problems]
        if mode == "generate":
            cont = ctx.generate([q + P[:-1] for q, P in zip(prompts, products)], max_new_tokens=2, desc="probe cell given prefix")
            behaviour = np.array([c[:1] == P[-1] for c, P in zip(cont, products)])
        else:
            given = [forced_context(model.tokenizer, q, P, len(P) - 1, spaced, digit_ids) for q, P in zip(prompts, products)]
            behaviour = (
                ctx.score(given, digit_ids, desc="probe cell given prefix").logits.argmax(-1).numpy() == labels["last_digit"]
            )
        out["probe_cell_last_digit_acc_given_prefix"] = ctx.metric(behaviour.astype(float))
        paired = np.stack([fits["last_digit"][target_best].correct, behaviour], 1).astype(float)
        out["rep_behaviour_gap"] = ctx.metric(paired, statistic=lambda r: r[:, 0].mean() - r[:, 1].mean(), higher_is_better=None)

        details["probe"] = {
            "cell": config.probe_cell,
            "n": len(problems),
            "site": "resid_post.L at '='",
            "layers": layers,
            "labels": {**PROBE_LABELS, "shuffled": "(a*b) % 10, permuted"},
            **{f"{name}_acc_by_layer": by_layer[name] for name in labels},
            "best_layer": best,
            "chance": chance,
            "C_by_layer": {str(L): fits["last_digit"][L].C for L in layers},
            "fold_accuracy_at_best": fits["last_digit"][target_best].fold_accuracy,
        }
        details["probe"]["probe_last_digit_acc_by_layer"] = by_layer["last_digit"]
        curves += Curve.each({f"probe_{name}_acc": by_layer[name] for name in labels}, layers, ylabel="held-out probe accuracy")
        ctx.save_json("probe_layers.json", details["probe"])
        self.plot_probe(ctx, layers, by_layer, chance, target_best, config.probe_cell)
        return out

    # Reference.
    @staticmethod
    def reference() -> Reference:
        note = (
            "paper: mean probability of the correct digit under Monte Carlo dropout (passes and rate not given), "
            "5x5 problems, from the abstract; ours is deterministic unless mc_dropout_samples > 0; "
            "base or chat variant of the model not stated"
        )
        metrics = {
            "meta-llama/Llama-2-13b-hf": {
                "last_digit_conf@5x5": 0.13,
                "last_digit_conf_given_prefix@5x5": 0.43,
                "conditioning_gain@5x5": 2.3,
            },
            "mistralai/Mistral-7B-v0.1": {
                "last_digit_conf@5x5": 0.22,
                "last_digit_conf_given_prefix@5x5": 0.55,
                "conditioning_gain@5x5": 1.5,
            },
        }
        none = "no reference: the paper reports no value for this metric"
        notes = {
            "last_digit_conf@5x5": note,
            "last_digit_conf_given_prefix@5x5": note,
            "conditioning_gain@5x5": "paper: relative change +230% (Llama 2-13B) and +150% (Mistral-7B), " + note,
            "first_digit_conf": "paper: 'often correct and confident', no number",
            "probe_last_digit_acc": none,
            "last_digit_acc": "paper reports confidences, not accuracies",
        }
        return Reference(source=f"{PAPER}, abstract", metrics=metrics, notes=notes)

    # Artifacts.
    @staticmethod
    def plot_heatmap(ctx, table: dict[str, dict[str, float | None]], mode: str) -> None:
        columns = [c for c in BEHAVIOUR + ("chance_first_digit", "chance_last_digit") if any(c in row for row in table.values())]
        cells = list(table)
        grid = np.array([[table[c].get(k, np.nan) for k in columns] for c in cells], dtype=float)
        fig = ctx.figure(figsize=(1.3 * len(columns) + 1.5, 0.45 * len(cells) + 1.8))
        ax = fig.subplots()
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for i in range(len(cells)):
            for j in range(len(columns)):
                if np.isfinite(grid[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{grid[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if grid[i, j] < 0.5 else "black",
                    )
        ax.set_xticks(range(len(columns)), [c.replace("_", "\n", 2) for c in columns], fontsize=7)
        ax.set_yticks(range(len(cells)), cells, fontsize=8)
        ax.set_ylabel("digits (n x m)")
        ax.set_title(f"multiplication_digits ({mode})", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.03)
        ctx.save_figure(fig, "heatmap.png")

    @staticmethod
    def plot_probe(ctx, layers, by_layer, chance, best, cell) -> None:
        fig = ctx.figure(figsize=(6.5, 3.8))
        ax = fig.subplots()
        styles = {
            "last_digit": ("(a*b) % 10", "C0"),
            "a_last_digit": ("a % 10", "C1"),
            "b_last_digit": ("b % 10", "C2"),
            "first_digit": ("P[0]", "C3"),
            "shuffled": ("shuffled (a*b) % 10", "grey"),
        }
        for name, (label, color) in styles.items():
            ax.plot(layers, by_layer[name], marker="o", ms=3, color=color, label=label)
        for name in ("last_digit", "first_digit"):
            ax.axhline(chance[name], color=styles[name][1], ls=":", lw=1)
        ax.axvline(best, color="grey", ls="--", lw=0.8)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("layer (resid_post.L, at '=')"), ax.set_ylabel("held-out accuracy (5-fold)")
        ax.set_title(f"linear probes, cell {cell}; dotted: majority-label rate", fontsize=9)
        ax.legend(fontsize=7)
        ctx.save_figure(fig, "probe_layers.png")


def _gain(rows: np.ndarray) -> float:
    own = rows[:, 1].mean()
    return float(rows[:, 0].mean() / own - 1) if own > 0 else float("nan")


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v if isinstance(v, (int, float, str, type(None), list, dict)) else str(v)
