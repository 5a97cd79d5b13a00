"""language_neurons: find language-specific MLP neurons and force them to switch the output language.

Kojima, Okimura, Iwasawa, Yanaka, Matsuo (NAACL 2024), "On the Multilingual Ability of
Decoder-based Pre-trained Language Models: Finding and Controlling Language-Specific
Neurons" (arXiv 2404.02431). Method, in the order the task runs it:

1. Data: sentences in en, de, fr, es, zh, ja. Shipped (default): 100 parallel rows written
   for this project, rows 1-80 for scoring, rows 81-100 held out (the held-out check and the
   translation sources). `source=hub`: FLORES+ dev + PAWS-X test (250 + 250 per language)
   for scoring, FLORES+ devtest held out.
2. Sites: every MLP neuron of every layer (`mlp_act.L`, the input of the down projection;
   `sites=mlp`, the default), or the paper's set (`sites=linear`): the output units of every
   linear layer in the blocks (`linear.L.PATH`: attention's q/k/v/o projections and the MLP's
   gate/up/down projections; GPT-2's fused Conv1D layers count as linear). Each sentence
   gives one number per neuron: the mean over its tokens (padding excluded,
   BOS included when the tokenizer adds it), accumulated batch by batch; no token-level
   activation is kept.
3. Scoring: per language L, each neuron's average precision (AP) as a detector of "this
   sentence is in L" (positives: L's sentences; negatives: the other five languages').
   top-k = highest AP, bottom-k = lowest AP, k = 0.5% of all neurons per side by default.
   Forcing value: the neuron's median pooled activation over L's sentences (`on_p50`).
4. Checks: AP of the selected neurons on the held-out sentences; their distribution over
   layers; the pairwise overlap between languages' sets.
5. Intervention: while generating, every selected neuron of L is set to its forcing value
   at every position (prompt and generated). Unconditional: BOS only, sampling at
   temperature 0.8; translation: the paper's prompt that does not name the target, greedy,
   cut at the first newline (L != en). Conditions: none, random (as many neurons as top +
   bottom, uniform over all neurons, forced to their own L medians; `n_random` seeds), top,
   bottom, both. A language identifier (lingua) says which texts are in L.

Choices where the paper is silent or differs, as the spec directs:
- The default neuron set is `mlp_act` units (`sites=mlp`): the paper scores every output
  unit of every linear layer in the blocks (`sites=linear`). mlp_act stays the default for
  cost: the linear set is 3.4x (smollm2-135m: 155,520 vs 46,080 units) to 4x as large, and
  the pooled activations grow with it (Llama-2-7B on the hub data: about 16 GB for linear
  units against 4 GB for mlp_act), as does the re-selecting bootstrap. The linear set moves
  the output language more on smollm2-135m (quick preset: unconditional lift over random
  0.52 [0.38, 0.67] against 0.38 [0.23, 0.50]; translation lift 0.32 against 0.04), so use
  `sites=linear` where memory allows, and to compare with the reference rates. With
  sites=mlp the notes say the reference rates were measured on the other set, and
  `details.neuron_share_of_linear_units` gives the forced share of all linear units.
- Intervals resample sentences, never neurons: AP metrics are recomputed for the fixed
  selection on each resample (in-sample values, said in the notes); edge share and overlap
  select again on each resample, among a pool of 4k candidates per side and language.
- Generation: every condition of a job (unconditional, translation) goes in one request,
  each forcing only its own rows (`Edit.prompts`), so batches are wide. Sampling seeds: one
  torch seed per generation batch (derived from the run seed, the job and the batch), not
  one seed per text; same seed and batch size, same texts.
- `--limit N` limits the unconditional samples per cell and the translation sources to N;
  scoring always uses the whole split.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import torch

from harness import (
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
from probes.neurons import (
    ReweightedAP,
    average_precision,
    default_k,
    edge_layers,
    layer_histogram,
    layer_of,
    median_rows,
    overlap_matrix,
    random_units,
    select_units,
)
from tasks.language_neurons.data import LANGS, load_hub, load_shipped
from tasks.language_neurons.identify import LanguageIdentifier

POOL_FACTOR = 4  # re-selection on a bootstrap draw chooses among the 4k best and 4k worst units of the full sample


TRANSLATE_PROMPT = "Translate an English sentence into a target language.\nEnglish: {src}\nTarget Language:"


CONDITIONS = ("none", "random", "top", "bottom", "both")


GEN_TASKS = ("uncond", "translate")


PAPER = (
    "Kojima et al. 2024, On the Multilingual Ability of Decoder-based Pre-trained Language Models: "
    "Finding and Controlling Language-Specific Neurons (NAACL 2024, arXiv 2404.02431)"
)


@dataclass
class UnitSpace:
    """Where each global unit index lives: the sites' units laid side by side, layer by layer.

    sites=mlp: one `mlp_act.L` site per layer. sites=linear: every linear layer of every
    block (`linear.L.PATH`: attention's q/k/v/o and the MLP's projections), the paper's set.
    """

    sites: list[str]
    widths: list[int]  # units of each site

    @classmethod
    def mlp(cls, widths: Sequence[int]) -> "UnitSpace":
        return cls([f"mlp_act.{L}" for L in range(len(widths))], list(widths))

    @property
    def layers(self) -> list[int]:
        """Block of each site: the L of `mlp_act.L` and `linear.L.PATH`."""
        return [int(name.split(".")[1]) for name in self.sites]

    @property
    def n_units(self) -> int:
        return int(sum(self.widths))

    @property
    def layer_widths(self) -> list[int]:
        """Units per block (the blocks' units are contiguous), for layer histograms and edge shares."""
        out = [0] * (max(self.layers) + 1)
        for layer, w in zip(self.layers, self.widths):
            out[layer] += w
        return out

    def locate(self, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(site index, index within the site) of each global unit index."""
        units = np.asarray(units)
        site = layer_of(units, self.widths)
        offsets = np.concatenate([[0], np.cumsum(self.widths)])
        return site, units - offsets[site]


def _space(space: "UnitSpace | Sequence[int]") -> UnitSpace:
    """A plain list of widths means one mlp_act site per layer."""
    return space if isinstance(space, UnitSpace) else UnitSpace.mlp(space)


def pool_units(ctx: Any, texts: Sequence[str], desc: str, sites: str = "mlp") -> tuple[torch.Tensor, UnitSpace]:
    """Mean of every unit over each sentence's real tokens: (n_texts, n_units) and where the units live.

    The engine reduces each site's (batch, seq, width) activation to per-sentence means inside
    the hook, so token activations are never held; the forward stops after the last block.
    """
    layers = range(ctx.model.n_layers)
    names = [f"mlp_act.{L}" for L in layers] if sites == "mlp" else [site for L in layers for site in ctx.linear_sites(L)]
    means = ctx.collect(texts, names, positions="all", reduce="mean", desc=desc)
    return torch.cat([means[s] for s in names], dim=1), UnitSpace(names, [means[s].shape[1] for s in names])


def pool_mlp_acts(ctx: Any, texts: Sequence[str], desc: str) -> tuple[torch.Tensor, list[int]]:
    """`pool_units` over the mlp_act sites: (n_texts, n_units) and the layer widths."""
    pooled, space = pool_units(ctx, texts, desc, "mlp")
    return pooled, space.widths


@dataclass
class LanguageScores:
    """AP of every unit for every language, the selection, and the forcing values."""

    ap: np.ndarray  # (n_langs, n_units)
    top: dict[str, np.ndarray]
    bottom: dict[str, np.ndarray]
    force: np.ndarray  # (n_langs, n_units): median pooled activation over L's sentences
    k: int


def score_languages(pooled: torch.Tensor, labels: np.ndarray, k: int) -> LanguageScores:
    """labels[i] is the language index of sentence i; one AP per (language, unit)."""
    ap = np.stack([average_precision(pooled, (labels == j).astype(int)) for j in range(len(LANGS))])
    top, bottom = {}, {}
    for j, L in enumerate(LANGS):
        sel = select_units(ap[j], k)
        top[L], bottom[L] = sel.top, sel.bottom
    force = torch.stack([median_rows(pooled[torch.as_tensor(labels == j)]) for j in range(len(LANGS))]).numpy()
    return LanguageScores(ap=ap, top=top, bottom=bottom, force=force, k=k)


class DrawMemo:
    """Each bootstrap draw's result, computed once, kept in a few large blocks.

    Thousands of draws each leave a small result (a few thousand floats) behind between the
    draw's large temporaries, and glibc cannot hand those temporaries' pages back while small
    live arrays sit among them: kept one array per draw, the memo of a 7B model's neurons
    pinned several GB. So results are copied into blocks of `block` rows per (kind, language)
    and the draw is keyed by a 16-byte digest of its weights (the same numbers either way).
    """

    def __init__(self, block: int = 256) -> None:
        self.block = block
        self.where: dict[tuple[str, str, bytes], int] = {}
        self.store: dict[tuple[str, str], list[list[np.ndarray]]] = {}  # per key: blocks, one list per part
        self.count: dict[tuple[str, str], int] = {}

    def get(self, kind: tuple[str, str], weights: np.ndarray, compute) -> Any:
        digest = hashlib.blake2b(np.ascontiguousarray(weights).tobytes(), digest_size=16).digest()
        row = self.where.get((*kind, digest))
        if row is None:
            out = compute(weights)
            parts = out if isinstance(out, tuple) else (out,)
            row = self.count.get(kind, 0)
            blocks = self.store.setdefault(kind, [])
            if row % self.block == 0:
                blocks.append([np.empty((self.block, *np.shape(p)), dtype=np.asarray(p).dtype) for p in parts])
            for target, part in zip(blocks[-1], parts):
                target[row % self.block] = part
            self.count[kind] = row + 1
            self.where[(*kind, digest)] = row
        stored = tuple(b[row % self.block] for b in self.store[kind][row // self.block])
        return stored if len(stored) > 1 else stored[0]


class SentenceResampling:
    """Detection metrics as statistics of sentence rows, so that their intervals resample sentences.

    The rows `ctx.metric` passes are sentence indices; a bootstrap draw becomes per-sentence
    weights (how often each sentence was drawn) and the AP of a column is recomputed under
    those weights (`ReweightedAP`: sorted once, two cumulative sums per draw).
    - AP metrics (`fixed_ap`) keep the selection fixed: mean and maximum AP of the selected
      units over the resampled sentences.
    - Selection metrics (`reselect`: edge share, overlap) select again on every draw: top-k
      and bottom-k of a candidate pool, the `pool` highest- and lowest-AP units of each
      language in the full sample (a unit outside it would have to jump past `pool` - k
      others), so their intervals include the choice of neurons.
    Each draw is computed once and remembered, since every metric sees the same draws.
    """

    def __init__(
        self,
        pooled: torch.Tensor,
        labels: np.ndarray,
        columns: dict[str, np.ndarray],
        ap: np.ndarray | None = None,
        k: int = 0,
        pool: int = 0,
    ) -> None:
        self.n = len(labels)
        self.k = k
        self.fixed = {L: ReweightedAP(pooled[:, columns[L]], (labels == j).astype(int)) for j, L in enumerate(LANGS)}
        self.pool: dict[str, tuple[np.ndarray, ReweightedAP]] = {}
        if ap is not None:
            for j, L in enumerate(LANGS):
                order = np.argsort(-ap[j], kind="stable")
                units = np.unique(np.concatenate([order[:pool], order[len(order) - pool :]]))
                self.pool[L] = (units, ReweightedAP(pooled[:, units], (labels == j).astype(int)))
        self._memo = DrawMemo()

    def _weights(self, rows: np.ndarray) -> np.ndarray:
        return np.bincount(np.asarray(rows, dtype=int), minlength=self.n)

    def _remember(self, kind: str, L: str, rows: np.ndarray, compute) -> Any:
        w = self._weights(rows)
        return self._memo.get((kind, L), w, compute)

    def fixed_ap(self, rows: np.ndarray, L: str) -> np.ndarray:
        """AP of L's fixed columns over the drawn sentences."""
        return self._remember("fixed", L, rows, self.fixed[L])

    def reselect(self, rows: np.ndarray, L: str) -> tuple[np.ndarray, np.ndarray]:
        """(top-k, bottom-k) of L, selected again on the drawn sentences."""

        def select(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            units, ap = self.pool[L]
            sel = select_units(np.nan_to_num(ap(w), nan=0.0), self.k)
            return units[sel.top], units[sel.bottom]

        return self._remember("select", L, rows, select)


def unit_sites(units: np.ndarray, space: UnitSpace | Sequence[int]) -> list[tuple[str, int]]:
    """(site, index within the site) of each global unit index; `space` may be the mlp_act layer widths."""
    space = _space(space)
    site, index = space.locate(units)
    return [(space.sites[int(s_)], int(i)) for s_, i in zip(site, index)]


def forcing_edits(units: np.ndarray, values: np.ndarray, space: UnitSpace | Sequence[int]) -> list[Edit]:
    """One `set` Edit per site fixing the given global units to `values` at every position."""
    space = _space(space)
    values = np.asarray(values, dtype=np.float32)
    site, index = space.locate(units)
    edits = []
    for s_ in np.unique(site):
        sel = site == s_
        edits.append(
            Edit(space.sites[int(s_)], "set", torch.as_tensor(values[sel]), position="all", dims=index[sel].astype(int).tolist())
        )
    return edits


@dataclass
class LanguageNeuronsConfig:
    """Defaults are the paper's settings where this model-agnostic version can follow them."""

    sites: Literal["mlp", "linear"] = option(
        "mlp", "neuron set: mlp_act units, or every linear layer's output units in the blocks (the paper's)"
    )
    source: Literal["shipped", "hub"] = option(
        "shipped", "sentences: the shipped parallel sample, or FLORES+ and PAWS-X from the hub"
    )
    k: int | None = option(None, "neurons per side (top and bottom); none: 0.5% of all mlp_act neurons", ge=1)
    force: Literal["on_p50", "zero"] = option("on_p50", "forced value: the neuron's median over L's sentences, or zero")
    n_samples: int = option(30, "unconditional texts per (language, condition)", ge=1)
    max_new_tokens: int = option(64, "tokens per unconditional text", ge=1)
    temperature: float = option(0.8, "sampling temperature of unconditional texts (0: greedy)", ge=0)
    translation: bool = option(True, "also force neurons while translating English sentences")
    translation_max_new_tokens: int = option(128, "tokens per translation", ge=1)
    n_translate: int = option(100, "translation sources (the shipped sample has 20)", ge=0)
    conditions: list[str] = option(list(CONDITIONS), f"intervention conditions, a subset of {','.join(CONDITIONS)}")
    languages: list[str] = option(list(LANGS), "languages forced in the intervention (scoring always uses all six)")
    n_random: int = option(3, "seeds of the random-neuron control", ge=1)
    flores_path: str = option("openlanguagedata/flores_plus", "hub: the FLORES+ data set")
    pawsx_path: str = option("google-research-datasets/paws-x", "hub: the PAWS-X data set")
    n_per_source: int = option(250, "hub: sentences per language from each of FLORES+ and PAWS-X", ge=1)
    n_heldout: int = option(100, "hub: held-out FLORES+ devtest sentences per language", ge=1)
    max_tokens: int = option(256, "hub: longest sentence kept, in tokens", ge=1)
    data_seed: int = option(1234, "hub: seed of the sentence sample", ge=0, lt=2**32)

    def __post_init__(self) -> None:
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if unknown or not self.conditions:
            raise ValueError(
                f"unknown condition {', '.join(unknown) or '(none)'}: use a comma-separated subset of {','.join(CONDITIONS)}"
            )
        bad = [L for L in self.languages if L not in LANGS] or ([] if self.languages else ["(none)"])
        if bad:
            raise ValueError(f"unknown language {', '.join(bad)}: use a comma-separated subset of {','.join(LANGS)}")


@register_task
class LanguageNeurons(Task):
    name = "language_neurons"
    version = "1.0"
    paper = PAPER
    description = (
        "Language-specific MLP neurons (en, de, fr, es, zh, ja): AP as language detectors, layer "
        "distribution, overlap, and forcing ~1% of them to switch the output language."
    )
    Config = LanguageNeuronsConfig
    # `--preset quick`: sized so every task finishes on a laptop CPU; its own config hash, never mixed with full runs.
    # Only the conditions the headline lifts need (none, random, both), with more texts each.
    presets = {
        "quick": {
            "n_samples": 8,
            "n_translate": 5,
            "n_random": 1,
            "max_new_tokens": 32,
            "translation_max_new_tokens": 48,
            "conditions": ["none", "random", "both"],
        }
    }
    headline_metrics = [
        "lift_vs_random.uncond.mean",
        "lift.uncond.mean",
        "edge_share",
        "overlap_max",
        "heldout_ap_top.en",
        "heldout_ap_top.de",
        "heldout_ap_top.zh",
        "heldout_ap_top.ja",
    ]
    finding = Finding(
        claim="forcing the language's top and bottom neurons makes unconditional text be in that language more often "
        "than forcing as many random neurons (paired per text)",
        paper_verdict="holds on XGLM, BLOOM and Llama 2 (e.g. xglm-564M de .01 -> .95 with 0.9% of the units forced)",
        facets=(
            Facet(
                "causal",
                "lift_vs_random.uncond.mean",
                0.0,
                "per text, in-language after forcing the language's neurons minus after forcing random ones",
            ),
        ),
    )
    metric_descriptions = {
        "mean_ap_top.L": "in-sample mean AP of L's top-k neurons as detectors of 'this sentence is in L' (interval: sentences resampled, selection fixed)",
        "mean_ap_bottom.L": "in-sample mean AP of L's bottom-k neurons (low: they fire for everything but L)",
        "max_ap.L": "in-sample highest AP of one neuron for L",
        "heldout_ap_top.L": "mean AP of L's top-k neurons on held-out sentences (out of sample; interval resamples held-out sentences)",
        "heldout_ap_bottom.L": "mean AP of L's bottom-k neurons on held-out sentences",
        "edge_share[.L]": "share of the selected neurons in the first and last 20% of layers (uniform: details.edge_share_uniform); interval re-selects on resampled sentences",
        "overlap_{top,bottom}_max": "largest |S_L1 & S_L2| / k between two languages' top (bottom) sets; interval re-selects on resampled sentences",
        "overlap_max": "the larger of overlap_top_max and overlap_bottom_max (paper: < 5%)",
        "neuron_share": "neurons forced per language (top and bottom) / all mlp_act neurons, over the six languages",
        "success.{cond}.{task}.L": "share of texts identified as L under a condition (none, random, top, bottom, both), task uncond or translate",
        "lift.{task}.L": "success.both - success.none, paired by text (translate: by source)",
        "lift_vs_random.{task}.L": "success.both - success.random (mean over random seeds), paired by text",
        "lift[_vs_random].{task}.mean": "the same averaged over the forced languages; text i of every language is one unit",
    }

    @classmethod
    def workload(cls, config: LanguageNeuronsConfig, shape: ModelShape) -> Workload:
        """Scoring and held-out sentences (about 30 tokens) read at every unit; one mean per (sentence,
        unit) held in float32; texts generated under each condition (random once per seed)."""
        scoring, held = (6 * 2 * config.n_per_source, 6 * config.n_heldout) if config.source == "hub" else (480, 120)
        width = shape.d_mlp if config.sites == "mlp" else 4 * shape.d_model + 2 * shape.d_mlp + shape.d_model
        conditions = len(config.conditions) + (config.n_random - 1 if "random" in config.conditions else 0)
        langs = len(config.languages)
        uncond = langs * conditions * config.n_samples * config.max_new_tokens
        translate = (
            (
                len([L for L in config.languages if L != "en"])
                * conditions
                * min(config.n_translate, 20)
                * config.translation_max_new_tokens
            )
            if config.translation
            else 0
        )
        return Workload(
            forward_tokens=(scoring + held) * 30,
            generated_tokens=uncond + translate,
            activation_bytes=scoring * shape.n_layers * width * 4,
            notes="sites=linear widths are Llama-shaped" if config.sites == "linear" else "",
        )

    def run(self, model, config: LanguageNeuronsConfig, ctx) -> TaskResult:
        tok = model.tokenizer
        corpus = load_shipped() if config.source == "shipped" else load_hub(config, tok)
        metrics: dict[str, Metric] = {}
        notes: list[str] = []
        details: dict[str, Any] = {"data": corpus.origin, "n_layers": model.n_layers}

        # Scoring split: positives L, negatives the other five languages.
        texts = [t for L in LANGS for t in corpus.score[L]]
        labels = np.array([j for j, L in enumerate(LANGS) for _ in corpus.score[L]])
        pooled, space = pool_units(ctx, texts, f"{config.sites} units (scoring)", config.sites)
        widths = space.layer_widths  # units per layer: histograms and edge shares are per layer
        n_units = pooled.shape[1]
        k = config.k if config.k is not None else default_k(n_units)
        if 2 * k > n_units:
            raise UsageError(
                f"--task-arg k={k} selects more than the model's {n_units} {config.sites} units: pick k <= {n_units // 2}"
            )
        scores = score_languages(pooled, labels, k)
        force = np.zeros_like(scores.force) if config.force == "zero" else scores.force
        chance = [float((labels == j).mean()) for j in range(len(LANGS))]
        details.update(sites=config.sites, n_units=n_units, units_per_layer=widths, k=k, chance_ap=dict(zip(LANGS, chance)))
        if config.sites == "mlp":
            details["d_mlp"] = widths
        else:
            details["linear_widths"] = {
                name.split(".", 2)[2]: w for name, w, layer in zip(space.sites, space.widths, space.layers) if layer == 0
            }  # block 0's layers
        columns = {L: np.concatenate([scores.top[L], scores.bottom[L]]) for L in LANGS}
        pool = min(POOL_FACTOR * k, n_units)
        scoring = SentenceResampling(pooled, labels, columns, ap=scores.ap, k=k, pool=pool)
        details.update(reselection_pool=pool, n_scoring_units=len(np.unique(corpus.units("score"))))
        del pooled

        # Held-out split: do the selected neurons still separate the languages?
        held_texts = [t for L in LANGS for t in corpus.heldout[L]]
        held_labels = np.array([j for j, L in enumerate(LANGS) for _ in corpus.heldout[L]])
        held, _ = pool_units(ctx, held_texts, f"{config.sites} units (held out)", config.sites)
        heldout = SentenceResampling(held, held_labels, columns)
        del held

        detection, found, detection_notes, hist = self.detection_metrics(
            ctx, scores, force, scoring, heldout, space, model.n_layers, corpus.units("score"), corpus.units("heldout"), pool
        )
        metrics.update(detection)
        details.update(found)
        notes += detection_notes

        # Share of the model's neurons forced per language.
        n_linear = ctx.n_linear_units()
        forced = [len(np.union1d(scores.top[L], scores.bottom[L])) for L in LANGS]
        metrics["neuron_share"] = ctx.metric(np.array(forced, dtype=float) / n_units, higher_is_better=None)
        details["neuron_share_of_linear_units"] = round(float(np.mean(forced)) / n_linear, 8) if n_linear else None
        details["n_linear_units"] = n_linear

        # Intervention.
        identify = LanguageIdentifier()
        details["language_identifier"] = identify.name
        success = self.intervene(model, config, ctx, corpus, scores, force, space, identify, metrics, details)
        self.plot_layers(ctx, hist, config.sites)
        if success:
            self.plot_success(ctx, success, config.conditions)

        if config.sites == "mlp":
            notes.append(
                "the reference rates were measured with the paper's neuron set (sites=linear: the output units of "
                "every linear layer in the blocks); this run scores and forces mlp_act units only, so compare the "
                "share of neurons forced (details.neuron_share_of_linear_units), not the rates one to one"
            )
        else:
            notes.append("neuron set as in the paper: the output units of every linear layer in the blocks (sites=linear)")
        if "random" in config.conditions and config.n_random > 0:
            notes.append(
                f"success.random.* and lift_vs_random.* intervals resample texts with the {config.n_random} "
                "random neuron set(s) fixed: the choice of random set is not in them"
            )
        if metrics["overlap_max"].value >= 0.05:
            notes.append(f"overlap_max {metrics['overlap_max'].value:.3f} is not below the paper's 5%")
        if metrics["edge_share"].ci_low <= details["edge_share_uniform"]:
            notes.append("selected neurons are not concentrated in the first and last 20% of layers beyond a uniform spread")
        return TaskResult(metrics=metrics, reference=self.reference(), details=details, notes=notes)

    @staticmethod
    def detection_metrics(
        ctx,
        scores: LanguageScores,
        force: np.ndarray,
        scoring: SentenceResampling,
        heldout: SentenceResampling,
        space: UnitSpace,
        n_layers: int,
        units: np.ndarray,
        held_units: np.ndarray,
        pool: int,
    ) -> tuple[dict[str, Metric], dict[str, Any], list[str], dict]:
        """The detection metrics (AP, edge share, overlap) with their sentence-resampled intervals.

        The analysis side of the task, with no model call: `benchmarks/bench_scale.py` runs it on
        synthetic pooled activations of a 7B or 70B model's width. Returns (metrics, details,
        notes, layer histograms).
        """
        # Every detection metric is a statistic of sentence rows: its interval resamples
        # sentences (parallel rows together), never neurons.
        rows, held_rows = np.arange(len(units)), np.arange(len(held_units))
        k, widths = scores.k, space.layer_widths
        metrics: dict[str, Metric] = {}
        details: dict[str, Any] = {}
        notes: list[str] = []
        hist: dict[str, dict[str, list[float]]] = {}
        edge = edge_layers(n_layers)
        selected: dict[str, dict[str, list]] = {}

        def edge_share(r: np.ndarray, langs: Sequence[str]) -> float:
            chosen = np.concatenate([u for L in langs for u in scoring.reselect(r, L)])
            return float(edge[layer_of(chosen, widths)].mean())

        for j, L in enumerate(LANGS):
            top, bottom = scores.top[L], scores.bottom[L]
            metrics[f"mean_ap_top.{L}"] = ctx.metric(
                rows, unit=units, statistic=lambda r, L=L: float(scoring.fixed_ap(r, L)[:k].mean())
            )
            metrics[f"mean_ap_bottom.{L}"] = ctx.metric(
                rows, unit=units, higher_is_better=False, statistic=lambda r, L=L: float(scoring.fixed_ap(r, L)[k:].mean())
            )
            metrics[f"max_ap.{L}"] = ctx.metric(
                rows, unit=units, statistic=lambda r, L=L: float(scoring.fixed_ap(r, L)[:k].max())
            )
            metrics[f"heldout_ap_top.{L}"] = ctx.metric(
                held_rows, unit=held_units, statistic=lambda r, L=L: float(heldout.fixed_ap(r, L)[:k].mean())
            )
            metrics[f"heldout_ap_bottom.{L}"] = ctx.metric(
                held_rows,
                unit=held_units,
                higher_is_better=False,
                statistic=lambda r, L=L: float(heldout.fixed_ap(r, L)[k:].mean()),
            )
            metrics[f"edge_share.{L}"] = ctx.metric(
                rows, unit=units, higher_is_better=None, statistic=lambda r, L=L: edge_share(r, [L])
            )
            hist[L] = {
                "top": layer_histogram(top, widths).round(6).tolist(),
                "bottom": layer_histogram(bottom, widths).round(6).tolist(),
            }
            selected[L] = {
                side: [
                    [site, unit, round(float(scores.ap[j, u]), 6), round(float(force[j, u]), 6)]
                    for u, (site, unit) in zip(chosen, unit_sites(chosen, space))
                ]
                for side, chosen in (("top", top), ("bottom", bottom))
            }
        metrics["edge_share"] = ctx.metric(rows, unit=units, higher_is_better=None, statistic=lambda r: edge_share(r, LANGS))
        details.update(
            layer_hist=hist, edge_layers=np.flatnonzero(edge).tolist(), edge_share_uniform=float(edge.mean()), selected=selected
        )

        # Overlap between languages' sets (selected again on every draw, like edge_share).
        for s_i, side in enumerate(("top", "bottom")):
            sets = [getattr(scores, side)[L] for L in LANGS]
            mat = overlap_matrix(sets, k)
            details[f"overlap_{side}"] = {
                L1: {L2: round(float(mat[a, b]), 6) for b, L2 in enumerate(LANGS)} for a, L1 in enumerate(LANGS)
            }
            off = mat + np.diag(np.full(len(LANGS), -np.inf))
            a, b = np.unravel_index(np.argmax(off), off.shape)

            def max_overlap(r: np.ndarray, s_i: int = s_i) -> float:
                drawn = [scoring.reselect(r, L)[s_i] for L in LANGS]
                return max(
                    len(np.intersect1d(drawn[x], drawn[y])) / k for x in range(len(LANGS)) for y in range(len(LANGS)) if x != y
                )

            metrics[f"overlap_{side}_max"] = ctx.metric(rows, unit=units, statistic=max_overlap, higher_is_better=False)
            details[f"overlap_{side}_max_pair"] = [LANGS[a], LANGS[b]]
        metrics["overlap_max"] = max(metrics["overlap_top_max"], metrics["overlap_bottom_max"], key=lambda m: m.value)
        notes.append(
            "mean_ap_*, max_ap.* are in-sample: the neurons were selected by AP on these same scoring sentences, "
            "so the values are optimistic; their intervals resample sentences (a parallel row's six sentences "
            "together) for the fixed selection; heldout_ap_* are the out-of-sample check"
        )
        notes.append(
            f"edge_share and overlap_* intervals select top-k and bottom-k again on every resample of the "
            f"sentences, among the {pool} highest- and {pool} lowest-AP neurons of each language in the full sample"
        )

        return metrics, details, notes, hist

    def intervene(self, model, config, ctx, corpus, scores, force, space, identify, metrics, details) -> dict:
        """Generate under each condition and count texts identified as L; returns success rates for the plot."""
        conditions = config.conditions
        n_units = scores.ap.shape[1]
        n_uncond = len(ctx.limited(list(range(config.n_samples))))
        sources = list(ctx.limited(corpus.sources[: config.n_translate])) if config.translation else []
        jobs = [("uncond", [[tokens.bos_or_eos(model.tokenizer)]] * n_uncond, config.max_new_tokens, config.temperature, ())]
        if sources:
            prompts = [TRANSLATE_PROMPT.format(src=s) for s in sources]
            jobs.append(("translate", prompts, config.translation_max_new_tokens, 0.0, ("\n",)))
        random_sets = {s: random_units(n_units, 2 * scores.k, [ctx.seed, 7, s]) for s in range(config.n_random)}
        hits: dict[tuple[str, str, str], np.ndarray] = {}  # (cond, task, L) -> (n_runs, n_texts) 0/1
        rates: dict[str, dict[str, dict[str, float]]] = {}
        for task, prompts, max_new, temperature, stop in jobs:
            langs = [L for L in config.languages if task == "uncond" or L != "en"]
            if not langs:
                continue
            cells: list[tuple[str, str | None, int, np.ndarray | None]] = []
            if "none" in conditions:
                cells.append(("none", None, 0, None))
            for L in langs:
                both = np.union1d(scores.top[L], scores.bottom[L])
                for cond in conditions:
                    if cond == "random":
                        cells += [("random", L, s, random_sets[s]) for s in range(config.n_random)]
                    elif cond != "none":
                        cells.append((cond, L, 0, {"top": scores.top[L], "bottom": scores.bottom[L], "both": both}[cond]))
            # Every cell in one request, each forcing its own rows: decoding on a CPU is memory-bound
            # at a cell's few rows, so wide batches of many cells run about twice as fast.
            spans = [range(c_i * len(prompts), (c_i + 1) * len(prompts)) for c_i in range(len(cells))]  # each cell's rows
            edits: list[Edit] = []
            for (cond, L, s, units), rows in zip(cells, spans):
                if units is not None:
                    edits += [
                        dataclasses.replace(e, prompts=rows) for e in forcing_edits(units, force[LANGS.index(L), units], space)
                    ]
            seed = int(np.random.default_rng([ctx.seed, GEN_TASKS.index(task)]).integers(2**31))
            with ctx.intervene(edits):
                texts = ctx.generate(
                    list(prompts) * len(cells),
                    max_new,
                    temperature=temperature,
                    seed=seed,
                    stop=stop,
                    desc=f"generating ({task}, {len(cells)} conditions)",
                )
            detected = identify(texts)
            for (cond, L, s, units), rows in zip(cells, spans):
                found = [detected[i] for i in rows]
                for t_i, (text, lang) in enumerate(zip([texts[i] for i in rows], found)):
                    ctx.log_sample(
                        {"language": L, "condition": cond, "task": task, "seed": s, "index": t_i, "text": text, "detected": lang}
                    )
                for target in [L] if L else langs:
                    hits.setdefault((cond, task, target), []).append(np.array([f == target for f in found], dtype=float))
            for (cond, t, L), runs in list(hits.items()):
                if t != task:
                    continue
                runs = np.stack(runs)
                hits[(cond, t, L)] = runs
                # A translation source is one unit: the random-neuron seeds translate the same sources.
                by_source = np.tile(np.arange(runs.shape[1]), runs.shape[0]) if task == "translate" else None
                metrics[f"success.{cond}.{task}.{L}"] = ctx.metric(runs.ravel(), unit=by_source)
                rates.setdefault(task, {}).setdefault(cond, {})[L] = float(runs.mean())
            for name, base in (("lift", "none"), ("lift_vs_random", "random")):
                if "both" not in conditions or base not in conditions:
                    continue
                diffs = []
                for L in langs:
                    pair = np.stack([hits[("both", task, L)].mean(0), hits[(base, task, L)].mean(0)], 1)
                    metrics[f"{name}.{task}.{L}"] = ctx.metric(pair, statistic=_mean_diff)
                    diffs.append(pair)
                # Text i of every language shares a unit where the languages share a text: the same
                # source (translate), or the same unforced text (lift.uncond: condition none is
                # generated once for all languages). Unconditional random texts are drawn per language.
                shared = task == "translate" or base == "none"
                text_index = np.concatenate([np.arange(len(d)) for d in diffs]) if shared else None
                metrics[f"{name}.{task}.mean"] = ctx.metric(np.concatenate(diffs), unit=text_index, statistic=_mean_diff)
        details["generation"] = {
            "n_uncond": n_uncond,
            "n_translate": len(sources),
            "conditions": conditions,
            "random_count": int(len(random_sets[0])) if random_sets else 0,
        }
        return rates

    def reference(self) -> Reference:
        # Measured (spec) with langdetect on the authors' released unconditional generations,
        # sites=linear, 1,000 top + 1,000 bottom forced: (none, both) per language.
        table = {
            "facebook/xglm-564M": {
                "de": (0.01, 0.95),
                "fr": (0.01, 0.90),
                "es": (0.01, 0.74),
                "zh": (0.06, 0.78),
                "ja": (0.06, 0.99),
            },
            "bigscience/bloom-1b7": {
                "de": (0.00, 0.88),
                "fr": (0.13, 0.98),
                "es": (0.18, 0.96),
                "zh": (0.06, 0.83),
                "ja": (0.00, 0.99),
            },
            "meta-llama/Llama-2-7b-hf": {
                "de": (0.00, 0.25),
                "fr": (0.02, 0.08),
                "es": (0.01, 0.35),
                "zh": (0.00, 0.45),
                "ja": (0.01, 0.07),
            },
        }
        metrics = {
            m: {
                k: v
                for L, (none, both) in row.items()
                for k, v in ((f"success.none.uncond.{L}", none), (f"success.both.uncond.{L}", both))
            }
            for m, row in table.items()
        }
        return Reference(
            source=f"{PAPER}; rates measured from the authors' released generations (spec, langdetect 1.0.9)",
            metrics=metrics,
            notes={
                "sites": "the paper forces linear-layer output units (sites=linear); the default here is mlp_act units (sites=mlp)",
                "overlap_max": "paper (abstract level): overlap between languages < 5%",
                "edge_share": "paper (abstract level): top and bottom neurons mostly in the first and last few layers",
                "success.both.translate": "Llama-2-7b .53-.75 for all five languages; xglm-564M only de moves (.99)",
                "mean_ap_top": "no reference: the paper reports no value for this metric",
            },
        )

    # Plots.
    def plot_layers(self, ctx, hist, sites: str = "mlp") -> None:
        from matplotlib.ticker import MaxNLocator

        fig = ctx.figure(figsize=(7, 5))
        axes = fig.subplots(2, 1, sharex=True)
        for ax, side in zip(axes, ("top", "bottom")):
            n = len(hist[LANGS[0]][side])
            width = 0.8 / len(LANGS)
            for j, L in enumerate(LANGS):
                ax.bar(np.arange(n) + (j - len(LANGS) / 2 + 0.5) * width, hist[L][side], width=width, label=L)
            ax.set_ylabel(f"share of {side}-k")
        axes[0].legend(ncol=6, fontsize=7)
        axes[1].set_xlabel("layer")
        axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0].set_title(f"language_neurons: selected {'mlp_act' if sites == 'mlp' else 'linear-layer'} units per layer")
        ctx.save_figure(fig, "layer_hist.png")

    def plot_success(self, ctx, rates, conditions) -> None:
        fig = ctx.figure(figsize=(6 * len(rates), 3.5))
        axes = fig.subplots(1, len(rates), squeeze=False)
        for ax, (task, by_cond) in zip(axes[0], rates.items()):
            langs = [L for L in LANGS if any(L in by_cond[c] for c in by_cond)]
            width = 0.8 / max(1, len(by_cond))
            for c_i, cond in enumerate(c for c in conditions if c in by_cond):
                ax.bar(
                    np.arange(len(langs)) + (c_i - len(by_cond) / 2 + 0.5) * width,
                    [by_cond[cond].get(L, np.nan) for L in langs],
                    width=width,
                    label=cond,
                )
            ax.set_xticks(np.arange(len(langs)), langs)
            ax.set_ylim(0, 1)
            ax.set_title(f"{task}: share of texts in L")
        axes[0][0].legend(fontsize=7)
        ctx.save_figure(fig, "success.png")


def _mean_diff(rows: np.ndarray) -> float:
    return float(rows[:, 0].mean() - rows[:, 1].mean())
