"""number_helix: numbers as helices, and addition, in the residual stream.

Kantamneni & Tegmark (2025), "Language Models Use Trigonometry to Do Addition"
(arXiv 2502.00873). Method, in the order the task runs it:

1. Data: the grid a, b in 0..99 (a-major), a seeded subsample of `n_problems`;
   prompt "Output ONLY a number. {a}+{b}=" (Llama models: "The following is a correct
   addition problem.\\n{a}+{b}=").
2. Behaviour: greedy generation of up to 4 tokens; correct when the leading integer of
   the text equals a + b (works for tokenisers that split digits).
3. Representation: resid_post.L at the a token (the last token of a) for a = 0..99 and
   a fixed b, every layer. Five-fold cross-validation over a values: least squares on
   the helix basis [a, cos, sin for T in 2, 5, 10, 100] after PCA to 100 dimensions,
   held-out R^2 in the full residual space against linear, circle, polynomial and
   permuted-label fits, and the top-9 PCA projection as a ceiling.
4. Causal test (the paper's patching with fits): corrupted prompt a'+b, the a' token's
   state at layer L replaced by the clean state of a (layer patch) or by a fit's
   reconstruction of it (helix, PCA-9, circle, poly, shuffled helix); LD = patched minus
   corrupted logit of the answer a+b, on triples the model answers correctly.
5. Swap: on prompt a+b, replace the component of the a state in the helix subspace
   (the span of C) by C B(a') at layer L, keeping the rest, and generate: does the
   answer become a'+b? Controls: the same displacement mapped into a random subspace of
   the same rank, and the shuffled-label helix. `swap_op=add` instead adds
   C (B(a') - B(a)), keeping the in-subspace part the fit does not explain (a
   departure, written into the notes).

Choices where the paper is silent or its setup does not hold:
- Digit-splitting tokenisers (Gemma, SmolLM2, Llama 2, Mistral): the a position is the
  last token of a (its units digit). The LD is measured at the first answer token where
  a+b and a'+b differ, teacher-forced on their common token prefix (for single-token
  numbers, the paper's next-token logit). Triples whose answers are token prefixes of one
  another (1 and 12) cannot be told apart at one token and are skipped.
- Triples are drawn from pairs of evaluated problems sharing b (with n_problems=10000,
  the whole grid, as in the paper); each draw is a try, at most 20 N tries.
- Every fit and baseline is reported at its own best layer by one rule (highest held-out
  R^2, ties to the earliest; `probes.selection`), so the linear, circle, polynomial and
  shuffled baselines get the chance the helix gets; the gaps (`helix_minus_linear`,
  `helix_minus_shuffled`) compare the two at their own best layers with one paired
  bootstrap over the same a values.
- The finding has three facets (`NumberHelix.finding`): behaviour (accuracy above 1/199, a
  uniform guess among the sums), representation (`helix_minus_scrambled_digits_q95`) and
  causal (the swap's success minus the same displacement in a random subspace, paired
  per triple and clustered by a). The representation's control is a null distribution,
  not the linear fit: where a tokeniser splits digits, a random-weight model's a-state is
  a function of its digit tokens, which the T = 2, 5, 10 columns fit, and on such a model
  `helix_minus_linear` and `helix_minus_shuffled` both exclude 0 (tiny random Llama:
  0.47 [0.44, 0.50]). Relabelling a by one permutation of the ten digits (a = 10 t + u ->
  10 pi(t) + pi(u)) keeps that structure and breaks only the digits' order; the helix in
  the true a must beat the 95th percentile of 50 such relabellings (each at its own best
  layer), on every bootstrap resample of the a values.
- `patch_ld_*` is the maximum over layers of the mean LD (the paper's Table 1), each
  method at its own best layer; its interval is over triples at that layer and does not
  include the choice of layer (said in the notes). The swap layer is chosen by the helix
  patch LD on the same triples.
- `n_problems` unset: 10000 (the paper) on an accelerator, 1000 on CPU, settled by
  `resolve_config` before the config is hashed, so the results record the number used.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal, Optional

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
    check_template,
    option,
    register_task,
    tokens,
)
from probes.helix import (
    BasisFit,
    HeldOut,
    PCAFit,
    basis_functions,
    cross_validate,
    cross_validate_many,
    helix_basis,
    kfold_indices,
    r2_from_rows,
    random_subspace_map,
)
from probes.selection import best_layer, best_layers

PAPER = "Kantamneni & Tegmark 2025, Language Models Use Trigonometry to Do Addition (arXiv 2502.00873)"
NO_REFERENCE = "no reference: the paper reports no value for this metric"
TEMPLATES = {
    "gptj": "Output ONLY a number. {a}+{b}=",
    "llama": "The following is a correct addition problem.\n{a}+{b}=",
}
FIT_B = 0  # the b of the prompts whose a-token states are fitted: b comes after a, so any b gives the same states
PATCH_METHODS = ("layer_patch", "helix", "pca9", "circle", "poly", "helix_shuffled")
FITS = ("helix", "linear", "circle", "poly", "helix_shuffled", "pca9_recon")
# The leading integer, not followed by more digits, a decimal part, or digits after a space ("5 7" is no answer).
LEADING_INT = re.compile(r"\s*(-?\d+)(?!\d|\.\d|[ \t]+\d)")
GAPS = {"helix_minus_linear": "linear", "helix_minus_shuffled": "helix_shuffled"}
N_RELABELLINGS = 50  # digit relabellings behind the representation facet's null distribution
RELABEL_QUANTILE = 0.95


@dataclass(frozen=True)
class Problem:
    a: int
    b: int
    prompt: str

    @property
    def answer(self) -> int:
        return self.a + self.b


def all_problems(template: str) -> list[Problem]:
    """The 10,000 (a, b) pairs, a-major."""
    return [Problem(a, b, template.format(a=a, b=b)) for a in range(100) for b in range(100)]


def make_problems(template: str, n_problems: int, rng: np.random.Generator) -> list[Problem]:
    """A uniform subsample of the grid without replacement, kept in a-major order."""
    grid = all_problems(template)
    if n_problems >= len(grid):
        return grid
    keep = np.sort(rng.choice(len(grid), size=n_problems, replace=False))
    return [grid[i] for i in keep]


def parse_answer(text: str) -> Optional[int]:
    """The leading integer of a continuation ("57", " 57\\n" -> 57); None when there is none.

    Digits separated by a space ("5 7") are not an answer: reading the 5 would score a
    model that spells 57 out digit by digit as answering 5.
    """
    m = LEADING_INT.match(text)
    return int(m.group(1)) if m else None


def resolve_template(template: str, model_spec: str) -> str:
    if template == "auto":
        return TEMPLATES["llama" if "llama" in model_spec.lower() else "gptj"]
    return TEMPLATES.get(template, template)


def a_positions(tokenizer, problems: list[Problem], template: str) -> list[int]:
    """Index of the last token of a in each tokenised prompt (special tokens included)."""
    head = template[: template.index("{a}")]
    starts = [len(head.format(a=p.a, b=p.b)) for p in problems]
    return [tokens.last_token_of_span(tokenizer, p.prompt, start, start + len(str(p.a))) for p, start in zip(problems, starts)]


def answer_tokens(tokenizer, prompt: str, answer: int) -> list[int]:
    """The tokens of str(answer) as a continuation of the prompt."""
    return tokens.continuation_tokens(tokenizer, prompt, str(answer))


@dataclass
class HelixConfig:
    """Defaults are the paper's settings."""

    n_problems: Optional[int] = option(
        None, "addition problems for accuracy; none: 10000 (the whole grid) on an accelerator, 1000 on CPU", ge=1, le=10000
    )
    template: str = option("auto", "auto (per model family), gptj, llama, or a string with {a} and {b}")
    periods: list[float] = option([2.0, 5.0, 10.0, 100.0], "helix periods T", gt=0, le=10_000)
    pca_dim: int = option(100, "PCA dimensions before the least-squares fit; 0: none", ge=0)
    n_folds: int = option(5, "folds over a of the held-out fits", ge=2, le=100)
    n_pairs: int = option(100, "(a, a', b) triples for patching and swapping", ge=1)
    correct_only: bool = option(True, "patch only problems the model answers correctly (the paper's choice)")
    layer: Optional[int] = option(None, "swap layer (resid_post.L); none: the best helix patch layer in the first third", ge=0)
    patching: bool = option(True, "patch fits into the a state, layer by layer")
    swap: bool = option(True, "swap the helix part of a for a' and generate")
    max_new_tokens: int = option(4, "tokens generated per answer", ge=1)
    swap_op: Literal["replace", "add"] = option(
        "replace", "replace: the helix-subspace part of the state becomes C B(a') (the paper's); add: add C (B(a') - B(a))"
    )

    def __post_init__(self) -> None:
        if self.template in ("auto", *TEMPLATES):
            return
        check_template(self.template, ("a", "b"))
        if self.template.index("{a}") > self.template.index("{b}"):
            raise ValueError("template must put {a} before {b} (b must not affect the a-token state)")
        if not self.periods:
            raise ValueError("periods is empty: give e.g. periods=2,5,10,100")


def fit_metrics(ctx, held: dict[str, dict[int, HeldOut]]) -> tuple[dict[str, Metric], dict[str, int]]:
    """Each fit at its own best layer (`probes.selection.best_layers` on held-out R^2), and the helix's gaps.

    held: {fit: {layer: held-out errors per a value}}. A baseline read at the helix's best
    layer would hand the helix a selection advantage; here every fit gets the same rule, and
    each gap compares the helix and its baseline at their own best layers with one paired
    bootstrap over the same a values (row i of both is a = i).
    """
    best = best_layers({k: {L: h.r2 for L, h in per_layer.items()} for k, per_layer in held.items()})
    metrics = {f"{k}_r2_heldout": ctx.metric(held[k][L].rows(), statistic=r2_from_rows) for k, L in best.items()}
    for gap, baseline in GAPS.items():
        if "helix" in held and baseline in held:
            paired = np.hstack([held["helix"][best["helix"]].rows(), held[baseline][best[baseline]].rows()])
            metrics[gap] = ctx.metric(paired, statistic=_r2_gap_rows)
    return metrics, best


def scrambled_digits(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """a = 10 t + u relabelled 10 pi(t) + pi(u) by one permutation pi of the ten digits, never the identity."""
    while True:
        pi = rng.permutation(10)
        if (pi != np.arange(10)).any():
            return 10 * pi[np.asarray(a) // 10] + pi[np.asarray(a) % 10]


def relabelled_metric(
    ctx, X: dict[int, np.ndarray], relabellings: np.ndarray, real: HeldOut, folds: list[np.ndarray], basis, pca_dim: int | None
) -> tuple[Metric, dict]:
    """The helix's held-out R^2 minus the 95th percentile of the same fit on digit-relabelled a.

    Each relabelling is read at its own best layer (the helix's rule); one bootstrap over the
    a values resamples the real fit's rows and every relabelling's together.
    """
    layers = sorted(X)
    K, n = relabellings.shape
    per_layer = {L: cross_validate_many(X[L], relabellings, folds, basis, pca_dim) for L in layers}
    r2 = np.array([[1 - per_layer[L][0][k].sum() / per_layer[L][1].sum() for L in layers] for k in range(K)])
    column = [best_layer(dict(enumerate(row))) for row in r2]  # each order's own best layer, by the probe's rule
    best = [layers[c] for c in column]
    sse = np.stack([per_layer[L][0][k] for k, L in enumerate(best)], axis=1)  # (n, K)
    sst = np.stack([per_layer[L][1] for L in best], axis=1)
    rows = np.hstack([real.rows(), sse, sst])

    def statistic(r: np.ndarray) -> float:
        others = 1 - r[:, 2 : 2 + K].sum(0) / r[:, 2 + K :].sum(0)
        return r2_from_rows(r[:, :2]) - float(np.nanquantile(others, RELABEL_QUANTILE))

    chosen = r2[np.arange(K), column]
    summary = {
        "n": K,
        "quantile": RELABEL_QUANTILE,
        "r2_q50": float(np.median(chosen)),
        "r2_q95": float(np.quantile(chosen, RELABEL_QUANTILE)),
        "r2_max": float(chosen.max()),
        "share_at_least_real": float((chosen >= real.r2).mean()),
    }
    return ctx.metric(rows, statistic=statistic), summary


def _r2_gap_rows(rows: np.ndarray) -> float:
    """R^2 of the first fit minus R^2 of the second, from paired rows [sse, sst, sse, sst]."""
    return r2_from_rows(rows[:, :2]) - r2_from_rows(rows[:, 2:])


@dataclass
class Triple:
    a: int
    a2: int
    b: int


@register_task
class NumberHelix(Task):
    name = "number_helix"
    version = "1.2"  # 1.1: the spec's replacing swap; each baseline at its own best layer; n_problems resolved before hashing. 1.2: facets
    paper = PAPER
    description = "Two-digit addition ('57+23='): accuracy, the helix of a in the residual stream, and patching/swapping it."
    Config = HelixConfig
    # `--preset quick`: sized so every task finishes on a laptop CPU; its own config hash, never mixed with full runs.
    presets = {"quick": {"n_problems": 300, "n_pairs": 20}}
    headline_metrics = [
        "helix_r2_heldout",
        "circle_r2_heldout",
        "linear_r2_heldout",
        "accuracy",
        "patch_ld_helix",
        "patch_ld_layer_patch",
        "swap_success",
        "swap_success_random_subspace",
    ]
    metric_descriptions = {
        "accuracy": "greedy answer's leading integer equals a+b; n = problems",
        "{helix,linear,circle,poly}_r2_heldout": "held-out R^2 (5 folds over a) of the fit from a alone, in the full residual space, at the fit's own best layer",
        "helix_shuffled_r2_heldout": "control: the helix fitted to permuted a, at its own best layer",
        "pca9_recon_r2_heldout": "held-out states projected on the training top-9 PCA basis: a ceiling for any 9-D subspace, not a predictor from a",
        "helix_minus_{linear,shuffled}": "helix minus baseline R^2, each at its own best layer, one paired bootstrap over the 100 a values",
        "patch_ld_{layer_patch,helix,pca9,circle,poly,helix_shuffled}": "max over layers of the mean logit difference (patched minus corrupted) of the clean answer; n = triples",
        "swap_success[_random_subspace,_helix_shuffled]": "share of swaps (helix part of a replaced by a') whose answer becomes a'+b; controls: random subspace, shuffled helix",
        "swap_to_original[_control]": "share of swaps whose answer stays a+b",
        "swap_success_minus_{random_subspace,helix_shuffled}": "per triple, swap success minus the control's; clustered by a",
        "helix_minus_scrambled_digits_q95": "helix R^2 minus the 95th percentile of 50 digit relabellings' R^2 (each at its own best layer); one bootstrap over a; details.scrambled_digits",
    }
    finding = Finding(
        claim="the model adds, its a-token state holds a helix in a beyond any relabelling of the digits, "
        "and swapping the helix part of a for a' moves the answer to a'+b",
        paper_verdict="helix found in GPT-J 6B, Pythia 6.9B and Llama 3.1 8B; helix fits recover most of the layer patch (GPT-J: LD 7.21 vs 8.34)",
        facets=(
            Facet("behaviour", "accuracy", 1 / 199, "greedy answers beat a uniform guess among the 199 sums"),
            Facet(
                "representation",
                "helix_minus_scrambled_digits_q95",
                0.0,
                f"the helix in a fits held-out states better than 95% of {N_RELABELLINGS} digit relabellings of a (paired)",
            ),
            Facet(
                "causal",
                "swap_success_minus_random_subspace",
                0.0,
                "swapping the helix part moves the answer to a'+b more often than the same displacement in a random subspace (paired)",
            ),
        ),
    )

    @classmethod
    def resolve_config(cls, config: HelixConfig, device: str) -> HelixConfig:
        """n_problems unset means 10000 (the paper's whole grid) on an accelerator, 1000 on CPU: record which."""
        if config.n_problems is not None:
            return config
        return dataclasses.replace(config, n_problems=1000 if device == "cpu" else 10000)

    @classmethod
    def workload(cls, config: HelixConfig, shape: ModelShape) -> Workload:
        """n_problems generated answers (prompts of about 12 tokens); 100 a-states at every layer (float64);
        per triple, six fits patched at every layer, and three swaps generated."""
        n = config.n_problems or 10_000
        pairs = config.n_pairs if (config.patching or config.swap) else 0
        patched = pairs * shape.n_layers * 6 * 6 if config.patching else 0
        swaps = pairs * 3 if config.swap else 0
        return Workload(
            forward_tokens=n * 12 + 100 * 12 + patched + swaps * 12,
            generated_tokens=(n + swaps) * config.max_new_tokens,
            activation_bytes=100 * shape.n_layers * shape.d_model * 8,
        )

    def run(self, model, config: HelixConfig, ctx) -> TaskResult:
        n_layers = model.n_layers
        ctx.check_layers("layer", [] if config.layer is None else [config.layer])
        tok = model.tokenizer
        template = resolve_template(config.template, model.info.spec)
        periods = tuple(config.periods)
        n_problems = config.n_problems
        metrics: dict[str, Metric] = {}
        unmeasured: dict[str, str] = {}
        notes: list[str] = []
        details: dict = {
            "n_layers": n_layers,
            "template": template,
            "n_problems": n_problems,
            "periods": list(periods),
            "digits_split": len(tok("57", add_special_tokens=False)["input_ids"]) > 1,
        }

        # Behaviour.
        problems = list(ctx.limited(make_problems(template, n_problems, ctx.rng(0))))
        texts = ctx.generate([p.prompt for p in problems], config.max_new_tokens, desc="addition")
        parsed = [parse_answer(t) for t in texts]
        correct = np.array([g == p.answer for g, p in zip(parsed, problems)])
        metrics["accuracy"] = ctx.metric(correct.astype(float))
        unparsed = sum(g is None for g in parsed)
        details["unparsed_answers"] = unparsed
        if unparsed:
            notes.append(
                f"{unparsed} of {len(problems)} generations have no leading integer (or split its digits with spaces) "
                "and count as wrong"
            )
        off = np.array([g - p.answer for g, p in zip(parsed, problems) if g is not None and g != p.answer])
        details["wrong_answer_offsets"] = {
            "n_numeric_wrong": int(len(off)),
            "minus_10": float(np.mean(off == -10)) if len(off) else None,
            "plus_10": float(np.mean(off == 10)) if len(off) else None,
        }
        for p, t, c in zip(problems, texts, correct):
            ctx.log_sample({"prompt": p.prompt, "a": p.a, "b": p.b, "target": p.answer, "generated": t, "correct": bool(c)})

        # Representation: every layer at the a token, a = 0..99.
        fit_problems = [Problem(a, FIT_B, template.format(a=a, b=FIT_B)) for a in range(100)]
        pos = a_positions(tok, fit_problems, template)
        sites = [f"resid_post.{L}" for L in range(n_layers)]
        acts = ctx.collect([p.prompt for p in fit_problems], sites, positions=pos, desc="activations")
        X = {L: acts[f"resid_post.{L}"].numpy().astype(np.float64) for L in range(n_layers)}
        self.check_b_independent(ctx, template, X[n_layers - 1][57], n_layers - 1)
        a = np.arange(100)
        shuffled = ctx.rng(1).permutation(a)
        folds = kfold_indices(100, config.n_folds, ctx.rng(2))
        pca_dim = config.pca_dim or None
        bases = basis_functions(periods)
        held = {}
        for L in range(n_layers):
            held[L] = {name: cross_validate(X[L], a, folds, f, pca_dim) for name, f in bases.items()}
            held[L]["helix_shuffled"] = cross_validate(X[L], shuffled, folds, bases["helix"], pca_dim)
            held[L]["pca9_recon"] = cross_validate(X[L], a, folds, pca_k=2 * len(periods) + 1)
        fit_results, best_fit = fit_metrics(ctx, {k: {L: held[L][k] for L in range(n_layers)} for k in FITS})
        metrics.update(fit_results)
        relabellings = np.stack([scrambled_digits(a, ctx.rng(10 + k)) for k in range(N_RELABELLINGS)])
        beyond, details["scrambled_digits"] = relabelled_metric(
            ctx, X, relabellings, held[best_fit["helix"]]["helix"], folds, bases["helix"], pca_dim
        )
        metrics["helix_minus_scrambled_digits_q95"] = beyond
        best = best_fit["helix"]
        details["best_fit_layer"] = best
        details["best_fit_layers"] = best_fit
        details["per_layer_r2_heldout"] = {k: [round(held[L][k].r2, 6) for L in range(n_layers)] for k in FITS}
        notes.append(
            "each *_r2_heldout is read at its own best layer (details.best_fit_layers, the highest held-out R^2): "
            "a maximum over layers whose interval, over a values at that layer, does not include the choice of layer"
        )
        notes.append(
            "pca9_recon_r2_heldout projects held-out states on the training top-9 PCA basis: a ceiling for any 9-D subspace, not a predictor from a"
        )
        if details["digits_split"]:
            notes.append(
                "this tokenizer splits numbers into digits: the a position is the units digit of a, not a single number token "
                "as in the paper; where the state is a function of a mod 10 alone, the T=2, 5, 10 columns span 5 of its 9 "
                "possible dimensions, so a high circle R^2 there is partly a property of the tokenisation"
            )

        fits = {L: self.fit_layer(X[L], a, shuffled, bases, pca_dim, len(periods)) for L in range(n_layers)}
        self.plot_helix(ctx, X[best], fits[best]["helix"], best, periods)

        # Causal tests on (a, a', b) triples.
        if config.patching or config.swap:
            triples, tries = self.draw_triples(problems, correct, config, ctx)
            details["pairs"] = {
                "n": len(triples),
                "tries": tries,
                "requested": config.n_pairs,
                "correct_only": config.correct_only,
            }
            if len(triples) < config.n_pairs:
                notes.append(f"only {len(triples)} of {config.n_pairs} (a, a', b) triples found in {tries} tries")
            ld = self.patch(ctx, model, X, fits, triples, template, tok, details) if (config.patching and triples) else None
            if ld is not None:
                best_patch = best_layers({m: {L: float(np.mean(ld[L][m])) for L in range(n_layers)} for m in PATCH_METHODS})
                for method, L_best in best_patch.items():
                    metrics[f"patch_ld_{method}"] = ctx.metric(ld[L_best][method])
                details["patch_ld_best_layer"] = best_patch
                notes.append(
                    "patch_ld_* is the maximum over layers of the mean LD, each method at its own best layer (the paper's "
                    "Table 1; details.patch_ld_best_layer): its interval, over triples at that layer, does not include the "
                    "choice of layer, so it is optimistic"
                )
            if config.swap and triples:
                third = range(max(1, n_layers // 3))
                if config.layer is not None:
                    layer = config.layer
                elif ld is not None:
                    layer = best_layer({L: float(np.mean(ld[L]["helix"])) for L in third})
                else:
                    layer = best_layer({L: held[L]["helix"].r2 for L in third})
                details["swap_layer"] = layer
                details["swap_op"] = config.swap_op
                if config.layer is None and ld is not None:
                    notes.append(
                        "the swap layer is the best helix patch layer in the first third, chosen on the same triples the swap uses"
                    )
                if config.swap_op == "add":
                    notes.append(
                        "swap_op=add: the swap adds C (B(a') - B(a)) and keeps the state's in-subspace residual; "
                        "the paper replaces the helix-subspace component by C B(a')"
                    )
                metrics.update(self.swap(ctx, model, X[layer], fits[layer], layer, triples, template, config, details))
            if not triples:
                notes.append(
                    "no (a, a', b) triples: patch_ld and swap metrics are absent (the model answers too few problems; try correct_only=false)"
                )
                why = f"no (a, a', b) triple among {tries} tries{' the model answers correctly' if config.correct_only else ''}"
                if config.swap:
                    unmeasured.update(
                        {
                            k: why
                            for k in ("swap_success", "swap_success_minus_random_subspace", "swap_success_minus_helix_shuffled")
                        }
                    )
                if config.patching:
                    unmeasured.update({f"patch_ld_{m}": why for m in PATCH_METHODS})
        self.plot_layers(ctx, details, best)
        held_out = {f"{k}_r2_heldout": v for k, v in details.get("per_layer_r2_heldout", {}).items()}
        curves = Curve.each(held_out, range(n_layers), ylabel="held-out R^2")
        return TaskResult(
            metrics=metrics, reference=self.reference(), curves=curves, details=details, notes=notes, unmeasured=unmeasured
        )

    @staticmethod
    def fit_layer(X: np.ndarray, a: np.ndarray, shuffled: np.ndarray, bases, pca_dim, k: int) -> dict:
        """Fits on all 100 values of a, for patching, swapping and plots."""
        fits = {name: BasisFit(f, pca_dim).fit(X, a) for name, f in bases.items()}
        fits["helix_shuffled"] = BasisFit(bases["helix"], pca_dim).fit(X, shuffled)
        fits["pca9"] = PCAFit(2 * k + 1).fit(X)
        fits["shuffled_labels"] = shuffled
        return fits

    @staticmethod
    def check_b_independent(ctx, template: str, state: np.ndarray, layer: int) -> None:
        """The fit uses b = FIT_B only; b comes after a, so the a-token state must not depend on it."""
        p = Problem(57, 99, template.format(a=57, b=99))
        other = ctx.collect(
            [p.prompt], [f"resid_post.{layer}"], positions=a_positions(ctx.model.tokenizer, [p], template), desc="b check"
        )[f"resid_post.{layer}"][0].numpy()
        if np.linalg.norm(other - state) > 1e-2 * np.linalg.norm(state):  # loose enough for bfloat16 batches
            raise UsageError(
                "the a-token state depends on b: the tokenizer merges a with what follows; use a template with a separator after {a}"
            )

    @staticmethod
    def draw_triples(problems: list[Problem], correct: np.ndarray, config: HelixConfig, ctx) -> tuple[list[Triple], int]:
        """Uniform draws of two evaluated problems sharing b; kept when both are correct (unless correct_only is off)."""
        by_b: dict[int, list[int]] = {}
        for i, p in enumerate(problems):
            by_b.setdefault(p.b, []).append(i)
        pairs_b = [b for b, idx in by_b.items() if len(idx) >= 2]
        if not pairs_b:
            return [], 0
        weights = np.array([len(by_b[b]) * (len(by_b[b]) - 1) for b in pairs_b], dtype=float)
        rng = ctx.rng(3)
        seen, out, tries = set(), [], 0
        while len(out) < config.n_pairs and tries < 20 * config.n_pairs:
            tries += 1
            b = pairs_b[rng.choice(len(pairs_b), p=weights / weights.sum())]
            i, j = rng.choice(by_b[b], size=2, replace=False)
            key = (problems[i].a, problems[j].a, b)
            if key in seen or (config.correct_only and not (correct[i] and correct[j])):
                continue
            seen.add(key)
            out.append(Triple(problems[i].a, problems[j].a, b))
        return out, tries

    def patch(self, ctx, model, X, fits, triples, template, tok, details) -> dict | None:
        """Per layer and method, LD = logit of the clean answer's distinguishing token, patched minus corrupted."""
        prompts, targets, positions, keep = [], [], [], []
        for t in triples:
            corrupted = template.format(a=t.a2, b=t.b)
            clean_ids, corr_ids = answer_tokens(tok, corrupted, t.a + t.b), answer_tokens(tok, corrupted, t.a2 + t.b)
            k = 0
            while k < min(len(clean_ids), len(corr_ids)) and clean_ids[k] == corr_ids[k]:
                k += 1
            if clean_ids == corr_ids:
                k = 0  # a' = a: score the first token (a check of the mechanics)
            elif k == len(clean_ids) or k == len(corr_ids):
                continue  # one answer is a token prefix of the other: no single distinguishing token
            prompt = corrupted + tok.decode(clean_ids[:k])
            prompts.append(prompt)
            targets.append(clean_ids[k])
            positions.append(a_positions(tok, [Problem(t.a2, t.b, corrupted)], template)[0])
            keep.append(t)
        details["pairs"]["n_patched"] = len(keep)
        if not keep:
            return None
        vocab = sorted(set(targets))
        col = np.array([vocab.index(t) for t in targets])
        rows = np.arange(len(keep))
        base = ctx.score(prompts, vocab, desc="corrupted", full_vocab=False).logits.numpy()[rows, col]
        clean_a = np.array([t.a for t in keep])
        shuffled = fits[0]["shuffled_labels"]
        out = {}
        for L in ctx.progress(range(model.n_layers), desc="patching"):
            f = fits[L]
            values = {
                "layer_patch": X[L][clean_a],
                "helix": f["helix"].predict(clean_a),
                "pca9": f["pca9"].reconstruct(X[L][clean_a]),
                "circle": f["circle"].predict(clean_a),
                "poly": f["poly"].predict(clean_a),
                "helix_shuffled": f["helix_shuffled"].predict(shuffled[clean_a]),
            }
            stacked = torch.as_tensor(np.vstack([values[m] for m in PATCH_METHODS]), dtype=torch.float32)
            with ctx.intervene([Edit(f"resid_post.{L}", "set", stacked, position=positions * len(PATCH_METHODS))]):
                logits = ctx.score(prompts * len(PATCH_METHODS), vocab, desc=f"patch L{L}", full_vocab=False).logits.numpy()
            n = len(keep)
            out[L] = {m: logits[i * n : (i + 1) * n][rows, col] - base for i, m in enumerate(PATCH_METHODS)}
        details["per_layer_patch_ld"] = {
            m: [round(float(np.mean(out[L][m])), 6) for L in range(model.n_layers)] for m in PATCH_METHODS
        }
        return out

    def swap(self, ctx, model, H, fits, layer, triples, template, config, details) -> dict[str, Metric]:
        """Move the helix part of the a state to a' (config.swap_op) and generate; success = the answer becomes a'+b."""
        helix = fits["helix"]
        a = np.array([t.a for t in triples])
        a2 = np.array([t.a2 for t in triples])
        delta = helix.swap(H[a], a, a2, config.swap_op) - H[a]
        shuffled = fits["shuffled_labels"]
        span = PCAFit(min(H.shape) - 1).fit(H).components_.T
        random_map = random_subspace_map(helix.subspace(), span, ctx.rng(4))
        deltas = {
            "": delta,
            "_random_subspace": delta @ random_map.T,
            "_helix_shuffled": fits["helix_shuffled"].swap(H[a], shuffled[a], shuffled[a2], config.swap_op) - H[a],
        }
        problems = [Problem(t.a, t.b, template.format(a=t.a, b=t.b)) for t in triples]
        positions = a_positions(ctx.model.tokenizer, problems, template)
        prompts = [p.prompt for p in problems]
        target_new = a2 + np.array([t.b for t in triples])
        target_old = a + np.array([t.b for t in triples])
        out: dict[str, Metric] = {}
        successes: dict[str, np.ndarray] = {}
        for suffix, d in deltas.items():
            values = torch.as_tensor(H[a] + d, dtype=torch.float32)
            with ctx.intervene([Edit(f"resid_post.{layer}", "set", values, position=positions)]):
                texts = ctx.generate(prompts, config.max_new_tokens, desc=f"swap{suffix}")
            got = np.array([parse_answer(t) if parse_answer(t) is not None else -1 for t in texts])
            successes[suffix] = (got == target_new).astype(float)
            out[f"swap_success{suffix}"] = ctx.metric(successes[suffix], unit=a)
            out[f"swap_to_original{suffix}"] = ctx.metric((got == target_old).astype(float), higher_is_better=None)
        for control in ("_random_subspace", "_helix_shuffled"):  # the same triples, a control displacement
            out[f"swap_success_minus{control}"] = ctx.metric(successes[""] - successes[control], unit=a)
        details["swap_displacement_norm"] = float(np.linalg.norm(delta, axis=1).mean())
        details["swap_subspace_rank"] = int(helix.subspace().shape[1])
        return out

    @staticmethod
    def reference() -> Reference:
        gptj, pythia, llama = "EleutherAI/gpt-j-6b", "EleutherAI/pythia-6.9b", "meta-llama/Llama-3.1-8B"
        table1 = {  # GPT-J, best-layer LD: layer patch, PCA-9, helix, circle, polynomial
            "a+b": (8.34, 6.13, 7.21, 6.83, 3.09),
            "a-23": (7.45, 6.16, 7.05, 6.52, 2.93),
            "a//5": (5.48, 5.24, 4.55, 4.25, 4.55),
            "a*1.5": (7.86, 6.65, 5.16, 4.85, 4.84),
            "a mod 2": (0.98, 1.00, 1.11, 1.12, 0.88),
            "x-a=0,x=": (6.70, 4.77, 4.56, 4.34, 2.98),
        }
        names = ("layer_patch", "pca9", "helix", "circle", "poly")
        gptj_metrics = {"accuracy": 0.805, "linear_addition_accuracy_upper_bound": 0.20}
        for row, values in table1.items():
            for method, v in zip(names, values):
                gptj_metrics[f"patch_ld_{method}" if row == "a+b" else f"table1[{row}].patch_ld_{method}"] = v
        no_ref = [f"{k}_r2_heldout" for k in FITS] + [
            *GAPS,
            "patch_ld_helix_shuffled",
            "swap_success",
            "swap_to_original",
            "swap_success_random_subspace",
            "swap_success_helix_shuffled",
        ]
        notes = {k: NO_REFERENCE for k in no_ref}
        notes["patch_ld_helix_shuffled"] = (
            "no reference number: the paper reports only that a helix fitted to permuted a has no causal effect"
        )
        notes["linear_addition_accuracy_upper_bound"] = (
            "a line fitted to GPT-J's numbers (R^2 0.997) used to add is right in under 20% of problems, GPT-J in 80%+"
        )
        notes["table1"] = "GPT-J rows other than a+b are the paper's other tasks, for context; this task runs a+b only"
        return Reference(
            source=f"{PAPER}, Tables 1 and 2",
            notes=notes,
            metrics={gptj: gptj_metrics, pythia: {"accuracy": 0.772}, llama: {"accuracy": 0.980}},
        )

    # Plots.
    @staticmethod
    def plot_helix(ctx, H: np.ndarray, fit: BasisFit, layer: int, periods) -> None:
        """The states in the fit's own coordinates: the T=10 circle (or the first period) and a 3-D helix."""
        a = np.arange(100)
        coords = fit.coordinates(H)  # estimated [a/99, cos, sin, ...] of each state (unused columns dropped)
        names = [("a",)] + [(f"cos{T:g}", f"sin{T:g}") for T in periods]
        flat = [n for group in names for n in group]
        used = [n for n, u in zip(flat, fit.columns_) if u]
        T = 10 if 10 in periods else periods[0]
        cx, cy = used.index(f"cos{T:g}"), used.index(f"sin{T:g}") if f"sin{T:g}" in used else None
        ideal = helix_basis(a, periods)[:, fit.columns_]
        fig = ctx.figure(figsize=(10, 4.5))
        ax = fig.add_subplot(1, 2, 1)
        ys = coords[:, cy] if cy is not None else np.zeros(100)
        sc = ax.scatter(coords[:, cx], ys, c=a % T, cmap="tab10", s=18)
        for i in range(min(int(T), len(a))):  # one label per residue, at most one per state
            ax.annotate(str(i), (coords[i, cx], ys[i]), fontsize=7)
        ax.plot(ideal[:, cx], ideal[:, cy] if cy is not None else 0 * a, color="grey", lw=0.6, alpha=0.5)
        ax.set_xlabel(f"cos(2πa/{T:g}) coordinate"), ax.set_ylabel(f"sin(2πa/{T:g}) coordinate")
        ax.set_title(f"resid_post.{layer}, a token: period {T:g}")
        fig.colorbar(sc, ax=ax, label=f"a mod {T:g}")
        ax3 = fig.add_subplot(1, 2, 2, projection="3d")
        ax3.scatter(coords[:, cx], ys, coords[:, 0] * 99, c=a, cmap="viridis", s=12)
        ax3.plot(ideal[:, cx], ideal[:, cy] if cy is not None else 0 * a, ideal[:, 0] * 99, color="grey", lw=0.6)
        ax3.set_xlabel(f"cos {T:g}"), ax3.set_ylabel(f"sin {T:g}"), ax3.set_zlabel("linear (a)")
        ax3.set_title("helix: grey = the basis B(a)")
        ctx.save_figure(fig, "helix.png")

    @staticmethod
    def plot_layers(ctx, details: dict, best: int) -> None:
        panels = 2 if "per_layer_patch_ld" in details else 1
        fig = ctx.figure(figsize=(6 * panels, 3.5))
        axes = fig.subplots(1, panels, squeeze=False)
        for name, values in details["per_layer_r2_heldout"].items():
            axes[0, 0].plot(values, marker="o", ms=3, label=name)
        axes[0, 0].axvline(best, color="grey", ls=":")
        axes[0, 0].set_xlabel("layer (resid_post.L)"), axes[0, 0].set_ylabel("held-out R²")
        axes[0, 0].legend(fontsize=7)
        if panels == 2:
            for name, values in details["per_layer_patch_ld"].items():
                axes[0, 1].plot(values, marker="o", ms=3, label=name)
            axes[0, 1].set_xlabel("layer (resid_post.L)"), axes[0, 1].set_ylabel("mean logit difference")
            axes[0, 1].legend(fontsize=7)
        ctx.save_figure(fig, "helix_layers.png")
