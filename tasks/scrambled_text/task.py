"""scrambled_text: Scrambled Bench, restoring and reading text whose letters are scrambled.

Cao, Kojima, Matsuo, Iwasawa (2023), "Unnatural Error Correction: GPT-4 Can Almost
Perfectly Handle Unnatural Scrambled Text" (EMNLP 2023, arXiv 2311.18805). Method, in
the order the task runs it:

1. Data: sentences and multiple-choice items (shipped sample written for this project;
   or DREAM / AQuA-RAT from the Hub, or RealtimeQA weekly files), scrambled at run time
   by each scramble type, deterministically for the seed (authors' default 10).
2. ScrRec: "Scrambled sentence: ...\nRecovered sentence:" (zero-shot with one instruction
   line, or three demonstrations scrambled at random 50%), greedy, first line kept;
   Recovery Rate RR_i = (ED(orig, scr) - ED(orig, rec)) / ED(orig, scr).
3. ScrQA: only the context is scrambled; the option letter with the highest next-token
   log-probability (or parsed from a generation); Relative Performance Gain
   RPG = (Acc_scr - Acc_sub) / (Acc_orig - Acc_sub) against the letter-substituted context.
4. Likelihood (for small base models): log-probability of the original vs. the scrambled
   sentence, unconditionally and as the continuation of the ScrRec prompt.
5. Word restoration probe: at the last token of a scrambled word, by layer, how close is
   resid_post.L to the original word's state (cosine minus a different-word baseline), and
   does a word-identity probe trained on original words read the scrambled one?

Choices where the paper is silent (see the spec):
- Generation stops at the first newline after leading whitespace is dropped; the token
  budget is min(max_new_tokens, 2 x tokens of the original + 16) since everything after
  the first line is discarded, a line longer than that is far from the original anyway.
- Substituted letters keep the case of the letter they replace.
- The shipped QA items are three-option; they use the RealtimeQA evidence prompt with
  "among A through C".
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Literal, Optional, Sequence, Union

import numpy as np

from harness import Curve, Facet, Finding, Metric, ModelShape, Task, TaskResult, Workload, option, register_task, tokens
from probes.selection import best_layer
from probes.text_metrics import (
    pooled_recovery,
    probe_transfer,
    recovery_rates,
    relative_performance_gain,
    restoration_cosine,
    row_cosine,
    rpg_rows,
)
from tasks.scrambled_text.data import DATA, Data, _unique_by_text, load_hub, load_realtimeqa, load_sample
from tasks.scrambled_text.prompts import (
    LETTERS,
    clean_recovery,
    option_tokens,
    parse_letter,
    rec_demos,
    rec_prompt,
    rec_prompt_fewshot,
)
from tasks.scrambled_text.reference import PAPER, reference
from tasks.scrambled_text.scramble import PROBE_VARIANTS, TYPES, collapse_spaces, scramble, scrambled_variant

log = logging.getLogger(__name__)

DEFAULT_TYPES = ["random_20", "random_50", "random_100", "keepfirst", "keepfirstlast"]
SUBTASKS = ("rec", "qa", "likelihood", "probe")
RPG_MIN_GAP = 0.05


@dataclass
class ScrambledConfig:
    """Defaults are the paper's settings (seed 10, zero-shot, 256 new tokens)."""

    types: list[str] = option(
        DEFAULT_TYPES, f"scramble types, a subset of {','.join(TYPES)}; substituted is a QA baseline, always run there"
    )
    seed: int = option(10, "scrambling seed (the authors' default 10)", ge=0, lt=2**32)
    source: str = option("sample", "sample (shipped), hub (DREAM or AQuA-RAT), or file:PATH (RealtimeQA weekly *_qa.jsonl)")
    qa_dataset: Literal["dream", "aqua"] = option("dream", "with source=hub: the QA data set")
    subtasks: list[str] = option(list(SUBTASKS), f"experiments to run, a subset of {','.join(SUBTASKS)}")
    shots: int = option(0, "ScrRec demonstrations: 0 or 3", ge=0, le=3)
    max_new_tokens: int = option(256, "token budget of generations", ge=1)
    qa_scoring: Literal["likelihood", "generate"] = option(
        "likelihood", "ScrQA answer: option letter by next-token log-probability, or parsed from a generation"
    )
    probe_layers: Union[Literal["all"], list[int]] = option(
        "all", "layers of the restoration probe: all, or a list such as 0,4,8"
    )
    probe_words: int = option(50, "word classes of the restoration probe", ge=2, le=50)
    n_max: Optional[int] = option(None, "at most this many sentences and QA items", ge=1)

    def __post_init__(self) -> None:
        for name, allowed in (("types", TYPES), ("subtasks", SUBTASKS)):
            items = getattr(self, name)
            bad = [t for t in items if t not in allowed]
            if bad or not items:
                raise ValueError(f"{name}: unknown {', '.join(bad) or '(empty)'}; choose from {', '.join(allowed)}")
            setattr(self, name, list(dict.fromkeys(items)))
        if self.shots not in (0, 3):
            raise ValueError("shots must be 0 or 3")
        if not (self.source in ("sample", "hub") or self.source.startswith("file:")):
            raise ValueError("source must be sample, hub or file:PATH")
        if self.probe_layers != "all" and any(L < 0 for L in self.probe_layers):
            raise ValueError("probe_layers must be 'all' or layer indices 0 or more")


@register_task
class ScrambledText(Task):
    name = "scrambled_text"
    version = "1.0"
    paper = PAPER
    description = (
        "Scrambled Bench: restore sentences whose letters are scrambled (recovery rate), answer questions "
        "on scrambled contexts (relative performance gain), likelihood of original vs scrambled text, "
        "and how far each layer restores a scrambled word."
    )
    Config = ScrambledConfig
    # `--preset quick`: sized so every task finishes on a laptop CPU; its own config hash, never mixed with full runs.
    presets = {"quick": {"n_max": 10, "probe_words": 20, "max_new_tokens": 64}}
    headline_metrics = [
        "recovery_rate_random_100",
        "recovery_rate_keepfirstlast",
        "recovery_rate_random_50",
        "qa_accuracy_original",
        "qa_accuracy_random_100",
        "prefer_original_random_100",
    ]
    finding = Finding(
        claim="the model restores fully scrambled sentences: its recovered sentence is closer to the original "
        "than the scrambled input (recovery rate > 0, per sentence)",
        paper_verdict="holds on GPT-4 (96%) and GPT-3.5 (78%); fails on Llama 2 70B (-32%) and 7B (-44%)",
        facets=(
            Facet(
                "behaviour",
                "recovery_rate_random_100",
                0.0,
                "mean over sentences of the edit distance the model's recovery removes, in percent",
            ),
        ),
    )
    metric_descriptions = {
        "recovery_rate_{type}": "ScrRec: mean over sentences of 100 * (ED(orig, scr) - ED(orig, rec)) / ED(orig, scr), %; sentences with ED(orig, scr) = 0 skipped",
        "recovery_rate_pooled_{type}": "ScrRec: 100 * sum(ED_s - ED_r) / sum(ED_s) over sentences (ratio of sums)",
        "recovery_exact_{type}": "ScrRec: share of sentences restored exactly",
        "qa_accuracy_{condition}": "ScrQA accuracy with the context original, scrambled by a type, or letter-substituted",
        "qa_rpg_{type}": "relative performance gain (Acc_scr - Acc_sub) / (Acc_orig - Acc_sub), bootstrapped over items",
        "ll_gap_per_char_{type}": "log p(original) - log p(scrambled) per character, unconditionally",
        "prefer_original_{type}": "share of sentences whose original is more likely than its scrambled form",
        "recovery_pref_{type}": "after the ScrRec prompt: share of sentences where the original continuation beats the scrambled one",
        "recovery_ll_gap_per_char_{type}": "after the ScrRec prompt: log-likelihood gap original - scrambled per character",
        "restoration_cos_{variant}": "cos(scrambled word, same word) - cos(scrambled word, a different word) at the last token, each half of the words at the layer chosen on the other half; n = words",
        "restoration_probe_acc_{variant}": "a word-identity probe trained on original words reads the scrambled word, at the layer chosen on the other half of the words; n = words",
        "probe_acc_original_at_best_{variant}": "the same probe on held-out original words at those layers (the ceiling)",
    }

    @classmethod
    def workload(cls, config: ScrambledConfig, shape: ModelShape) -> Workload:
        """Recovery generations for each scramble type (prompts of about 80 tokens), QA scored per option
        (about 400 tokens), the restoration probe's 8 contexts per word and variant at every layer."""
        sentences, qa = min(config.n_max or 200, 200), min(config.n_max or 60, 60)
        types = len(config.types)
        rec = sentences * types if "rec" in config.subtasks else 0
        qa_items = qa * (types + 1) if "qa" in config.subtasks else 0
        probe = config.probe_words * 8 * 3 if "probe" in config.subtasks else 0
        layers = shape.n_layers if config.probe_layers == "all" else len(config.probe_layers)
        return Workload(
            forward_tokens=rec * 80 + qa_items * 400 * 2 + sentences * types * 40 + probe * 10,
            generated_tokens=rec * min(config.max_new_tokens, 60),
            activation_bytes=probe * layers * shape.d_model * 4,
        )

    def run(self, model, config: ScrambledConfig, ctx) -> TaskResult:
        data = self.load(config)
        sentences = [collapse_spaces(s).strip() for s in data.sentences]
        sentences = list(ctx.limited(sentences[: config.n_max] if config.n_max else sentences))
        qa = list(ctx.limited(data.qa[: config.n_max] if config.n_max else data.qa))
        metrics: dict[str, Metric] = {}
        details: dict[str, Any] = {
            "source": data.source,
            "n_sentences": len(sentences),
            "n_qa": len(qa),
            "n_layers": model.n_layers,
        }
        notes: list[str] = []
        curves: list[Curve] = []
        if data.source.startswith("hub"):
            notes.append("ScrRec on Hub data uses the QA contexts as sentences (no Hub copy of RealtimeQA)")
        if "rec" in config.subtasks:
            self.recovery(model, sentences, config, ctx, metrics, details, notes)
        if "qa" in config.subtasks:
            self.question_answering(model, qa, config, ctx, metrics, details, notes)
        if "likelihood" in config.subtasks:
            self.likelihood(model, sentences, config, ctx, metrics, details)
        if "probe" in config.subtasks:
            self.restoration_probe(model, config, ctx, metrics, details, notes, curves)
        return TaskResult(metrics=metrics, reference=reference(), curves=curves, details=details, notes=notes)

    @staticmethod
    def load(config: ScrambledConfig) -> Data:
        if config.source == "sample":
            return load_sample()
        if config.source == "hub":
            return load_hub(config.qa_dataset)
        return load_realtimeqa(config.source[len("file:") :])

    # ScrRec --------------------------------------------------------------------------------
    def recovery(self, model, sentences, config, ctx, metrics, details, notes) -> None:
        tok = model.tokenizer
        demos = rec_demos(config.seed) if config.shots == 3 else ""
        runs = [(t, i, scramble(s, t, config.seed)) for t in config.types for i, s in enumerate(sentences)]
        prompts = [rec_prompt_fewshot(scr, demos) if config.shots else rec_prompt(scr) for _, _, scr in runs]
        longest = max(len(tok(s, add_special_tokens=False)["input_ids"]) for s in sentences)
        budget = min(config.max_new_tokens, 2 * longest + 16)
        details["rec_max_new_tokens"] = budget
        outputs = ctx.generate(prompts, max_new_tokens=budget, desc="ScrRec")
        recovered = [clean_recovery(o) for o in outputs]
        details["recovery"] = {}
        for t in config.types:
            rows = [k for k, (tt, _, _) in enumerate(runs) if tt == t]
            orig = [sentences[runs[k][1]] for k in rows]
            scr = [runs[k][2] for k in rows]
            rec = [recovered[k] for k in rows]
            r = recovery_rates(orig, scr, rec)
            details["recovery"][t] = {
                "n_skipped": r.n_skipped,
                "mean_ed_scrambled": float(r.ed_scrambled.mean()),
                "mean_ed_recovered": float(r.ed_recovered.mean()),
            }
            if r.n_skipped and len(r.kept):
                notes.append(
                    f"recovery_rate_{t}: {r.n_skipped} of {len(rows)} sentences are unchanged by the scramble "
                    "(ED(orig, scr) = 0) and are left out"
                )
            if len(r.kept):
                metrics[f"recovery_rate_{t}"] = ctx.metric(100 * r.rr)
                metrics[f"recovery_rate_pooled_{t}"] = ctx.metric(
                    np.stack([r.ed_scrambled[r.kept], r.ed_recovered[r.kept]], 1), statistic=pooled_recovery
                )
            else:
                notes.append(f"recovery_rate_{t}: every item has ED(orig, scr) = 0; nothing to score")
            metrics[f"recovery_exact_{t}"] = ctx.metric(np.array([a == b for a, b in zip(orig, rec)], dtype=float))
            for k, o, s, c in zip(rows, orig, scr, rec):
                ctx.log_sample({"subtask": "rec", "type": t, "original": o, "scrambled": s, "output": outputs[k], "recovered": c})
        self.plot_recovery(ctx, metrics, config.types)

    # ScrQA ---------------------------------------------------------------------------------
    def question_answering(self, model, qa, config, ctx, metrics, details, notes) -> None:
        if not qa:
            notes.append("no QA items")
            return
        conditions = ["original"] + [t for t in config.types if t != "substituted"] + ["substituted"]
        likelihood = config.qa_scoring == "likelihood"
        runs = [(c, j) for c in conditions for j in range(len(qa))]
        prompts = [
            qa[j].prompt(qa[j].context if c == "original" else scramble(qa[j].context, c, config.seed), likelihood)
            for c, j in runs
        ]
        n_choices = max(len(q.choices) for q in qa)
        if likelihood:
            letters, suffix = option_tokens(model.tokenizer, n_choices, bare=qa[0].style == "aqua")
            logprobs = ctx.score([p + suffix for p in prompts], letters, desc="ScrQA").logprobs.numpy()
            for r, (_, j) in enumerate(runs):
                logprobs[r, len(qa[j].choices) :] = -np.inf
            predicted = [LETTERS[int(k)] for k in logprobs.argmax(-1)]
        else:
            budget = config.max_new_tokens if qa[0].style == "aqua" else 8
            outputs = ctx.generate(prompts, max_new_tokens=budget, desc="ScrQA")
            predicted = [parse_letter(o, len(qa[j].choices), qa[j].style == "aqua") for o, (_, j) in zip(outputs, runs)]
            unparsed = {c: sum(p is None for p, (cc, _) in zip(predicted, runs) if cc == c) for c in conditions}
            details["qa_unparsed"] = unparsed
            if sum(unparsed.values()):
                where = "after the last 'answer is'" if qa[0].style == "aqua" else "in the generation"
                notes.append(
                    f"qa_scoring=generate: {sum(unparsed.values())} of {len(runs)} answers name no option letter "
                    f"{where} and count as wrong (per condition in details.qa_unparsed)"
                )
        correct = {c: np.zeros(len(qa)) for c in conditions}
        for r, (c, j) in enumerate(runs):
            correct[c][j] = float(predicted[r] == qa[j].answer)
            ctx.log_sample({"subtask": "qa", "condition": c, "id": qa[j].id, "predicted": predicted[r], "answer": qa[j].answer})
        for c in conditions:
            metrics[f"qa_accuracy_{c}"] = ctx.metric(correct[c])
        details["qa_chance"] = float(np.mean([1 / len(q.choices) for q in qa]))
        details["qa_rpg"] = {}
        for t in conditions[1:-1]:
            rows = np.stack([correct["original"], correct["substituted"], correct[t]], 1)
            value = relative_performance_gain(rows[:, 2].mean(), rows[:, 1].mean(), rows[:, 0].mean(), RPG_MIN_GAP)
            details["qa_rpg"][t] = value
            if value is None:
                notes.append(f"qa_rpg_{t}: null, Acc_orig - Acc_sub < {RPG_MIN_GAP} (unstable)")
            else:
                metrics[f"qa_rpg_{t}"] = ctx.metric(rows, statistic=rpg_rows)

    # Likelihood ----------------------------------------------------------------------------
    def likelihood(self, model, sentences, config, ctx, metrics, details) -> None:
        tok = model.tokenizer
        bos = tokens.bos_or_eos(tok)
        types = [t for t in config.types if t != "substituted"] or config.types

        def ids(text: str) -> list[int]:
            return tok(text, add_special_tokens=False)["input_ids"]

        texts = _unique_by_text(sentences + [scramble(s, t, config.seed) for t in types for s in sentences])
        lls = ctx.loglikelihood([[bos]] * len(texts), [ids(x) for x in texts], desc="likelihood").logprob
        ll = dict(zip(texts, lls))
        contexts, continuations, keys = [], [], []
        for t in types:
            for i, s in enumerate(sentences):
                scr = scramble(s, t, config.seed)
                p = tok(rec_prompt(scr), add_special_tokens=True)["input_ids"]
                for which, cont in (("orig", s), ("scr", scr)):
                    contexts.append(p), continuations.append(ids(" " + cont)), keys.append((t, i, which))
        cond = dict(zip(keys, ctx.loglikelihood(contexts, continuations, desc="conditional likelihood").logprob))
        details["likelihood"] = {}
        for t in types:
            scr = [scramble(s, t, config.seed) for s in sentences]
            lo = np.array([ll[s] for s in sentences])
            ls = np.array([ll[x] for x in scr])
            chars = np.array([len(s) for s in sentences], dtype=float)
            co = np.array([cond[(t, i, "orig")] for i in range(len(sentences))])
            cs = np.array([cond[(t, i, "scr")] for i in range(len(sentences))])
            metrics[f"ll_gap_per_char_{t}"] = ctx.metric((lo - ls) / chars)
            metrics[f"prefer_original_{t}"] = ctx.metric((lo > ls).astype(float))
            metrics[f"recovery_pref_{t}"] = ctx.metric((co > cs).astype(float))
            metrics[f"recovery_ll_gap_per_char_{t}"] = ctx.metric((co - cs) / chars)
            details["likelihood"][t] = {"mean_ll_original": float(lo.mean()), "mean_ll_scrambled": float(ls.mean())}

    # Word restoration probe ----------------------------------------------------------------
    def restoration_probe(self, model, config, ctx, metrics, details, notes, curves: list[Curve]) -> None:
        spec = json.loads((DATA / "probe_words.json").read_text(encoding="utf-8"))
        words, frames = spec["words"][: config.probe_words], spec["frames"]
        layers = list(range(model.n_layers)) if config.probe_layers == "all" else sorted(set(config.probe_layers))
        ctx.check_layers("probe_layers", layers)
        other = baseline_partner(words)
        variants = {
            v: [[scrambled_variant(w, v, config.seed, f) for f in range(len(frames))] for w in words] for v in PROBE_VARIANTS
        }
        items: list[tuple[str, int, int, str]] = []  # (variant, word, frame, surface form)
        for wi, w in enumerate(words):
            for fi in range(len(frames)):
                items.append(("original", wi, fi, w))
                for v in PROBE_VARIANTS:
                    items.append((v, wi, fi, variants[v][wi][fi]))
        prompts = [frames[fi].replace("{w}", form) for _, _, fi, form in items]
        spans = [(frames[fi].index("{w}"), frames[fi].index("{w}") + len(form)) for _, _, fi, form in items]
        positions = last_token_positions(model.tokenizer, prompts, spans)
        acts = ctx.collect(prompts, [f"resid_post.{L}" for L in layers], positions=positions, desc="probe states")
        index = {(v, wi, fi): k for k, (v, wi, fi, _) in enumerate(items)}
        n_w, n_f = len(words), len(frames)
        per_layer: dict[str, list[float]] = {}
        cos_rows: dict[str, dict[int, np.ndarray]] = {v: {} for v in PROBE_VARIANTS}
        probe_rows: dict[str, dict[int, np.ndarray]] = {v: {} for v in PROBE_VARIANTS}
        ceiling: dict[int, np.ndarray] = {}
        word_ids = np.repeat(np.arange(n_w), n_f)
        frame_ids = np.tile(np.arange(n_f), n_w)
        for L in layers:
            H = acts[f"resid_post.{L}"].numpy()
            orig = H[[index[("original", wi, fi)] for wi, fi in zip(word_ids, frame_ids)]]
            partner = H[[index[("original", other[wi], fi)] for wi, fi in zip(word_ids, frame_ids)]]
            scrambled = {v: H[[index[(v, wi, fi)] for wi, fi in zip(word_ids, frame_ids)]] for v in PROBE_VARIANTS}
            fit = probe_transfer(orig, word_ids, frame_ids, scrambled)
            ceiling[L] = fit.correct_original.astype(float)
            for v, scr in scrambled.items():
                cos_rows[v][L] = restoration_cosine(scr, orig, partner)
                per_layer.setdefault(f"restoration_cos_{v}", []).append(round(float(cos_rows[v][L].mean()), 6))
                per_layer.setdefault(f"cos_scrambled_original_{v}", []).append(round(float(row_cosine(scr, orig).mean()), 6))
                probe_rows[v][L] = fit.correct_scrambled[v].astype(float)
                per_layer.setdefault(f"restoration_probe_acc_{v}", []).append(round(float(probe_rows[v][L].mean()), 6))
            per_layer.setdefault("probe_acc_original", []).append(round(float(ceiling[L].mean()), 6))
        curves += Curve.each(per_layer, layers)
        details["probe"] = {
            "layers": layers,
            "per_layer": per_layer,
            "n_words": n_w,
            "n_contexts": n_f,
            "chance": 1 / n_w,
            "layer_by_half": {},
            "max_over_layers": {},
        }
        half = word_ids % 2  # two halves of the words: each half is reported at the layer the other half chose
        for v in PROBE_VARIANTS:
            cos, cos_layers = cross_fitted(cos_rows[v], half)
            acc, acc_layers = cross_fitted(probe_rows[v], half)
            details["probe"]["layer_by_half"][f"restoration_cos_{v}"] = cos_layers
            details["probe"]["layer_by_half"][f"restoration_probe_acc_{v}"] = acc_layers
            details["probe"]["max_over_layers"][f"restoration_cos_{v}"] = max(per_layer[f"restoration_cos_{v}"])
            details["probe"]["max_over_layers"][f"restoration_probe_acc_{v}"] = max(per_layer[f"restoration_probe_acc_{v}"])
            # A word in its n_f contexts is one unit: its rows share the word's own states.
            metrics[f"restoration_cos_{v}"] = ctx.metric(cos, unit=word_ids)
            metrics[f"restoration_probe_acc_{v}"] = ctx.metric(acc, unit=word_ids)
            ceiling_rows = np.where(half == 0, ceiling[acc_layers[0]], ceiling[acc_layers[1]])
            metrics[f"probe_acc_original_at_best_{v}"] = ctx.metric(ceiling_rows, unit=word_ids)
        if len(layers) > 1:
            notes.append(
                "restoration summaries are not a maximum over layers: the words are split in two halves and each "
                "half is reported at the layer that scored best on the other half (details.probe.layer_by_half; "
                "the in-sample maxima are details.probe.max_over_layers); the different-word baseline is "
                "subtracted at that same layer, row by row"
            )
        self.plot_probe(ctx, details["probe"])

    # Plots ---------------------------------------------------------------------------------
    def plot_recovery(self, ctx, metrics, types) -> None:
        shown = [t for t in types if f"recovery_rate_{t}" in metrics]
        if not shown:
            return
        fig = ctx.figure(figsize=(6, 3.5))
        ax = fig.subplots()
        vals = [metrics[f"recovery_rate_{t}"] for t in shown]
        ax.bar(
            range(len(shown)),
            [m.value for m in vals],
            yerr=[[m.value - m.ci_low for m in vals], [m.ci_high - m.value for m in vals]],
            capsize=3,
        )
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(shown)), shown, rotation=20)
        ax.set_ylabel("recovery rate (%)")
        ax.set_title("ScrRec recovery rate by scramble type")
        ctx.save_figure(fig, "recovery_rate.png")

    def plot_probe(self, ctx, probe) -> None:
        layers, per = probe["layers"], probe["per_layer"]
        fig = ctx.figure(figsize=(10, 3.5))
        a, b = fig.subplots(1, 2)
        for v in PROBE_VARIANTS:
            a.plot(layers, per[f"restoration_cos_{v}"], marker="o", ms=3, label=f"{v}: cos(scr, orig) - cos(scr, other)")
            b.plot(layers, per[f"restoration_probe_acc_{v}"], marker="o", ms=3, label=f"probe on {v}")
        b.plot(layers, per["probe_acc_original"], ls="--", color="black", label="probe on held-out originals")
        b.axhline(probe["chance"], color="grey", ls=":", label="chance")
        a.axhline(0, color="grey", lw=0.8)
        a.set_xlabel("layer (resid_post.L)"), a.set_ylabel("baseline-corrected cosine")
        b.set_xlabel("layer (resid_post.L)"), b.set_ylabel("word-identity accuracy")
        a.legend(fontsize=7), b.legend(fontsize=7)
        fig.suptitle("Scrambled word vs original word, last token of the word")
        ctx.save_figure(fig, "restoration_layers.png")


def cross_fitted(rows_by_layer: dict[int, np.ndarray], half: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Each row's value at the layer chosen on the other half of the rows; and the layer used for half 0 and half 1.

    Reporting the layer where a score peaks on the same rows inflates it (a maximum of noisy
    means); choosing on one half and reading the other (and the other way round) keeps every
    row while no row's value comes from a layer it helped to choose.
    """
    out = np.empty(len(half))
    chosen = []
    for h in (0, 1):
        layer = best_layer({L: float(r[half != h].mean()) for L, r in rows_by_layer.items()})
        out[half == h] = rows_by_layer[layer][half == h]
        chosen.append(layer)
    return out, chosen


def baseline_partner(words: Sequence[str]) -> list[int]:
    """For each word, the next word in the list with the closest length (the different-word baseline)."""
    n = len(words)
    partner = []
    for i, w in enumerate(words):
        candidates = [(abs(len(words[j]) - len(w)), (j - i) % n, j) for j in range(n) if j != i]
        partner.append(min(candidates)[2])
    return partner


def last_token_positions(tokenizer: Any, prompts: Sequence[str], spans: Sequence[tuple[int, int]]) -> list[int]:
    """Index (special tokens included) of the last token overlapping each character span."""
    return [tokens.last_token_of_span(tokenizer, p, a, b) for p, (a, b) in zip(prompts, spans)]
