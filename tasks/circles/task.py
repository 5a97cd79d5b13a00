"""weekday_circle and month_circle: modular arithmetic on circular features.

Engels, Michaud, Liao, Gurnee, Tegmark (2024), "Not All Language Model Features Are
Linear" (arXiv 2405.14860). Method, in the order the task runs it:

1. Data: every (alpha, beta) pair, "Let's do some day of the week math. Two days from
   Monday is" -> gamma = (alpha + beta) mod m (m = 7 weekdays, 12 months).
2. Behaviour: argmax over the m answer tokens (first token of " " + name) equals gamma.
3. Representation: at the alpha token (the last token of the day/month name), for every
   layer, PCA(5) + least squares onto (cos, sin) of 2*pi*alpha/m, held out by leaving one
   duration beta out; controls: shuffled labels and a random plane in the same PCA space
   (the spec's two), and ours, the same clusters put in a scrambled cyclic order.
4. Intervention: at resid_post.L_int, alpha token, replace the state by the task mean
   with its probe-plane component set to the circle point of another alpha' (the paper's
   circle patch), and count how often the answer moves to gamma' = (alpha' + beta) mod m;
   beside it the whole-state patch from the alpha' prompt (ceiling), the mean ablation
   (floor), `rotate` (keep the state, rotate only its probe coordinates) and the circle
   patch with the two control probes.

Choices where the paper is silent, as the spec directs:
- L_int defaults to the best held-out probe layer in the first half of the network; the
  paper's "layer l" is the input of block l, our resid_post.(l-1).
- Every probe and control is reported at its own best layer, by one rule (the highest
  held-out R^2, ties to the earliest; `probes.selection`): reading a control at the real
  probe's best layer would hand the real probe a selection advantage, and every
  real-minus-control gap would look bigger than it is. Each value is thus a maximum over
  layers, and its interval (over prompts, at that layer) does not include the choice.
- The intervention layer is chosen by the real probe's R^2, never by an intervention's
  outcome, and every patch and control is applied at that one layer.
- Months: the paper's text reads "{Num} months from {Month}"; we write "One month" for
  beta = 1 and keep "months" otherwise; `--task-arg template=code` gives the released
  code's wording ("days of the week math", "One months").
- The finding has the paper's three parts, each with its control (`circle_finding`):
  behaviour (accuracy above chance, 1/m), representation (the probe's held-out R^2 minus
  the 95th percentile of 100 scrambled orders' R^2, one paired bootstrap over prompts,
  above 0: `orders_metric` says why one scrambled order is not enough) and causal (the
  circle patch's success minus the same patch with a random-plane probe, per run,
  clustered by problem, above 0). A model at chance with a circle it does not use earns
  "representation only", not "holds". A stricter representation test (a class left out of
  the probe's training) is not run: the scrambled order is the control.
- `--limit N` limits the behaviour and intervention problems to the first N (by alpha,
  beta); the probes always use every prompt, because leave-one-beta-out needs them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from harness import (
    Curve,
    Edit,
    Facet,
    Finding,
    Metric,
    ModelShape,
    Reference,
    Task,
    TaskResult,
    UsageError,
    Workload,
    option,
    register_task,
    tokens,
)
from probes.circle import (
    CircleFit,
    CircularProbe,
    circle_targets,
    cross_validate_circle,
    cross_validate_circle_many,
    r2_many,
    r2_score_xy,
    shuffled_labels,
)
from probes.irreducibility import mixture_index, separability_index
from probes.selection import best_layer, best_layers

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
NUMBER_WORDS = ["One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten", "Eleven", "Twelve"]

PAPER = "Engels et al. 2024, Not All Language Model Features Are Linear (arXiv 2405.14860)"
CONTROLS = ("shuffled", "random_plane", "scrambled_order")
N_ORDERS = 100  # scrambled orders behind the representation facet's null distribution
ORDER_QUANTILE = 0.95
NO_REFERENCE = "no reference: the paper reports no value for this metric"


@dataclass(frozen=True)
class Problem:
    alpha: int
    beta: int
    gamma: int
    prompt: str
    name: str  # the alpha day or month as written in the prompt


def weekday_prompt(alpha: int, beta: int, template: str) -> str:
    duration = f"{NUMBER_WORDS[beta - 1]} day{'s' if beta > 1 else ''}"
    math = "days of the week math" if template == "code" else "day of the week math"
    return f"Let's do some {math}. {duration} from {WEEKDAYS[alpha]} is"


def month_prompt(alpha: int, beta: int, template: str) -> str:
    unit = "months" if (template == "code" or beta > 1) else "month"
    return f"Let's do some calendar math. {NUMBER_WORDS[beta - 1]} {unit} from {MONTHS[alpha]} is"


def make_problems(names: list[str], template: str) -> list[Problem]:
    """All m x m (alpha, beta) pairs, beta = 1..m, sorted by (alpha, beta); no randomness."""
    m = len(names)
    build = weekday_prompt if names is WEEKDAYS else month_prompt
    return [
        Problem(alpha, beta, (alpha + beta) % m, build(alpha, beta, template), names[alpha])
        for alpha in range(m)
        for beta in range(1, m + 1)
    ]


def answer_token_ids(tokenizer, names: list[str]) -> list[int]:
    """First token of " " + name for each answer; two names sharing it cannot be told apart."""
    ids = [tokenizer(" " + n, add_special_tokens=False)["input_ids"][0] for n in names]
    if len(set(ids)) != len(ids):
        clash = [n for n, i in zip(names, ids) if ids.count(i) > 1]
        raise UsageError(f"the tokenizer gives {', '.join(clash)} the same first token; this task needs distinct answer tokens")
    return ids


def name_positions(tokenizer, problems: list[Problem]) -> list[int]:
    """Index of the last token of the alpha name in each tokenised prompt (special tokens included)."""
    return [
        tokens.last_token_of_span(tokenizer, p.prompt, p.prompt.rindex(p.name), p.prompt.rindex(p.name) + len(p.name))
        for p in problems
    ]


def scrambled_order(alpha: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """Control (c), ours: move every class to a random place on the circle, never a rotation or reflection.

    The shuffled control permutes prompts and so breaks the clusters; this one keeps the m
    clusters and breaks only their cyclic order. With m = 7 clusters in a 5-D PCA space a
    linear map can place the cluster means almost anywhere, so a high R^2 here says the
    probe fits any arrangement of the classes, not an ordered circle.
    """
    dihedral = {tuple((s * np.arange(m) + r) % m) for r in range(m) for s in (1, -1)}
    while True:
        order = rng.permutation(m)
        if tuple(order) not in dihedral:
            return order[alpha]


def behaviour_metrics(ctx, scores, gamma: np.ndarray, answers: list[int]) -> tuple[np.ndarray, np.ndarray, dict[str, Metric]]:
    """Accuracy over the m answer tokens (the paper's metric) and over the whole vocabulary."""
    predicted = scores.logits.argmax(-1).numpy()
    correct = predicted == gamma
    full_vocab = scores.top_token.numpy() == np.asarray(answers)[gamma]
    return (
        predicted,
        correct,
        {
            "accuracy": ctx.metric(correct.astype(float)),
            "accuracy_full_vocab": ctx.metric(full_vocab.astype(float)),
        },
    )


def probe_metrics(
    ctx, fits: dict[str, dict[int, CircleFit]], targets: dict[str, np.ndarray]
) -> tuple[dict[str, Metric], dict[str, int]]:
    """The real probe ("probe") and each control, every one at its own best layer, and the gaps.

    fits: {method: {layer: held-out fit}}; targets: {method: (n, 2) circle points of the labels
    that method was fitted to}. The layer of each method is chosen by the same rule
    (`probes.selection.best_layers` on held-out R^2), so a control gets the same chance as the
    real probe. Each gap `probe_r2_minus_<control>` compares the two at their own best layers
    with one paired bootstrap over the same prompts (rows stay together).
    """
    best = best_layers({method: {L: f.r2 for L, f in per_layer.items()} for method, per_layer in fits.items()})
    metrics: dict[str, Metric] = {}
    rows = {method: np.hstack([fits[method][L].pred_xy, targets[method]]) for method, L in best.items()}
    for method, L in best.items():
        fit, suffix = fits[method][L], _suffix(method)
        metrics[f"probe_r2{suffix}"] = ctx.metric(rows[method], statistic=_r2_rows)
        metrics[f"probe_angle_error_deg{suffix}"] = ctx.metric(fit.angle_error_deg, higher_is_better=False)
        metrics[f"probe_class_acc{suffix}"] = ctx.metric(fit.correct.astype(float))
    for control in (c for c in CONTROLS if c in fits):
        paired = np.hstack([rows["probe"], rows[control]])
        metrics[f"probe_r2_minus_{control}"] = ctx.metric(paired, statistic=_r2_gap_rows, higher_is_better=True)
    return metrics, best


def orders_metric(
    ctx,
    X: dict[int, np.ndarray],
    orders: np.ndarray,
    real: CircleFit,
    alpha: np.ndarray,
    beta: np.ndarray,
    m: int,
    n_components: int,
) -> tuple[Metric, dict]:
    """The real probe's R^2 minus the 95th percentile of the R^2 of many scrambled orders.

    One scrambled order is one arbitrary arrangement of the m clusters, and with 7 or 12
    clusters in a 5-D PCA space how well a linear map fits an arrangement varies from one
    arrangement to the next more than from one resample of prompts to the next: on a
    random-weight model the true order, itself an arbitrary arrangement there, beats a given
    scrambled one about half the time, with an interval over prompts that excludes 0. So the
    representation facet compares the real order with the null distribution of N_ORDERS
    scrambled orders (each at its own best layer, the real probe's rule) and bootstraps
    prompts once for both: on each resample, real R^2 minus the orders' 95th percentile.
    """
    preds = {L: cross_validate_circle_many(X[L], orders, beta, m, n_components) for L in X}
    targets = circle_targets(orders, m)  # (K, n, 2)
    r2 = np.stack([r2_many(preds[L], targets) for L in sorted(X)], axis=1)  # (K, n_layers)
    layers = sorted(X)
    column = [best_layer(dict(enumerate(row))) for row in r2]  # each order's own best layer, by the probe's rule
    best = [layers[c] for c in column]
    chosen = np.stack([preds[L][k] for k, L in enumerate(best)])  # (K, n, 2)
    K, n = orders.shape
    rows = np.hstack(
        [real.pred_xy, circle_targets(alpha, m), np.concatenate([chosen, targets], axis=2).transpose(1, 0, 2).reshape(n, 4 * K)]
    )

    def statistic(r: np.ndarray) -> float:
        others = r[:, 4:].reshape(len(r), K, 4).transpose(1, 0, 2)
        return _r2_rows(r[:, :4]) - float(np.nanquantile(r2_many(others[..., :2], others[..., 2:]), ORDER_QUANTILE))

    order_r2 = r2[np.arange(K), column]
    summary = {
        "n": K,
        "quantile": ORDER_QUANTILE,
        "r2_q50": float(np.median(order_r2)),
        "r2_q95": float(np.quantile(order_r2, ORDER_QUANTILE)),
        "r2_max": float(order_r2.max()),
        "share_at_least_real": float((order_r2 >= real.r2).mean()),
    }
    return ctx.metric(rows, statistic=statistic), summary


@dataclass
class CircleConfig:
    """Defaults are the paper's settings."""

    template: Literal["paper", "code"] = option(
        "paper", "prompt wording: paper (the paper's text, 'One month') or code (the released code's)"
    )
    layer: int | None = option(None, "intervention layer (resid_post.L); none: the best probe layer in the first half", ge=0)
    n_components: int = option(5, "PCA dimensions before the circular probe", ge=2)
    intervention: bool = option(True, "run the circle patch and its controls")
    intervention_problems: int | None = option(
        None, "patch this many problems, drawn at random with the run's seed (each with all its alpha'); none: every one", ge=1
    )
    offdist: bool = option(False, "the (r, theta) grid: is alpha encoded in the angle alone?")
    irreducibility: bool = option(False, "separability S and mixture M_eps of the probe plane")


class CircleTask(Task):
    """Shared by both cycles; subclasses set `names` and the paper's reference numbers."""

    paper = PAPER
    version = "1.2"  # 1.1: each control at its own best layer; intervention intervals resample problems. 1.2: three facets
    Config = CircleConfig
    # `--preset quick`: sized so every task finishes on a laptop CPU; its own config hash, never mixed with full runs.
    presets = {"quick": {"intervention_problems": 24}}
    headline_metrics = [
        "accuracy",
        "probe_r2",
        "probe_r2_scrambled_order",
        "probe_r2_shuffled",
        "intervention_success",
        "intervention_success_patch",
        "intervention_logit_diff",
    ]
    metric_descriptions = {
        "accuracy": "argmax over the m answer tokens equals gamma (the paper's metric); n = problems",
        "accuracy_full_vocab": "argmax over the whole vocabulary is gamma's token",
        "probe_r2": "held-out R^2 of the circular probe at its best layer (leave one beta out; details.best_layers)",
        "probe_r2_{shuffled,random_plane,scrambled_order}": "the same probe on shuffled labels, a random plane, a non-cyclic order of the classes, each at its own best layer",
        "probe_angle_error_deg[_control]": "mean held-out angle error of the probe, degrees, at the method's best layer",
        "probe_class_acc[_control]": "held-out nearest-class accuracy of the probe, at the method's best layer",
        "probe_r2_minus_{shuffled,random_plane,scrambled_order}": "real minus control R^2, each at its own best layer, one paired bootstrap over prompts",
        "probe_r2_minus_scrambled_q95": "real R^2 minus the 95th percentile of 100 scrambled orders' R^2 (each at its own best layer), one bootstrap over prompts; details.scrambled_orders",
        "intervention_success[_method]": "share of (problem, alpha') runs whose answer moves to gamma'; n = problems (cluster bootstrap); methods: circle (none), _patch, _mean, _rotate, _shuffled, _random_plane",
        "intervention_logit_diff[_method]": "logit(gamma) - logit(gamma') after the edit (lower: moved further)",
        "intervention_success[_method]_on_correct": "the same on problems the model answers correctly",
        "intervention_success_minus_{random_plane,shuffled}": "per run, circle patch success minus the same patch with the control probe; clustered by problem",
        "clean_logit_diff": "logit(gamma) - logit(gamma') without an edit",
        "angle_consistency": "offdist=true: argmax follows the angle written into the probe plane (r >= 0.5)",
    }
    names: list[str]
    reference_accuracy: dict[str, float]
    reference_extra: dict[str, dict[str, float]] = {}

    @classmethod
    def workload(cls, config: CircleConfig, shape: ModelShape) -> Workload:
        """m^2 prompts of about 16 tokens scored and collected; m - 1 patched runs per patched problem, six
        edits each, computed from the alpha token on (about 8 tokens); every layer's alpha state in float64."""
        m = len(cls.names)
        problems = m * m
        patched = (config.intervention_problems or problems) * (m - 1) if config.intervention else 0
        return Workload(
            forward_tokens=2 * problems * 16 + patched * 6 * 8, activation_bytes=problems * shape.n_layers * shape.d_model * 8
        )

    def run(self, model, config: CircleConfig, ctx) -> TaskResult:
        m = len(self.names)
        ctx.check_layers("layer", [] if config.layer is None else [config.layer])
        tok = model.tokenizer
        problems = make_problems(self.names, config.template)
        answers = answer_token_ids(tok, self.names)
        positions = name_positions(tok, problems)
        prompts = [p.prompt for p in problems]
        alpha = np.array([p.alpha for p in problems])
        beta = np.array([p.beta for p in problems])
        gamma = np.array([p.gamma for p in problems])
        metrics: dict[str, Metric] = {}
        notes: list[str] = [self.wording_note(config.template)]
        details: dict = {"n_layers": model.n_layers, "answer_token_ids": answers}

        # Behaviour.
        used = np.array(ctx.limited(list(range(len(problems)))))
        scores = ctx.score([prompts[i] for i in used], answers, desc="behaviour")
        predicted, correct, behaviour = behaviour_metrics(ctx, scores, gamma[used], answers)
        metrics.update(behaviour)
        if behaviour["accuracy"].ci_low <= 1 / m <= behaviour["accuracy"].ci_high:
            notes.append("behaviour near chance")
        for r, i in enumerate(used):
            ctx.log_sample(
                {
                    "prompt": prompts[i],
                    "alpha": int(alpha[i]),
                    "beta": int(beta[i]),
                    "gamma": int(gamma[i]),
                    "predicted": int(predicted[r]),
                    "correct": bool(correct[r]),
                }
            )

        # Representation: every layer at the alpha token, in one pass.
        sites = [f"resid_post.{L}" for L in range(model.n_layers)]
        acts = ctx.collect(prompts, sites, positions=positions, desc="activations")
        X = {L: acts[f"resid_post.{L}"].numpy().astype(np.float64) for L in range(model.n_layers)}
        shuffled = shuffled_labels(alpha, ctx.rng(1))
        reordered = scrambled_order(alpha, m, ctx.rng(4))
        labels = {"probe": alpha, "shuffled": shuffled, "scrambled_order": reordered}
        fits = {
            method: {L: cross_validate_circle(X[L], lab, beta, m, config.n_components) for L in X}
            for method, lab in labels.items()
        }
        fits["random_plane"] = {
            L: cross_validate_circle(X[L], alpha, beta, m, config.n_components, random_plane=ctx.rng(2)) for L in X
        }
        targets = {method: circle_targets(labels.get(method, alpha), m) for method in fits}
        probe_results, best_by_method = probe_metrics(ctx, fits, targets)
        metrics.update(probe_results)
        orders = np.stack([scrambled_order(alpha, m, ctx.rng(6 + k)) for k in range(N_ORDERS)])
        beyond, details["scrambled_orders"] = orders_metric(
            ctx, X, orders, fits["probe"][best_by_method["probe"]], alpha, beta, m, config.n_components
        )
        metrics["probe_r2_minus_scrambled_q95"] = beyond
        best = best_by_method["probe"]
        details["best_layer"] = best
        details["best_layers"] = best_by_method
        notes.append(
            "probe_r2 and each control are read at their own best layer (details.best_layers, the highest held-out R^2): "
            "each is a maximum over layers, and its interval, over prompts at that layer, does not include the choice of layer"
        )

        def per_layer(method: str, attr: str) -> list[float]:
            return [round(float(getattr(fits[method][L], attr)), 6) for L in range(model.n_layers)]

        details["per_layer"] = {f"probe_r2{_suffix(method)}": per_layer(method, "r2") for method in fits}
        details["per_layer"].update(
            {
                "probe_angle_error_deg": per_layer("probe", "mean_angle_error_deg"),
                "probe_angle_error_deg_shuffled": per_layer("shuffled", "mean_angle_error_deg"),
                "probe_class_acc": per_layer("probe", "class_accuracy"),
            }
        )
        self.plot_circle(ctx, X[best], alpha, best, config.n_components)
        self.plot_layers(ctx, details["per_layer"], best)

        if config.irreducibility:
            plane = fits["probe"][best].pred_xy
            details["irreducibility"] = {
                "separability_bits": separability_index(plane),
                "mixture_index": mixture_index(plane, seed=ctx.seed),
            }

        # Intervention.
        if config.intervention:
            first_half = range(max(1, model.n_layers // 2))
            layer = config.layer if config.layer is not None else best_layer({L: fits["probe"][L].r2 for L in first_half})
            details["intervention_layer"] = layer
            patched = used
            if config.intervention_problems is not None and config.intervention_problems < len(used):
                patched = np.sort(ctx.rng(5).choice(used, size=config.intervention_problems, replace=False))
                notes.append(f"interventions on {len(patched)} of {len(used)} problems, drawn at random (intervention_problems)")
            metrics.update(
                self.intervene(ctx, X[layer], layer, problems, patched, positions, answers, alpha, shuffled, config, details)
            )
            if config.offdist:
                metrics["angle_consistency"] = self.offdist(ctx, X[layer], layer, problems, positions, answers, alpha, config)

        curves = Curve.each(details.get("per_layer", {}), range(model.n_layers))
        return TaskResult(metrics=metrics, reference=self.reference(), curves=curves, details=details, notes=notes)

    def intervene(self, ctx, H, layer, problems, used, positions, answers, alpha, shuffled, config, details) -> dict[str, Metric]:
        """Every (problem, alpha' != alpha) under each patch; success = answer moves to gamma'."""
        m = len(self.names)
        site = f"resid_post.{layer}"
        probe = CircularProbe(m, config.n_components).fit(H, alpha)
        probe_shuffled = CircularProbe(m, config.n_components).fit(H, shuffled)
        probe_plane = CircularProbe(m, config.n_components, random_plane=ctx.rng(3)).fit(H, alpha)
        index = {(p.alpha, p.beta): i for i, p in enumerate(problems)}
        runs = [(i, a2) for i in used for a2 in range(m) if a2 != problems[i].alpha]
        src = np.array([i for i, _ in runs])
        new_alpha = np.array([a2 for _, a2 in runs])
        old_gamma = np.array([problems[i].gamma for i in src])
        new_gamma = (new_alpha + np.array([problems[i].beta for i in src])) % m
        new_xy = circle_targets(new_alpha, m)
        mean = H.mean(0)
        delta = 2 * np.pi * (new_alpha - alpha[src]) / m
        values = {
            "": probe.hidden_state_for(new_xy),
            "_patch": H[[index[(a2, problems[i].beta)] for i, a2 in runs]],
            "_mean": np.repeat(mean[None], len(runs), 0),
            "_rotate": probe.rotate(H[src], delta),
            "_shuffled": probe_shuffled.hidden_state_for(new_xy),
            "_random_plane": probe_plane.hidden_state_for(new_xy),
        }
        prompts = [problems[i].prompt for i in src]
        pos = [positions[i] for i in src]
        clean = ctx.score(prompts[:: m - 1], answers, desc="clean", full_vocab=False).logits.numpy()  # one row per problem
        clean_correct = clean.argmax(-1) == old_gamma[:: m - 1]
        on_correct = np.repeat(clean_correct, m - 1)
        rows = np.arange(len(runs))
        out: dict[str, Metric] = {}
        successes: dict[str, np.ndarray] = {}
        for suffix, value in values.items():
            with ctx.intervene([Edit(site, "set", torch.as_tensor(value, dtype=torch.float32), position=pos)]):
                # Every token before the alpha token is the same with or without the edit: computed once.
                logits = ctx.score(
                    prompts, answers, desc=f"intervention{suffix or '_circle'}", prefix_lengths=pos, full_vocab=False
                ).logits.numpy()
            success = (logits.argmax(-1) == new_gamma).astype(float)
            successes[suffix] = success
            diff = logits[rows, old_gamma] - logits[rows, new_gamma]
            # A problem with all its alpha' runs is one unit: its m - 1 runs share the prompt and are not independent.
            out[f"intervention_success{suffix}"] = ctx.metric(success, unit=src)
            out[f"intervention_logit_diff{suffix}"] = ctx.metric(diff, unit=src, higher_is_better=False)
            if on_correct.any():
                out[f"intervention_success{suffix}_on_correct"] = ctx.metric(success[on_correct], unit=src[on_correct])
        for control in ("_random_plane", "_shuffled"):  # the same edit with a control probe, on the same runs
            out[f"intervention_success_minus{control}"] = ctx.metric(successes[""] - successes[control], unit=src)
        base_diff = (
            np.repeat(clean[np.arange(len(clean)), old_gamma[:: m - 1]], m - 1)
            - clean[np.repeat(np.arange(len(clean)), m - 1), new_gamma]
        )
        out["clean_logit_diff"] = ctx.metric(base_diff, unit=src, higher_is_better=None)
        details["intervention_runs"] = len(runs)
        details["problems_answered_correctly"] = int(clean_correct.sum())
        return out

    def offdist(self, ctx, H, layer, problems, positions, answers, alpha, config) -> Metric:
        """Write points (r cos t, r sin t) into the probe plane, beta = 2: does the answer follow the angle?"""
        m = len(self.names)
        probe = CircularProbe(m, config.n_components).fit(H, alpha)
        base = next(i for i, p in enumerate(problems) if p.alpha == 0 and p.beta == 2)
        radii = np.round(np.arange(0, 2.01, 0.1), 2)
        thetas = 2 * np.pi * np.arange(100) / 100
        r, t = np.meshgrid(radii, thetas, indexing="ij")
        xy = np.stack([r.ravel() * np.cos(t.ravel()), r.ravel() * np.sin(t.ravel())], 1)
        values = torch.as_tensor(probe.hidden_state_for(xy), dtype=torch.float32)
        prompts = [problems[base].prompt] * len(xy)
        with ctx.intervene([Edit(f"resid_post.{layer}", "set", values, position=[positions[base]] * len(xy))]):
            day = (
                ctx.score(prompts, answers, desc="offdist", prefix_lengths=[positions[base]] * len(xy), full_vocab=False)
                .logits.numpy()
                .argmax(-1)
            )
        implied = (np.round(t.ravel() * m / (2 * np.pi)).astype(int) + 2) % m
        keep = r.ravel() >= 0.5
        self.plot_offdist(ctx, r.ravel(), t.ravel(), day)
        return ctx.metric((day[keep] == implied[keep]).astype(float))

    def wording_note(self, template: str) -> str:
        """The prompt wording is a departure from one of the paper's two sources; say which."""
        if template == "code":
            return "prompts use the released code's wording ('days of the week math', 'One months')"
        if self.noun == "month":
            return "prompts use the paper's text, with 'One month' for beta = 1 (template=code gives the code's 'One months')"
        return "prompts use the paper's text"

    def reference(self) -> Reference:
        metrics = {model: {"accuracy": acc} for model, acc in self.reference_accuracy.items()}
        for model, extra in self.reference_extra.items():
            metrics.setdefault(model, {}).update(extra)
        no_ref = ["probe_r2", "probe_angle_error_deg", "probe_class_acc", "intervention_success"]
        return Reference(source=f"{PAPER}, Table 1 and section 5", metrics=metrics, notes={k: NO_REFERENCE for k in no_ref})

    # Plots.
    def plot_circle(self, ctx, H, alpha, layer, k) -> None:
        from matplotlib import colormaps

        centred = H - H.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        pcs = centred @ vt[:2].T
        fig = ctx.figure(figsize=(5, 5))
        ax = fig.subplots()
        cmap = colormaps["hsv"]
        m = len(self.names)
        for a in range(m):
            sel = alpha == a
            ax.scatter(pcs[sel, 0], pcs[sel, 1], color=cmap(a / m), label=self.names[a], s=25)
        ax.set_xlabel("PC1"), ax.set_ylabel("PC2")
        ax.set_title(f"{self.name}: resid_post.{layer}, {self.noun} token")
        ax.legend(fontsize=7, loc="best")
        ctx.save_figure(fig, "circle.png")

    def plot_layers(self, ctx, per_layer, best) -> None:
        fig = ctx.figure(figsize=(6, 3.5))
        ax = fig.subplots()
        for name in ("probe_r2", "probe_r2_shuffled", "probe_r2_random_plane", "probe_r2_scrambled_order"):
            ax.plot(per_layer[name], marker="o", ms=3, label=name)
        ax.axvline(best, color="grey", ls=":")
        ax.set_xlabel("layer (resid_post.L)"), ax.set_ylabel("held-out R²")
        ax.legend(fontsize=7)
        ctx.save_figure(fig, "probe_layers.png")

    def plot_offdist(self, ctx, r, t, day) -> None:
        fig = ctx.figure(figsize=(5, 5))
        ax = fig.subplots(subplot_kw={"projection": "polar"})
        ax.scatter(t, r, c=day, cmap="hsv", vmin=0, vmax=len(self.names), s=6)
        ax.set_title("argmax answer over the probe plane")
        ctx.save_figure(fig, "offdist.png")


def _suffix(method: str) -> str:
    """Metric-key suffix of a probe method: none for the real probe, "_<control>" for a control."""
    return "" if method == "probe" else f"_{method}"


def _r2_rows(rows: np.ndarray) -> float:
    """R^2 of held-out predictions stored as rows [pred_x, pred_y, target_x, target_y] (for the bootstrap)."""
    return r2_score_xy(rows[:, :2], rows[:, 2:4])


def _r2_gap_rows(rows: np.ndarray) -> float:
    """Real minus control R^2 from paired rows [real pred_x, pred_y, target_x, target_y, control's four]."""
    return _r2_rows(rows[:, :4]) - _r2_rows(rows[:, 4:])


def circle_finding(m: int, noun: str) -> Finding:
    """The paper's three parts: the model does the task, the state holds a circle, the model uses it."""
    return Finding(
        claim=f"the model adds on the {noun} cycle, reads it off a circle (beyond a scrambled order), "
        "and moving along the circle moves its answer (beyond the same edit on a random plane)",
        paper_verdict="circle found in Llama 3 8B and Mistral 7B; the circle patch moves the answer",
        facets=(
            Facet("behaviour", "accuracy", 1 / m, f"argmax over the {m} answers beats chance (1/{m})"),
            Facet(
                "representation",
                "probe_r2_minus_scrambled_q95",
                0.0,
                f"the circular probe reads the cycle held out better than 95% of {N_ORDERS} scrambled orders of the "
                "same classes (paired over prompts)",
            ),
            Facet(
                "causal",
                "intervention_success_minus_random_plane",
                0.0,
                "the circle patch moves the answer to gamma' more often than the same patch on a random plane (paired)",
            ),
        ),
    )


@register_task
class WeekdayCircle(CircleTask):
    name = "weekday_circle"
    description = "Day-of-week arithmetic ('Two days from Monday is'): behaviour, the circle of days in the residual stream, and moving along it."
    names = WEEKDAYS
    noun = "day"
    finding = circle_finding(len(WEEKDAYS), "weekday")
    reference_accuracy = {"meta-llama/Meta-Llama-3-8B": 0.592, "mistralai/Mistral-7B-v0.1": 0.633, "openai-community/gpt2": 0.163}
    # Mistral layer 8, weekdays: mean logit difference of the circle patch with a PCA probe vs an SAE-plane probe.
    reference_extra = {
        "mistralai/Mistral-7B-v0.1": {
            "intervention_logit_diff_layer8_pca_probe": -2.58,
            "intervention_logit_diff_layer8_sae_probe": -2.01,
            "intervention_logit_diff_layer8_probe_at_layer6_pca": 0.029,
            "intervention_logit_diff_layer8_probe_at_layer6_sae": -2.32,
        }
    }


@register_task
class MonthCircle(CircleTask):
    name = "month_circle"
    description = "Month arithmetic ('Four months from January is'): behaviour, the circle of months in the residual stream, and moving along it."
    presets = {"quick": {"intervention_problems": 36}}  # 12 months: 11 patched runs per problem
    names = MONTHS
    noun = "month"
    finding = circle_finding(len(MONTHS), "month")
    reference_accuracy = {"meta-llama/Meta-Llama-3-8B": 0.993, "mistralai/Mistral-7B-v0.1": 0.868, "openai-community/gpt2": 0.069}
