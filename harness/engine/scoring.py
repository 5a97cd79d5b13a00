"""Next-token scoring and continuation log-likelihoods, batched by length.

Logits are computed only at the last position (`logits_to_keep=1`): Gemma's
262k-token unembedding over every position would cost most of the time and memory.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, Union, cast

import numpy as np
import torch

from harness.engine import distributed
from harness.engine.batching import Batch, BatchSizer, accepts, check_lengths, encode, make_batches
from harness.engine.generation import generate as _generate
from harness.engine.layout import resolve
from harness.engine.lens import softcap
from harness.engine.sites import StopForward, forward, in_flight
from harness.engine.tokens import continuation_tokens

if TYPE_CHECKING:  # the type only: a request module never loads a model, so it need not import the loader
    from harness.engine.models import Model


@dataclass
class Scores:
    """Next-token scores after each prompt, in prompt order."""

    logits: torch.Tensor  # (n, k) logits of the k target tokens
    logprobs: torch.Tensor | None  # (n, k) full-vocabulary log-probabilities of the targets (None: full_vocab=False)
    top_token: torch.Tensor | None  # (n,) argmax over the whole vocabulary (None: full_vocab=False)


# Prefix reuse pays when a prefix serves enough rows to batch their suffixes widely and saves
# enough tokens; below these, plain length-sorted batches are faster (benchmarks/bench_engine.py).
MIN_ROWS_PER_PREFIX = 8
# Rows per full-vocabulary unembedding. Its |V| x d weight (Gemma 3: 262k x 640, 670 MB in float32) is
# read from memory once per matmul, so score keeps each batch's last hidden states and unembeds them
# this many at a time, not once per batch of 16 (gemma3-270m, 128 prompts: 4.8 s of 16.7 s went there).
HEAD_ROWS = 256
DEFERRED_HEAD_MIN_BYTES = 32 * 2**20  # a smaller unembedding costs little to read per batch: run the model's own
MAX_TOKEN_SHARE_WITH_REUSE = 0.7


def reuse_pays(token_ids: Sequence[Sequence[int]], prefix_lengths: Sequence[int]) -> bool:
    """Whether computing each distinct prefix once beats running every prompt whole."""
    n_groups, with_reuse = reuse_cost(token_ids, prefix_lengths)
    whole = sum(len(ids) for ids in token_ids)
    return len(token_ids) / n_groups >= MIN_ROWS_PER_PREFIX and with_reuse <= MAX_TOKEN_SHARE_WITH_REUSE * whole


def target_logits(model: Model, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Logits of the target tokens only, from the input of the unembedding (final norm applied).

    The unembedding's rows of the targets, its bias if any, then the architecture's final
    softcap: the same numbers as the full logits at those tokens, for k instead of |V| rows.
    """
    head = resolve(model.hf, model.layout.unembed)
    full_weight = cast(torch.Tensor, head.weight)
    weight = full_weight[target.to(full_weight.device)]
    bias = cast(torch.Tensor, head.bias)[target.to(full_weight.device)] if getattr(head, "bias", None) is not None else None
    return softcap(model, torch.nn.functional.linear(hidden.to(weight.dtype), weight, bias).float())


def unembedding_bytes(model: Model) -> int:
    weight = cast(torch.Tensor, resolve(model.hf, model.layout.unembed).weight)
    return weight.numel() * weight.element_size()


def full_logits(model: Model, hidden: torch.Tensor) -> torch.Tensor:
    """Float32 logits over the whole vocabulary from inputs of the unembedding: the module itself, then the softcap."""
    head = resolve(model.hf, model.layout.unembed)
    return softcap(model, head(hidden).float())


class _HeadInput:
    """A pre-hook on the unembedding that keeps its input and stops the pass: no |V|-wide matmul runs."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.hidden: torch.Tensor | None = None

    def __enter__(self) -> "_HeadInput":
        head = resolve(self.model.hf, self.model.layout.unembed)
        self.handle = head.register_forward_pre_hook(self._capture)
        return self

    def _capture(self, module: Any, args: tuple) -> None:
        self.hidden = args[0][:, -1]
        raise StopForward

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()

    def run(self, fn: Callable[[], Any]) -> torch.Tensor:
        """Last-position input of the unembedding for one forward `fn`."""
        try:
            fn()
        except StopForward:
            if self.hidden is not None:
                return self.hidden
        raise RuntimeError("the unembedding did not run")


@torch.no_grad()
def score(
    model: Model,
    prompts: Sequence[str],
    targets: Sequence[int],
    batch_size: int | str | BatchSizer = "auto",
    progress: Callable[[Any], Any] | None = None,
    prefix_lengths: Sequence[int] | None = None,
    full_vocab: bool = True,
) -> Scores:
    """Score target tokens as the next token after each prompt (interventions in force apply).

    prefix_lengths: for patching experiments that run one prompt many times with different
    edits. Tokens [0, prefix_lengths[i]) of prompt i are computed once per distinct prefix and
    their keys and values reused; only the rest runs per prompt. Valid only when every edit
    in force acts at or after the prefix (checked), which is where an edit can change anything.
    Reuse is skipped when it would not pay (`reuse_pays`): the scores are the same either way.
    full_vocab=False: only the targets' logits are computed (their rows of the unembedding),
    and `logprobs` and `top_token` are None; for patching runs whose metrics read logits alone.
    """
    token_ids = encode(model.tokenizer, prompts)
    check_lengths(model.hf, token_ids)
    target = torch.as_tensor(list(targets), dtype=torch.long)
    n = len(prompts)
    if prefix_lengths is not None:
        for i, ids in enumerate(token_ids):
            if not 0 < prefix_lengths[i] < len(ids):
                raise ValueError(f"prefix length {prefix_lengths[i]} leaves no token of prompt {i} to run")
        if not reuse_pays(token_ids, prefix_lengths) or not window_allows_reuse(model, token_ids):
            prefix_lengths = None

    request = _NextTokenScores(model, token_ids, target, full_vocab, progress, prefix_lengths)
    BatchSizer.of(batch_size, model.input_device).run(n, request.run if prefix_lengths is None else request.run_after_prefixes)
    return request.result()


class _NextTokenScores:
    """One `score` call: each batch's last position, filed by prompt.

    With a large unembedding (`defer`) a batch keeps only its last inputs of the unembedding,
    which `result` unembeds `HEAD_ROWS` at a time; with full_vocab=False only the targets'
    rows of the unembedding run.
    """

    def __init__(
        self,
        model: Model,
        token_ids: list[list[int]],
        target: torch.Tensor,
        full_vocab: bool,
        progress: Callable[[Any], Any] | None,
        prefix_lengths: Sequence[int] | None,
    ) -> None:
        self.model, self.token_ids, self.target, self.full_vocab = model, token_ids, target, full_vocab
        self.progress, self.prefix_lengths = progress, prefix_lengths
        self.n, k = len(token_ids), len(target)
        self.logits = torch.empty(self.n, k)
        self.logprobs = torch.empty(self.n, k) if full_vocab else None
        self.top_token = torch.empty(self.n, dtype=torch.long) if full_vocab else None
        self.keep = {"logits_to_keep": 1} if accepts(model.hf.forward, "logits_to_keep") else {}
        self.defer = full_vocab and unembedding_bytes(model) >= DEFERRED_HEAD_MIN_BYTES
        self.filled: list[int] = []  # rows this rank computed (all of them in one process)
        self.hidden: dict[int, torch.Tensor] = {}  # deferred: row -> last input of the unembedding

    def record(self, indices: list[int], last: torch.Tensor) -> None:
        self.filled.extend(indices)
        if self.defer:
            self.hidden.update(zip(indices, last.clone()))  # a compact copy: never keep a whole batch alive
        elif self.full_vocab:
            self.record_full(indices, last.float())
        else:
            self.logits[torch.as_tensor(indices)] = last.float().cpu()

    def record_full(self, indices: list[int], logits: torch.Tensor) -> None:
        assert self.logprobs is not None and self.top_token is not None
        idx, on = torch.as_tensor(indices), self.target.to(logits.device)
        self.logits[idx] = logits[:, on].cpu()
        self.logprobs[idx] = logits.log_softmax(-1)[:, on].cpu()
        self.top_token[idx] = logits.argmax(-1).cpu()

    def last_logits(self, fn: Callable[[], Any]) -> torch.Tensor:
        """Full last-position logits, or (deferred) the unembedding's input, or the targets' logits alone."""
        if self.full_vocab and not self.defer:
            return fn().logits[:, -1]
        with _HeadInput(self.model) as head:
            last = head.run(fn)
        return last if self.defer else target_logits(self.model, last, self.target)

    def run(self, size: int) -> Iterator[None]:
        """This rank's length-sorted batches of `size` prompts, one yield each (the sizer halves on out-of-memory)."""
        self.filled.clear()
        self.hidden.clear()
        model = self.model
        batches = distributed.mine(make_batches(self.token_ids, size, model.tokenizer.pad_token_id))
        for _, batch in self.progress(batches) if self.progress else batches:
            self.record(batch.indices, self.last_logits(lambda: forward(model, batch, **self.keep)))
            yield None

    def run_after_prefixes(self, size: int) -> Iterator[None]:
        """Each distinct prefix once, then its rows' suffixes `size` at a time on a copy of its cache."""
        assert self.prefix_lengths is not None
        self.filled.clear()
        self.hidden.clear()
        model, pad = self.model, self.model.tokenizer.pad_token_id
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, ids in enumerate(self.token_ids):
            groups.setdefault(tuple(ids[: self.prefix_lengths[i]]), []).append(i)
        items = [item for _, item in distributed.mine(list(groups.items()))]
        for prefix, rows in self.progress(items) if self.progress else items:
            cache = _prefix_cache(model, prefix, self.keep)
            for start in range(0, len(rows), size):
                chunk = rows[start : start + size]
                suffix_batch = make_batches([self.token_ids[i][len(prefix) :] for i in chunk], len(chunk), pad)[0]
                rows_run = [chunk[r] for r in suffix_batch.indices]
                self.record(
                    rows_run,
                    self.last_logits(lambda: _forward_after_prefix(model, cache, prefix, chunk, suffix_batch, self.keep)),
                )
            yield None

    def result(self) -> Scores:
        """The deferred rows unembedded, then every rank's rows gathered under data parallelism."""
        if self.defer:
            rows = sorted(self.hidden)
            for start in range(0, len(rows), HEAD_ROWS):
                chunk = rows[start : start + HEAD_ROWS]
                self.record_full(chunk, full_logits(self.model, torch.stack([self.hidden[i] for i in chunk])))
            self.hidden.clear()
        out = Scores(logits=self.logits, logprobs=self.logprobs, top_token=self.top_token)
        if distributed.world_size() > 1:
            rows_of = distributed.gather_rows(
                {
                    i: (
                        out.logits[i],
                        None if out.logprobs is None else out.logprobs[i],
                        None if out.top_token is None else out.top_token[i],
                    )
                    for i in self.filled
                },
                self.n,
            )
            out.logits = torch.stack([r[0] for r in rows_of])
            if self.full_vocab:
                out.logprobs, out.top_token = torch.stack([r[1] for r in rows_of]), torch.stack([r[2] for r in rows_of])
        return out


def _prefix_cache(model: Model, prefix: tuple[int, ...], keep: dict) -> Any:
    """Keys and values of a shared prefix, computed with edits suspended (none may act there)."""
    ids = torch.tensor([prefix], device=model.input_device)
    model.edits_suspended = True
    try:
        model.tokens_processed += len(prefix)
        out = model.hf(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, **keep)
        return out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    finally:
        model.edits_suspended = False


def _forward_after_prefix(model: Model, cache: Any, prefix: tuple[int, ...], chunk: list[int], suffix: Batch, keep: dict) -> Any:
    """Run left-padded suffixes on a copy of the prefix cache; the model's output, rows in suffix-batch order."""
    p, rows = len(prefix), len(chunk)
    cache = copy.deepcopy(cache)
    cache.batch_repeat_interleave(rows)
    device = model.input_device
    mask = torch.cat([torch.ones(rows, p, dtype=torch.long), suffix.attention_mask], 1)
    cache_arg = "cache" if accepts(model.hf.forward, "cache") else "past_key_values"  # renamed in transformers 5
    inputs = {"input_ids": suffix.input_ids.to(device), "attention_mask": mask.to(device), cache_arg: cache, "use_cache": True}
    if accepts(model.hf.forward, "position_ids"):
        inputs["position_ids"] = (p + suffix.position_ids).to(device)
    # Positions of edits count from the start of the prompt: real token j of a row sits at
    # column (pad - p) + j of the suffix batch.
    whole = Batch(
        indices=[chunk[r] for r in suffix.indices],
        input_ids=suffix.input_ids,
        attention_mask=suffix.attention_mask,
        lengths=suffix.lengths + p,
    )
    with in_flight(model, whole, tokens=int(suffix.lengths.sum())):
        return model.hf(**inputs, **keep)


@dataclass
class Loglikelihoods:
    """Summed log-probability of each continuation given its context, in request order.

    lm-evaluation-harness's `loglikelihood` contract: `logprob[i]` = sum over the continuation's
    tokens of log P(token | context, earlier continuation tokens); `is_greedy[i]` says whether
    greedy decoding would have produced exactly those tokens.
    """

    logprob: np.ndarray  # (n,) float64
    is_greedy: np.ndarray  # (n,) bool
    n_tokens: np.ndarray  # (n,) tokens in each continuation (for length-normalised scores)


Text = Union[str, Sequence[int]]


def request_tokens(tokenizer: Any, contexts: Sequence[Text], continuations: Sequence[Text]) -> tuple[list[list[int]], list[int]]:
    """(context + continuation token ids, continuation length) per request.

    Text contexts get the tokenizer's special tokens (BOS); a text continuation is tokenised
    as it reads after its context (`harness.engine.tokens.continuation_tokens`). Token-id lists are
    used as they are, for callers that built the exact tokens themselves.
    """
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts for {len(continuations)} continuations")
    sequences, lengths = [], []
    for context, cont in zip(contexts, continuations):
        if isinstance(context, str) and isinstance(cont, str):
            ctx_ids = tokenizer(context, add_special_tokens=True)["input_ids"]
            cont_ids = continuation_tokens(tokenizer, context, cont)
        else:
            ctx_ids = tokenizer(context, add_special_tokens=True)["input_ids"] if isinstance(context, str) else list(context)
            cont_ids = tokenizer(cont, add_special_tokens=False)["input_ids"] if isinstance(cont, str) else list(cont)
        if not ctx_ids or not cont_ids:
            raise ValueError("every loglikelihood request needs a non-empty context (BOS at least) and continuation")
        sequences.append(list(ctx_ids) + list(cont_ids))
        lengths.append(len(cont_ids))
    return sequences, lengths


def window_allows_reuse(model: Model, token_ids: Sequence[Sequence[int]]) -> bool:
    """Whether rows with padding between a reused prefix and their suffix still see what whole rows see.

    A sliding-window layer (Gemma 2/3, Mistral) counts cache slots, pads included: once a row
    is longer than the window, pads in the middle would push real tokens out of it.
    """
    config = model.hf.config.get_text_config() if hasattr(model.hf.config, "get_text_config") else model.hf.config
    window = getattr(config, "sliding_window", None)
    return window is None or max(len(ids) for ids in token_ids) <= int(window)


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix every sequence starts with."""
    first = sequences[0]
    n = min(len(x) for x in sequences)
    for j in range(n):
        if any(x[j] != first[j] for x in sequences):
            return j
    return n


def reuse_cost(token_ids: Sequence[Sequence[int]], prefix_lengths: Sequence[int]) -> tuple[int, int]:
    """(distinct prefixes, tokens run) when each distinct prefix is computed once and only the rest runs per row."""
    groups = {tuple(ids[:p]) for ids, p in zip(token_ids, prefix_lengths)}
    return len(groups), sum(len(g) for g in groups) + sum(len(ids) - p for ids, p in zip(token_ids, prefix_lengths))


def shared_context_plan(sequences: Sequence[Sequence[int]], cont_len: Sequence[int]) -> list[int] | None:
    """Prefix length per request for `loglikelihood` to compute once, or None when plain batches are faster.

    Two plans, the cheaper that pays (`reuse_pays`) wins: the prefix all requests share (the
    few-shot demonstrations of a multiple-choice task: one prefix, wide batches), or each
    request's own context (its answer candidates then share one pass over it). A prefix always
    stops one token before the continuation, whose first token that position predicts.
    """
    if len(sequences) < 2:
        return None
    context_end = [len(ids) - c - 1 for ids, c in zip(sequences, cont_len)]
    common = min(common_prefix_length(sequences), min(context_end))
    plans = [[common] * len(sequences)] if common >= 1 else []
    if min(context_end) >= 1:
        plans.append(context_end)
    paying = [plan for plan in plans if reuse_pays(sequences, plan)]
    return min(paying, key=lambda plan: reuse_cost(sequences, plan)[1]) if paying else None


@torch.no_grad()
def loglikelihood(
    model: Model,
    contexts: Sequence[Text],
    continuations: Sequence[Text],
    batch_size: int | str | BatchSizer = "auto",
    progress: Callable[[Any], Any] | None = None,
    reuse: bool = True,
) -> Loglikelihoods:
    """Log-probability of each continuation after its context (interventions in force apply).

    Left padding puts every continuation at the end of its row, so the model computes logits
    only for the last (longest continuation + 1) positions (`logits_to_keep`), never for the
    context: with Gemma's 262k-token vocabulary that is most of the cost. A context shared by
    many requests (few-shot demonstrations, a prompt with several answer candidates) is run
    once and its keys and values reused, when that pays (`shared_context_plan`) and nothing
    could make the shared pass differ per row (no edit in force, no dropout, no row longer than
    a sliding attention window): the numbers are those of whole rows up to float rounding.
    """
    sequences, cont_len = request_tokens(model.tokenizer, contexts, continuations)
    check_lengths(model.hf, sequences)
    plan = None
    if reuse and not model.active_edits and not any(m.training for m in model.hf.modules()):
        plan = shared_context_plan(sequences, cont_len) if window_allows_reuse(model, sequences) else None
    request = _ContinuationLogprobs(model, sequences, cont_len, progress, plan)
    BatchSizer.of(batch_size, model.input_device).run(len(sequences), request.run if plan is None else request.run_after_prefixes)
    return request.result()


class _ContinuationLogprobs:
    """One `loglikelihood` call: each batch's continuation log-probabilities, filed by request."""

    def __init__(
        self,
        model: Model,
        sequences: list[list[int]],
        cont_len: list[int],
        progress: Callable[[Any], Any] | None,
        plan: list[int] | None,
    ) -> None:
        self.model, self.sequences, self.cont_len, self.progress, self.plan = model, sequences, cont_len, progress, plan
        self.n = len(sequences)
        self.out = Loglikelihoods(logprob=np.zeros(self.n), is_greedy=np.zeros(self.n, dtype=bool), n_tokens=np.asarray(cont_len))
        self.can_keep = accepts(model.hf.forward, "logits_to_keep")
        self.filled: list[int] = []  # rows this rank computed (all of them in one process)

    def fill(self, rows_run: Sequence[int], logits: torch.Tensor) -> None:
        """Continuation log-probs of left-padded rows whose last positions hold their continuations.

        The whole batch at once, no host synchronisation per row: row r's continuation is the last
        c_r of the `longest` positions before the final one, the positions in front of it are masked out.
        """
        self.filled.extend(rows_run)
        lengths = [self.cont_len[i] for i in rows_run]
        longest = max(lengths)
        x = logits[:, logits.shape[1] - longest - 1 : -1].float()  # (batch, longest, vocab): the predicting positions
        ids = torch.tensor([[0] * (longest - c) + self.sequences[i][-c:] for i, c in zip(rows_run, lengths)], device=x.device)
        real = torch.arange(longest, device=x.device) >= longest - torch.tensor(lengths, device=x.device)[:, None]
        token_logprob = x.gather(-1, ids[..., None])[..., 0] - torch.logsumexp(x, -1)
        # summed in float64 (on the host: not every accelerator has it), so no row depends on its batch's widest
        logprob = token_logprob.masked_fill(~real, 0.0).cpu().double().sum(-1)
        greedy = ((x.argmax(-1) == ids) | ~real).all(-1)
        index = np.asarray(rows_run)
        self.out.logprob[index] = logprob.numpy()
        self.out.is_greedy[index] = greedy.cpu().numpy()

    def keep_for(self, rows: Sequence[int]) -> dict:
        """Logits for the longest continuation of these rows, plus the position that predicts its first token."""
        return {"logits_to_keep": max(self.cont_len[i] for i in rows) + 1} if self.can_keep else {}

    def run(self, size: int) -> Iterator[None]:
        """This rank's length-sorted batches of `size` requests, one yield each (the sizer halves on out-of-memory)."""
        self.filled.clear()
        batches = distributed.mine(make_batches(self.sequences, size, self.model.tokenizer.pad_token_id))
        for _, batch in self.progress(batches) if self.progress else batches:
            self.fill(batch.indices, forward(self.model, batch, **self.keep_for(batch.indices)).logits)
            yield None

    def run_after_prefixes(self, size: int) -> Iterator[None]:
        """Each planned prefix once, then chunks of its rows' suffixes on a copy of its keys and values."""
        plan, sequences = self.plan, self.sequences
        assert plan is not None
        self.filled.clear()
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in sorted(range(self.n), key=lambda i: (-(len(sequences[i]) - plan[i]), i)):  # by suffix length
            groups.setdefault(tuple(sequences[i][: plan[i]]), []).append(i)
        # The unit of work (and of data parallelism) is one chunk of a group's rows.
        chunks = [(prefix, rows[s : s + size]) for prefix, rows in groups.items() for s in range(0, len(rows), size)]
        cached: dict[tuple[int, ...], Any] = {}
        mine = distributed.mine(chunks)
        for _, (prefix, chunk) in self.progress(mine) if self.progress else mine:
            if prefix not in cached:
                cached.clear()  # one prefix's keys and values at a time
                cached[prefix] = _prefix_cache(self.model, prefix, {"logits_to_keep": 1} if self.can_keep else {})
            suffix = make_batches([sequences[i][len(prefix) :] for i in chunk], len(chunk), self.model.tokenizer.pad_token_id)[0]
            rows_run = [chunk[r] for r in suffix.indices]
            self.fill(
                rows_run, _forward_after_prefix(self.model, cached[prefix], prefix, chunk, suffix, self.keep_for(chunk)).logits
            )
            yield None

    def result(self) -> Loglikelihoods:
        """Every rank's rows, gathered under data parallelism."""
        out = self.out
        if distributed.world_size() > 1:
            rows = distributed.gather_rows({i: (out.logprob[i], out.is_greedy[i]) for i in self.filled}, self.n)
            out.logprob = np.array([r[0] for r in rows])
            out.is_greedy = np.array([r[1] for r in rows], dtype=bool)
        return out


# Greedy generation moved to harness.engine.generation (with sampling and stop strings); kept importable here.
generate = _generate
