"""What a task gets from the engine: the model's machinery bound to this run's options.

A task never calls the model itself. It asks the `RunContext` for requests of a few kinds
(next-token scores, continuation log-likelihoods, generations, activations, a streamed
corpus) and gets them batched by length, with one batch sizer per kind of call (halved on
CUDA out-of-memory), tokens counted, a progress bar, and the edits in force applied. The
same object gives the run's randomness, its intervals (`metric`) and its artifacts, so
every task behaves the same way and a plugin gets exactly what the built-in tasks get.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from harness.engine import intervene as _intervene
from harness.engine import scoring, sites
from harness.engine.batching import CPU_BATCH_SIZE, CPU_GENERATE_BATCH_SIZE, BatchSizer
from harness.engine.generation import Prompt, generate
from harness.engine.lens import Lens, logit_lens
from harness.engine.sites import Position
from harness.errors import UsageError
from harness.results import Metric, write_atomic
from harness.results.stats import N_BOOTSTRAP
from harness.results.stats import metric as _metric

if TYPE_CHECKING:  # the type only: the context never loads a model
    from harness.engine.models import Model


@dataclass
class RunContext:
    """The door between one task run and the model; built by the runner, one per (model, task).

    Attributes a task reads: `model` (the loaded `Model`: `.tokenizer`, `.n_layers`,
    `.d_model`, `.hf`), `seed`, `limit` (from `--limit`: use `limited()`), `bootstrap`
    (resamples behind every interval), `log` (a logger), `writes_files` (whether this process
    may write checkpoints or cache folders: every data-parallel rank resumes from the same
    checkpoint, and rank 0 alone writes it).
    """

    model: Model  # a run always has one; a context that only analyses numbers (tests) may pass None
    seed: int = 0
    limit: int | None = None
    batch_size: int | str = "auto"
    bootstrap: int = N_BOOTSTRAP
    artifacts_dir: Path | None = None
    checkpoint_dir: Path | None = None  # survives a killed run (unlike the staging artifacts); removed once it finishes
    writes_files: bool = True  # False on data-parallel ranks other than 0: they read checkpoints and caches, never write
    cache_dir: Path | None = None  # reusable across runs (e.g. a trained SAE); keyed by what produced it
    log_samples: bool = False
    show_progress: bool | None = None  # None: only on a terminal
    samples: list[dict] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("harness.api.task"))
    phase_seconds: dict[str, float] = field(default_factory=dict)  # seconds per kind of model call (results' timing)
    _sizers: dict[str, BatchSizer] = field(default_factory=dict, repr=False)

    # Progress and batching ------------------------------------------------------------

    def progress(self, iterable: Iterable, desc: str, total: int | None = None) -> Iterable:
        """A tqdm bar over `iterable` that respects `--no-progress` (for a task's own long loops)."""
        disable = None if self.show_progress is None else not self.show_progress
        return tqdm(iterable, desc=desc, total=total, disable=disable, leave=False)

    def _sizer(self, kind: str) -> BatchSizer:
        """One batch size per kind of call, kept for the whole task: halved once on OOM, not again per call."""
        if kind not in self._sizers:
            cpu_size = CPU_GENERATE_BATCH_SIZE if kind == "generate" else CPU_BATCH_SIZE
            self._sizers[kind] = BatchSizer(self.batch_size, self.model.input_device, cpu_size)
        return self._sizers[kind]

    def _bar(self, desc: str) -> Callable[[Any], Any]:
        return lambda batches: self.progress(batches, desc)

    @contextlib.contextmanager
    def _timed(self, kind: str) -> Iterator[None]:
        """Add the block's seconds to `kind` (with ' (edited)' under interventions): the results' time per phase."""
        if self.model is not None and self.model.active_edits:
            kind += " (edited)"
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phase_seconds[kind] = self.phase_seconds.get(kind, 0.0) + time.perf_counter() - start

    # Requests to the model ------------------------------------------------------------

    def score(
        self,
        prompts: Sequence[str],
        targets: Sequence[int],
        desc: str = "scoring",
        prefix_lengths: Sequence[int] | None = None,
        full_vocab: bool = True,
    ) -> scoring.Scores:
        """Next-token scores of `targets` (token ids) after each prompt.

        Returns `Scores`: `.logits` and `.logprobs` (n_prompts, n_targets) and `.top_token`
        (n_prompts,), the argmax over the whole vocabulary. `prefix_lengths[i]`: the first
        tokens of prompt i are shared by many prompts and computed once (patching runs); every
        edit in force must act after them. full_vocab=False computes only the targets' logits
        (`.logprobs` and `.top_token` are None): much cheaper with a large vocabulary.
        """
        with self._timed("score"):
            return scoring.score(self.model, prompts, targets, self._sizer("score"), self._bar(desc), prefix_lengths, full_vocab)

    def loglikelihood(
        self, contexts: Sequence[Prompt], continuations: Sequence[Prompt], desc: str = "log-likelihood"
    ) -> scoring.Loglikelihoods:
        """Summed log-probability of each continuation after its context, and whether it is the greedy one.

        Texts or token-id lists; a text continuation is tokenised as it reads after its context.
        Returns `Loglikelihoods` with `.logprob`, `.is_greedy` and `.n_tokens`, one entry per request.
        """
        with self._timed("loglikelihood"):
            return scoring.loglikelihood(self.model, contexts, continuations, self._sizer("loglikelihood"), self._bar(desc))

    def generate(
        self,
        prompts: Sequence[Prompt],
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
        desc: str = "generating",
    ) -> list[str]:
        """Continuations through transformers' `generate`: greedy at temperature 0, else sampled.

        `seed` (default: the run seed) makes sampling reproducible; `stop` strings end a
        continuation and are cut off. Prompts are texts or token-id lists (e.g. BOS alone).
        """
        with self._timed("generate"):
            return generate(
                self.model,
                prompts,
                max_new_tokens,
                self._sizer("generate"),
                self._bar(desc),
                temperature=temperature,
                top_p=top_p,
                seed=self.seed if seed is None else seed,
                stop=stop,
            )

    def collect(
        self,
        prompts: Sequence[str],
        sites_: Sequence[str],
        positions: Position = "last",
        desc: str = "collecting",
        reduce: str | None = None,
    ) -> dict[str, Any]:
        """Activations at named sites: {site: tensor (n_prompts, d)} on CPU, float32.

        Sites: resid_pre.L, resid_post.L (resid_post of the last layer is before the final
        norm), attn_out.L, mlp_out.L, mlp_act.L, linear.L.PATH (see `linear_sites`), logits.
        positions: "last", an index, one index per prompt, or "all" (a list of (len_i, d) tensors per site). reduce="mean" with
        positions="all" averages each prompt's real tokens inside the hook. The forward pass
        stops after the deepest layer asked for.
        """
        with self._timed("collect"):
            return sites.collect(self.model, prompts, sites_, positions, self._sizer("collect"), self._bar(desc), reduce)

    def train_sae(
        self,
        trainer: Any,
        texts: Iterator[str],
        site: str,
        *,
        tokens: int,
        batch_tokens: int,
        context: int,
        block_texts: int,
        key: dict[str, Any],
        checkpoint_every: int,
    ) -> Any:
        """Train an SAE (`probes.sae.SAETrainer`) on activations at `site` streamed from `texts`,
        checkpointed in `checkpoint_dir` so a killed run resumes exactly; stops with one line if
        training diverges. Returns the trainer's `TrainSummary` (see `harness.engine.sae_training`)."""
        from harness.engine.sae_training import train_streamed

        return train_streamed(
            self,
            trainer,
            texts,
            site,
            tokens=tokens,
            batch_tokens=batch_tokens,
            context=context,
            block_texts=block_texts,
            key=key,
            checkpoint_every=checkpoint_every,
        )

    def check_layers(self, option: str, layers: Iterable[int]) -> None:
        """One line, before any work, for a layer option past the model's depth: the one depth check of every task."""
        n = self.model.n_layers
        for layer in layers:
            if not 0 <= layer < n:
                raise UsageError(f"--task-arg {option}: layer {layer} is past the model's depth ({n} layers, 0..{n - 1})")

    def linear_sites(self, layer: int) -> list[str]:
        """Every linear layer of block `layer` as a site (`linear.L.PATH`, e.g. linear.3.mlp.up_proj), in module order.

        Their output units are "every neuron of the block" in the sense of papers that score
        all linear layers (attention and MLP projections), not only the MLP's hidden units.
        """
        return sites.linear_sites(self.model, layer)

    def n_linear_units(self) -> int:
        """Output units of every linear layer in the blocks (the size of `linear_sites` over all layers)."""
        return sites.n_linear_units(self.model)

    def stream(self, texts: Iterable[str], site: str, max_tokens: int | None = None) -> Iterator[torch.Tensor]:
        """Batches of token activations (n_tokens, d) of a corpus at one site, padding and BOS dropped.

        For training on more tokens than fit in memory: `texts` may be a generator; each text
        is cut to `max_tokens`; the forward pass stops at the site's layer.
        """
        return self._stream_timed(sites.stream(self.model, texts, site, max_tokens, self._sizer("stream")))

    def _stream_timed(self, batches: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Time only the producing of each batch, not what the caller does with it (training)."""
        while True:
            with self._timed("stream"):
                batch = next(batches, None)
            if batch is None:
                return
            yield batch

    def logit_lens(
        self,
        prompts: Sequence[str],
        targets: Sequence[int],
        layers: Sequence[int] | None = None,
        position: Position = "last",
        desc: str = "logit lens",
    ) -> Lens:
        """Per layer, the next-token view of resid_post.L through the model's final norm and unembedding.

        Returns `Lens`: `.logprobs` (n_prompts, n_layers, n_targets) of the `targets` token ids
        and `.top_token` (n_prompts, n_layers); at the last layer it is the model's own output.
        """
        with self._timed("logit_lens"):
            return logit_lens(self.model, prompts, targets, layers, position, self._sizer("collect"), self._bar(desc))

    def intervene(self, edits: Sequence[_intervene.Edit]) -> contextlib.AbstractContextManager:
        """A `with` block inside which every request runs with `edits` applied (see `Edit`)."""
        return _intervene.intervene(self.model, edits)

    @contextlib.contextmanager
    def finetuned(self, examples: Sequence[tuple[str, str]], config: Any, name: str = "adapter") -> Iterator[Any]:
        """LoRA fine-tune the run's model on (prompt, reply) pairs; inside the block every request sees the adapter.

        `config` is a `TrainConfig`. The loss covers the reply tokens only; the same seed gives
        the same adapter; a killed run resumes from its last checkpoint. The adapter is saved
        unmerged as artifact `name` and removed on exit, so base weights never change and the
        next task sees the base model. Yields a `FineTuneResult` (`.report.losses`, ...).
        """
        from harness.engine import train

        checkpoints = self.checkpoint_dir / name if self.checkpoint_dir is not None else None
        with self._timed("finetune"):
            result = train.finetune_lora(
                self.model.hf, self.model.tokenizer, examples, config, checkpoints, progress=self.progress
            )
        self.model.tokens_processed += result.report.tokens
        try:
            if self.artifacts_dir is not None:
                train.save_adapter(result.model, self._artifact_path(name))
            yield result
        finally:
            train.unload_adapter(result.model)

    @contextlib.contextmanager
    def adapter(self, folder: Path) -> Iterator[Any]:
        """A saved LoRA adapter attached for the block (evaluate a fine-tune without training), removed on exit."""
        from harness.engine import train

        peft_model = train.load_adapter(self.model.hf, Path(folder))
        try:
            yield peft_model
        finally:
            train.unload_adapter(peft_model)

    def cache_path(self, kind: str, key: dict[str, Any]) -> Path | None:
        """A folder for a reusable product (`kind`, e.g. "sae") named by a digest of everything that made it.

        Put the model's fingerprint, the site, the config and the data's digest in `key`: a
        change in any of them gives another folder, never a stale reuse. None without a cache.
        """
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
        return self.cache_dir / kind / digest

    @contextlib.contextmanager
    def dropout(self, p: float) -> Iterator[int]:
        """Dropout on at rate `p` (Monte Carlo dropout passes), restored on exit, also on an exception.

        Only the model's dropout modules and attention-dropout rates change; norms and the
        rest stay in eval mode. The global random state is forked, so passes inside do not
        change what runs after. Yields the number of dropout sites found (0: the model has none).
        """
        if not 0 <= p < 1:
            raise ValueError(f"dropout rate {p}: use a number in [0, 1)")
        saved: list[tuple[Any, str, Any, bool]] = []
        for module in self.model.hf.modules():
            if isinstance(module, torch.nn.Dropout):
                saved.append((module, "p", module.p, module.training))
                module.p = p
            elif isinstance(getattr(module, "attention_dropout", None), float):
                saved.append((module, "attention_dropout", module.attention_dropout, module.training))
                module.attention_dropout = p
            else:
                continue
            module.training = True  # this module only
        try:
            with torch.random.fork_rng(devices=[]):
                yield len(saved)
        finally:
            for module, attr, value, training in saved:
                setattr(module, attr, value)
                module.training = training

    # Randomness and statistics --------------------------------------------------------

    def rng(self, salt: int = 0) -> np.random.Generator:
        """A generator seeded from the run seed; `salt` separates independent streams."""
        return np.random.default_rng([self.seed, salt])

    def metric(
        self,
        values: Any,
        unit: Sequence | np.ndarray | None = None,
        higher_is_better: bool | None = True,
        statistic: Callable[[np.ndarray], float] = np.mean,
    ) -> Metric:
        """A metric with its 95% bootstrap interval over `values` (one entry or row per example).

        unit: the unit each row belongs to (a problem id, a sentence, a word) when rows are not
        independent; whole units are resampled and `n` counts units. The number of resamples
        is the run's `--bootstrap`.
        """
        return _metric(np.asarray(values), higher_is_better, statistic, seed=self.seed, units=unit, n_boot=self.bootstrap)

    def limited(self, items: Sequence[Any]) -> Sequence[Any]:
        """The first `--limit` items (all without a limit): quick checks on a slice of the data."""
        return items if self.limit is None else items[: self.limit]

    # Artifacts ------------------------------------------------------------------------

    def log_sample(self, record: dict[str, Any]) -> None:
        """Keep one per-example record for samples.jsonl (written only with --log-samples)."""
        if self.log_samples:
            self.samples.append(record)

    @staticmethod
    def figure(**kwargs: Any) -> Any:
        """A matplotlib `Figure` of the object API (no pyplot state, no backend switch), for `save_figure`."""
        from matplotlib.figure import Figure

        return Figure(**kwargs)

    def save_figure(self, fig: Any, name: str) -> Path | None:
        """Save a matplotlib figure as `name` (PNG) in the run's artifacts folder."""
        try:
            if self.artifacts_dir is None:
                return None
            path = self._artifact_path(name)
            fig.savefig(path, dpi=120, bbox_inches="tight", metadata={"Software": None})
            return path
        finally:
            pyplot = sys.modules.get("matplotlib.pyplot")
            if pyplot is not None:  # a figure made through pyplot stays registered there until closed
                pyplot.close(fig)

    def save_json(self, name: str, obj: Any) -> Path | None:
        """Write `obj` as JSON (`name`, e.g. "probe.json") in the run's artifacts folder, atomically."""
        if self.artifacts_dir is None:
            return None
        path = self._artifact_path(name)
        write_atomic(path, json.dumps(obj, indent=1, default=_jsonable) + "\n")
        return path

    def _artifact_path(self, name: str) -> Path:
        if not name or Path(name).name != name or name.startswith("."):
            raise ValueError(f"artifact name {name!r}: use a plain file name such as 'plot.png'")
        if self.artifacts_dir is None:
            raise RuntimeError("this run keeps no artifacts (no artifacts folder): check ctx.artifacts_dir first")
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        if name not in self.artifacts:
            self.artifacts.append(name)
        return self.artifacts_dir / name

    def write_samples(self) -> None:
        """Write the kept per-example records to samples.jsonl (the runner calls this)."""
        if self.samples and self.artifacts_dir is not None:
            text = "".join(json.dumps(record, default=_jsonable) + "\n" for record in self.samples)
            write_atomic(self._artifact_path("samples.jsonl"), text)


def _jsonable(value: Any) -> Any:
    """numpy and torch scalars and arrays as plain JSON values."""
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    return str(value)
