"""Named activation sites, the hooks that reach them, and `collect`.

Site names read like the architecture and are the same for every model:

    resid_pre.L   input of block L (the residual stream before it)
    resid_post.L  output of block L
    attn_out.L    what attention adds to the residual stream in block L
    mlp_out.L     what the MLP adds to the residual stream in block L
    mlp_act.L     MLP neurons after the nonlinearity (input of the down projection)
    linear.L.PATH output units of one linear layer inside block L, PATH its module path in
                  the block (e.g. linear.3.self_attn.q_proj); `linear_sites(model, L)`
                  lists every one (nn.Linear, and GPT-2's Conv1D), in module order
    logits        the model's output logits

The `Layout` of the model says which real module each name is; we hook those modules
and never re-implement the model, so the numbers are the library's own.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence, Union

import torch

from harness.engine import distributed
from harness.engine.batching import Batch, BatchSizer, accepts, check_lengths, encode, make_batches
from harness.engine.layout import resolve
from harness.errors import UsageError

if TYPE_CHECKING:  # the type only: a request module never loads a model, so it need not import the loader
    from harness.engine.models import Model

KINDS = ("resid_pre", "resid_post", "attn_out", "mlp_out", "mlp_act")
SITE = re.compile(r"^(resid_pre|resid_post|attn_out|mlp_out|mlp_act)\.(\d+)$")
LINEAR_SITE = re.compile(r"^linear\.(\d+)\.([A-Za-z_]\w*(?:\.\w+)*)$")

# A position is a token index into the prompt (negative from the end), "last", "all",
# or one such index per prompt (the token of interest moves with the wording).
Position = Union[int, str, Sequence[int]]


class StopForward(Exception):
    """Raised by a hook after the deepest layer a caller needs: the rest of the model is not run."""


@dataclass(frozen=True)
class Site:
    kind: str
    layer: int | None  # None for logits
    path: str | None = None  # module path inside the block, for kind "linear"

    @property
    def block(self) -> int:
        """The block this site is in: every site but logits has one."""
        if self.layer is None:
            raise UsageError("the logits site is after the last block, not in one")
        return self.layer

    @property
    def name(self) -> str:
        if self.kind == "logits":
            return "logits"
        return f"linear.{self.layer}.{self.path}" if self.kind == "linear" else f"{self.kind}.{self.layer}"


def is_linear(module: Any) -> bool:
    """A layer whose output units are a linear map of its input: nn.Linear (quantised ones too) or GPT-2's Conv1D."""
    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"


def out_units(module: Any) -> int:
    """Output width of a linear layer (Conv1D calls it nf)."""
    return int(getattr(module, "out_features", None) or module.nf)


def linear_sites(model: Model, layer: int) -> list[str]:
    """Every `linear.L.PATH` site of block `layer`, in module order (attention's projections, then the MLP's)."""
    return [f"linear.{layer}.{path}" for path, m in model.blocks[layer].named_modules() if path and is_linear(m)]


def n_linear_units(model: Model) -> int:
    """Output units of every linear layer in the model's blocks: the size of the "every neuron" set."""
    return sum(out_units(m) for m in model.blocks.modules() if is_linear(m))


def parse_site(name: str, n_layers: int) -> Site:
    """Parse a site name, checking the layer against the model's depth."""
    if name == "logits":
        return Site("logits", None)
    m, linear = SITE.match(name), LINEAR_SITE.match(name)
    if m:
        kind, layer, path = m.group(1), int(m.group(2)), None
    elif linear:
        kind, layer, path = "linear", int(linear.group(1)), linear.group(2)
    else:
        raise UsageError(f"unknown site '{name}': use one of {', '.join(k + '.L' for k in KINDS)}, linear.L.PATH or logits")
    if layer >= n_layers:
        raise UsageError(f"site {name} is past the model's depth ({n_layers} layers, 0..{n_layers - 1}): pick a smaller layer")
    return Site(kind, layer, path)


def _linear_module(model: Model, site: Site) -> Any:
    """The linear layer a `linear.L.PATH` site names, or a one-line error listing the block's linear layers."""
    block = model.blocks[site.block]
    try:
        module = block.get_submodule(site.path or "")
    except AttributeError:
        module = None
    if module is None or not is_linear(module):
        names = ", ".join(linear_sites(model, site.block)) or "none"
        raise UsageError(f"site {site.name} is not a linear layer of block {site.layer}: use one of {names}")
    return module


def first_tensor(x: Any) -> torch.Tensor:
    return x[0] if isinstance(x, (tuple, list)) else x


def replace_first(x: Any, new: torch.Tensor) -> Any:
    if isinstance(x, tuple):
        return (new, *x[1:])
    if isinstance(x, list):
        return [new, *x[1:]]
    return new


def hook_site(model: Model, site: Site, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> torch.utils.hooks.RemovableHandle:
    """Call fn(activation) at `site` on every forward; a returned tensor replaces the activation.

    Sites that are a module's input use a forward pre-hook, the others a forward hook;
    tuples returned by blocks and attention modules keep their other elements.
    """
    if site.kind == "logits":
        raise UsageError(
            "the logits site can be collected but not hooked or edited: edit resid_post of the last layer "
            "(before the final norm) or change the scores after scoring"
        )
    layout = model.layout
    block = model.blocks[site.block]
    if site.kind == "linear" or (layout.mlp_flat and site.kind in ("mlp_act", "mlp_out")):
        fn = _unflatten(model, fn)  # a linear layer may run on a flattened view (OPT's MLP)
    if site.kind in ("resid_pre", "mlp_act"):
        module = block if site.kind == "resid_pre" else resolve(block, layout.mlp_down)

        def pre_hook(mod: Any, args: tuple, kwargs: dict) -> Any:
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})

        return module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    module = {
        "resid_post": block,
        "attn_out": resolve(block, layout.attn_out) if site.kind == "attn_out" else None,
        "mlp_out": resolve(block, layout.mlp_out) if site.kind == "mlp_out" else None,
        "linear": _linear_module(model, site) if site.kind == "linear" else None,
    }[site.kind]

    def post_hook(mod: Any, args: tuple, output: Any) -> Any:
        new = fn(first_tensor(output))
        return None if new is None else replace_first(output, new)

    return module.register_forward_hook(post_hook)


def _unflatten(model: Model, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Callable[[torch.Tensor], torch.Tensor | None]:
    """OPT runs its MLP on a (batch * seq, width) view: show hooks (batch, seq, width) like everywhere else."""

    def wrapped(act: torch.Tensor) -> torch.Tensor | None:
        if act.dim() != 2:
            return fn(act)
        rows = model.current_batch.input_ids.shape[0]
        new = fn(act.view(rows, -1, act.shape[-1]))
        return None if new is None else new.reshape(act.shape)

    return wrapped


@contextlib.contextmanager
def hooks(handles: Sequence[torch.utils.hooks.RemovableHandle]) -> Iterator[None]:
    """Remove every hook on exit, also on an exception: a leftover hook silently changes later runs."""
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def in_flight(model: Model, batch: Batch, tokens: int | None = None) -> Iterator[None]:
    """Make `batch` visible to intervention hooks while the model runs on it, and count its tokens.

    Every forward pass or generate call of the harness runs inside this, so edits can map
    prompt indices and token positions onto the padded batch.
    """
    model.current_batch = batch
    model.tokens_processed += int(batch.lengths.sum()) if tokens is None else tokens
    try:
        yield
    finally:
        model.current_batch = None


def forward(model: Model, batch: Batch, **kwargs: Any) -> Any:
    """One forward pass of a batch, with the batch visible to intervention hooks."""
    with in_flight(model, batch):
        inputs = batch.model_inputs(model.input_device, accepts(model.hf.forward, "position_ids"))
        return model.hf(**inputs, use_cache=False, **kwargs)


class SamePosition:
    """The same token index for every prompt, indexable like a per-prompt list."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __getitem__(self, i: int) -> int:
        return self.index


def positions_for(position: Position, n: int | None = None) -> Sequence[int] | SamePosition | None:
    """Normalise a Position into something indexed by prompt; None means every token."""
    if isinstance(position, str):
        if position == "all":
            return None
        if position == "last":
            return SamePosition(-1)
        raise UsageError(f"unknown position '{position}': use an index, 'last' or 'all'")
    if isinstance(position, int):
        return SamePosition(position)
    if n is not None and len(position) != n:
        raise ValueError(f"{len(position)} positions for {n} prompts")
    return [int(p) for p in position]


def _stop_hook(model: Model, parsed: Sequence[Site]) -> list[torch.utils.hooks.RemovableHandle]:
    """A hook that ends the forward pass right after the deepest site asked for (none when logits are asked)."""
    if any(s.kind == "logits" for s in parsed):
        return []
    deepest_layer = max(s.block for s in parsed)
    deepest = [s for s in parsed if s.block == deepest_layer]
    block = model.blocks[deepest_layer]

    def stop(*_: Any) -> None:
        raise StopForward

    if all(s.kind == "resid_pre" for s in deepest):
        return [block.register_forward_pre_hook(lambda *a: stop())]
    return [block.register_forward_hook(lambda *a: stop())]


def _run_stopping(model: Model, batch: Batch) -> Any:
    """Forward a batch; None when a stop hook ended it early (everything asked for is captured by then)."""
    try:
        return forward(model, batch)
    except StopForward:
        return None


def masked_mean(act: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each row's real tokens: act (batch, seq, d), mask (batch, seq) with 1 on real tokens."""
    m = mask.to(device=act.device, dtype=torch.float32)
    return torch.einsum("bt,btd->bd", m, act.float()) / m.sum(1, keepdim=True).clamp(min=1.0)


@torch.no_grad()
def collect(
    model: Model,
    prompts: Sequence[str],
    sites: Sequence[str],
    positions: Position = "last",
    batch_size: int | str | BatchSizer = "auto",
    progress: Callable[[Any], Any] | None = None,
    reduce: str | None = None,
) -> dict[str, Any]:
    """Activations at `sites` for each prompt, at exactly the `positions` asked.

    Returns {site: tensor (n_prompts, d)} in prompt order (float32, CPU); with
    positions="all", {site: [tensor (len_i, d) per prompt]}. reduce="mean" (with
    positions="all") averages over each prompt's real tokens inside the hook and returns
    {site: tensor (n_prompts, d)}: token activations are never held, so memory does not
    grow with the prompts' length. The forward pass stops after the deepest layer asked
    for, unless `logits` is asked.
    """
    if reduce not in (None, "mean"):
        raise ValueError(f"reduce={reduce!r}: use None or 'mean'")
    if reduce == "mean" and positions != "all":
        raise ValueError("reduce='mean' averages over every real token: pass positions='all'")
    if not prompts:
        raise ValueError("collect needs at least one prompt")
    parsed = [parse_site(s, model.n_layers) for s in sites]
    per_prompt = positions_for(positions, len(prompts))
    token_ids = encode(model.tokenizer, prompts)
    check_lengths(model.hf, token_ids)
    collection = _Collection(model, parsed, token_ids, per_prompt, reduce)
    handles = [hook_site(model, site, collection.taker(site)) for site in parsed if site.kind != "logits"]
    with hooks(handles + _stop_hook(model, parsed)):
        BatchSizer.of(batch_size, model.input_device).run(len(prompts), lambda size: collection.run(size, progress))
    return collection.result()


class _Collection:
    """One `collect` call's rows: the hooks hand each batch's activations to `take`, which files them by prompt.

    With one row per prompt (a position, or reduce="mean") rows land in a table allocated once
    (n, d), so the peak is the result plus a batch; with every position, each prompt keeps a
    compact (len_i, d) copy without its padding.
    """

    def __init__(
        self,
        model: Model,
        sites: Sequence[Site],
        token_ids: list[list[int]],
        per_prompt: Sequence[int] | SamePosition | None,
        reduce: str | None,
    ) -> None:
        self.model, self.sites, self.token_ids = model, sites, token_ids
        self.per_prompt, self.reduce = per_prompt, reduce
        self.n = len(token_ids)
        self.one_row_each = reduce == "mean" or per_prompt is not None
        self.tables: dict[str, torch.Tensor] = {}
        self.ragged: dict[str, list[torch.Tensor | None]] = {} if self.one_row_each else {s.name: [None] * self.n for s in sites}
        self.filled: list[int] = []  # prompts this rank computed (all of them in one process)
        self.batch: Batch | None = None  # the batch in flight

    def taker(self, site: Site) -> Callable[[torch.Tensor], None]:
        return lambda act: self.take(site, act)

    def take(self, site: Site, act: torch.Tensor) -> None:
        """One host transfer per batch."""
        batch = self.batch
        assert batch is not None, "a hook fired outside collect's batches"
        act = act.detach()
        if not self.one_row_each:
            host = act.float().cpu()
            for r, i in enumerate(batch.indices):
                self.ragged[site.name][i] = host[r, batch.pad[r] :].clone()  # a compact copy: no padding kept alive
            return
        if self.reduce == "mean":
            rows = masked_mean(act, batch.attention_mask)
        else:
            assert self.per_prompt is not None
            rows = act[torch.arange(len(batch.indices)), batch.columns(self.per_prompt).to(act.device)]
        rows = rows.float().cpu()
        if site.name not in self.tables:
            self.tables[site.name] = torch.empty((self.n, *rows.shape[1:]))
        self.tables[site.name][torch.as_tensor(batch.indices)] = rows

    def run(self, size: int, progress: Callable[[Any], Any] | None) -> Iterator[None]:
        """This rank's batches of `size` prompts, one yield per batch (the sizer halves `size` on out-of-memory)."""
        self.filled.clear()
        batches = distributed.mine(make_batches(self.token_ids, size, self.model.tokenizer.pad_token_id))
        wants_logits = any(s.kind == "logits" for s in self.sites)
        for _, batch in progress(batches) if progress else batches:
            self.batch = batch
            result = _run_stopping(self.model, batch)
            if result is not None and wants_logits:
                self.take(Site("logits", None), result.logits)
            self.filled.extend(batch.indices)
            yield None
        self.batch = None

    def result(self) -> dict[str, Any]:
        """{site: rows}, gathered from every rank under data parallelism (None: no batch ran on this rank)."""
        out: dict[str, Any] = {s.name: self.tables.get(s.name) for s in self.sites} if self.one_row_each else dict(self.ragged)
        if distributed.world_size() > 1:
            merged = distributed.gather_rows({i: {name: rows[i] for name, rows in out.items()} for i in self.filled}, self.n)
            out = {name: [row[name] for row in merged] for name in out}
            if self.one_row_each:
                out = {name: torch.stack(rows) for name, rows in out.items()}
        return out


@torch.no_grad()
def stream(
    model: Model,
    texts: Iterable[str],
    site: str,
    max_tokens: int | None = None,
    batch_size: int | str | BatchSizer = "auto",
    texts_per_chunk: int = 256,
) -> Iterator[torch.Tensor]:
    """Token activations of a corpus at one site, a batch at a time: (n_real_tokens, d) float32 on CPU.

    For training on more tokens than fit in memory (a sparse autoencoder): `texts` may be a
    generator, read `texts_per_chunk` at a time; each text is cut to `max_tokens` tokens;
    padding, special tokens (BOS) and each text's first position are dropped (with no BOS,
    as on GPT-2, the first token is the attention sink, whose norm is many times any other's,
    and SAELens-style training leaves it out); the forward pass stops at the site's
    layer. Within a chunk, texts run longest first (batched by length), so the tokens of a
    batch are not in corpus order; memory holds one chunk's activations at most. Under data
    parallelism each rank runs its share of a chunk's batches and every rank receives them all,
    in the order one process yields them.
    """
    parsed = parse_site(site, model.n_layers)
    if parsed.kind == "logits":
        raise UsageError("stream reads one activation site (resid_post.L, mlp_act.L, ...), not logits")
    tok = model.tokenizer
    sizer = BatchSizer.of(batch_size, model.input_device)
    iterator = iter(texts)
    while True:
        texts_now = [t for _, t in zip(range(texts_per_chunk), iterator)]
        if not texts_now:
            return
        enc = tok(
            texts_now,
            add_special_tokens=True,
            return_special_tokens_mask=True,
            truncation=max_tokens is not None,
            max_length=max_tokens,
        )
        chunk = _StreamChunk(model, [list(x) for x in enc["input_ids"]], [list(x) for x in enc["special_tokens_mask"]])
        check_lengths(model.hf, chunk.ids)
        with hooks([hook_site(model, parsed, chunk.take)] + _stop_hook(model, [parsed])):  # off while the caller trains
            sizer.run(len(chunk.ids), chunk.run)
        yield from (p for p in chunk.gathered() if len(p))


class _StreamChunk:
    """One chunk of `stream`'s texts: each batch's activations at its real tokens, by batch index."""

    def __init__(self, model: Model, ids: list[list[int]], special: list[list[int]]) -> None:
        self.model, self.ids, self.special = model, ids, special
        self.pending: dict[int, torch.Tensor] = {}
        self.n_batches = 0
        self.keep = torch.zeros(0, dtype=torch.bool)  # the batch in flight's real tokens
        self.captured: list[torch.Tensor] = []

    def take(self, act: torch.Tensor) -> None:
        self.captured.append(act.detach().float().cpu()[self.keep])  # one host transfer; row by row, in token order

    def real_tokens(self, batch: Batch) -> torch.Tensor:
        """Padding, special tokens and each text's first position dropped."""
        keep = torch.zeros(batch.input_ids.shape, dtype=torch.bool)
        for r, i in enumerate(batch.indices):
            real = torch.tensor([s == 0 for s in self.special[i]], dtype=torch.bool)
            real[0] = False  # the first position, BOS or not, is the attention sink: a high-norm outlier
            keep[r, int(batch.pad[r]) :] = real
        return keep

    def run(self, size: int) -> Iterator[None]:
        self.pending.clear()
        batches = make_batches(self.ids, size, self.model.tokenizer.pad_token_id)
        self.n_batches = len(batches)
        for index, batch in distributed.mine(batches):  # data parallel: this rank's batches only
            self.keep = self.real_tokens(batch)
            self.captured.clear()
            _run_stopping(self.model, batch)
            self.pending[index] = torch.cat(self.captured)
            yield None

    def gathered(self) -> list[torch.Tensor]:
        """Every batch's activations, in order; under data parallelism every rank receives them all."""
        return distributed.gather_rows(self.pending, self.n_batches)
