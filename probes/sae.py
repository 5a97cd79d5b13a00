"""Sparse autoencoders on activations: the SAELens tensor layout, encode/decode, a streamed trainer.

An SAE rewrites an activation x (d_in) as a sparse code z (d_sae >> d_in) and reads it
back with a linear decoder:

    pre   = (x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc         (d_sae)
    z     = f(pre)                                                     (d_sae, mostly zero)
    x_hat = z @ W_dec + b_dec                                          (d_in)

with W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in], the layout
SAELens saves, so its public SAEs load here (file IO: harness/engine/sae_io.py) and ours load
there. Three activations f, one per SAELens architecture:

- standard: relu(pre), trained with an L1 penalty on z;
- jumprelu: relu(pre) * (pre > threshold). SAELens stores threshold = exp(log_threshold),
  so threshold > 0 and this is pre * (pre > threshold); we only load these, not train them;
- topk: the k largest entries of relu(pre), the rest zero; the top-k sets the sparsity, so
  training has no L1 term.

The trainer (`SAETrainer`) follows SAELens' defaults for a ReLU SAE (Bricken et al. 2023,
"Towards Monosemanticity"; Anthropic's April 2024 update for the input scaling):
the loss per token is

    ||x_hat - x||^2  +  l1 * sum_i z_i * ||W_dec[i]||

where x has been multiplied by one scalar s so that the mean ||x|| is sqrt(d_in). That
makes the l1 coefficient (5.0) mean the same thing for every model width and every
layer's activation scale. s is estimated once, on the first batch, and stored. The
decoder rows are renormalised to unit norm after every Adam step, so the L1 term cannot
be shrunk by shrinking z and growing W_dec. b_dec starts at the first batch's mean, so
the encoder starts from centred data.

At the end, `SAETrainer.export()` folds s into the weights, so the exported SAE reads
raw activations: with x' = s x,

    pre = (s x - b_dec) @ W_enc + b_enc = (x - b_dec / s) @ (s W_enc) + b_enc
    x_hat / s = z @ (W_dec / s) + b_dec / s

so (s W_enc, b_enc, W_dec / s, b_dec / s) encodes x exactly as the trained SAE encodes
s x, and decodes back to raw units (SAELens' `fold_activation_norm_scaling_factor`).

Training consumes an iterator of (n_tokens, d_in) batches one at a time and keeps none
of them, so memory does not grow with the corpus. Everything is deterministic for a
seed on CPU, and `state_dict` captures the whole training state (weights, Adam moments,
scale, counters), so an interrupted run resumed from it ends with the same weights.

Pure torch; nothing here reads files or knows about models.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator

import torch

ARCHITECTURES = ("standard", "jumprelu", "topk")
TRAINABLE = ("standard", "topk")
# SAELens' input normalisations that act at inference. "expected_average_only_in" is a
# training-time scale that SAELens (and `SAETrainer.export`) fold into the weights, so at
# inference it is the identity; "constant_norm_rescale" scales each token to norm sqrt(d_in).
NORMALIZATIONS = ("none", "expected_average_only_in", "constant_norm_rescale")


@dataclass
class SAEConfig:
    """What a saved SAE needs besides its tensors; the fields of SAELens' cfg.json we use."""

    d_in: int
    d_sae: int
    architecture: str = "standard"  # standard | jumprelu | topk
    k: int | None = None  # topk only: latents kept per token
    apply_b_dec_to_input: bool = True
    normalize_activations: str = "none"
    site: str | None = None  # our site name, e.g. resid_pre.8
    model_name: str | None = None

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown SAE architecture '{self.architecture}': use one of {', '.join(ARCHITECTURES)}")
        if self.architecture == "topk" and not (self.k and 0 < self.k <= self.d_sae):
            raise ValueError(f"topk SAE needs 0 < k <= d_sae={self.d_sae}, got k={self.k}")
        if self.normalize_activations not in NORMALIZATIONS:
            raise ValueError(
                f"unsupported normalize_activations '{self.normalize_activations}': use one of {', '.join(NORMALIZATIONS)}"
            )


class SAE(torch.nn.Module):
    """The tensors of one SAE and its encode/decode; see the module docstring for the maths."""

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        self.W_enc = torch.nn.Parameter(torch.zeros(cfg.d_in, cfg.d_sae))
        self.b_enc = torch.nn.Parameter(torch.zeros(cfg.d_sae))
        self.W_dec = torch.nn.Parameter(torch.zeros(cfg.d_sae, cfg.d_in))
        self.b_dec = torch.nn.Parameter(torch.zeros(cfg.d_in))
        # A buffer, not a parameter: we never train it, and it travels with state_dict.
        self.register_buffer("threshold", torch.zeros(cfg.d_sae))

    @classmethod
    def initialised(cls, cfg: SAEConfig, seed: int = 0) -> SAE:
        """Random start for training, SAELens' default before 6.0 (the paper's era): decoder
        rows in random directions at unit norm; an independent encoder, uniform in
        +-sqrt(6 / d_sae) (torch's Kaiming uniform for a [d_in, d_sae] matrix). On inputs
        of norm sqrt(d_in) each pre-activation then has standard deviation about
        sqrt(2 / expansion), so the first reconstructions are small rather than a sum of
        d_sae / 2 large terms."""
        sae = cls(cfg)
        g = torch.Generator().manual_seed(seed)
        w_dec = torch.rand(cfg.d_sae, cfg.d_in, generator=g) * 2 - 1
        w_enc = (torch.rand(cfg.d_in, cfg.d_sae, generator=g) * 2 - 1) * math.sqrt(6 / cfg.d_sae)
        with torch.no_grad():
            sae.W_dec.copy_(w_dec / w_dec.norm(dim=1, keepdim=True))
            sae.W_enc.copy_(w_enc)
        return sae

    def normalise_in(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x as the encoder reads it, the per-token scale applied or None): SAELens' input normalisation."""
        if self.cfg.normalize_activations != "constant_norm_rescale":
            return x, None
        coeff = math.sqrt(self.cfg.d_in) / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return x * coeff, coeff

    def _pre(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def _activate(self, pre: torch.Tensor) -> torch.Tensor:
        arch = self.cfg.architecture
        if arch == "standard":
            return torch.relu(pre)
        if arch == "jumprelu":
            return torch.relu(pre) * (pre > self.threshold)
        top = torch.topk(pre, self.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents z (..., d_sae) of activations x (..., d_in)."""
        x = x.to(self.W_enc.dtype)
        return self._activate(self._pre(self.normalise_in(x)[0]))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z @ W_dec + b_dec: the reconstruction in the SAE's input space (after any per-token
        normalisation; `forward` undoes that)."""
        return z @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of x in x's own units."""
        x = x.to(self.W_enc.dtype)
        xn, coeff = self.normalise_in(x)
        x_hat = self.decode(self._activate(self._pre(xn)))
        return x_hat if coeff is None else x_hat / coeff

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors a saved SAE holds, under SAELens' names (threshold only for jumprelu)."""
        out = {name: getattr(self, name).detach() for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
        if self.cfg.architecture == "jumprelu":
            out["threshold"] = self.threshold.detach()
        return out


def top_latent(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of z (n, d_sae): (index of the most active latent, its value, all-zero flag).

    argmax of an all-zero row is index 0 by convention, which means nothing: the flag lets
    a caller count such rows (PS-Eval's code keeps the argmax, 0, so two all-zero contexts read 'same')."""
    values, idx = z.max(dim=-1)
    return idx, values, ~(z != 0).any(dim=-1)


@dataclass
class Reconstruction:
    """How well an SAE reconstructs a set of activations, in the activations' own units."""

    mse: float  # sum over dims of the squared error, mean over tokens
    l0: float  # mean number of non-zero latents per token
    explained_variance: float  # 1 - SSE / (sum of squared deviations from the mean token)
    n_tokens: int


@torch.no_grad()
def reconstruction(sae: SAE, x: torch.Tensor, chunk: int = 4096) -> Reconstruction:
    """MSE, L0 and explained variance of `sae` on activations x (n, d_in), in chunks of rows."""
    x = x.to(sae.W_enc.dtype)
    sse = l0 = 0.0
    for part in torch.split(x, chunk):
        xn, coeff = sae.normalise_in(part)
        z = sae._activate(sae._pre(xn))
        x_hat = sae.decode(z) if coeff is None else sae.decode(z) / coeff
        sse += float((x_hat - part).pow(2).sum())
        l0 += float((z != 0).sum())
    n = len(x)
    sst = float((x - x.mean(0)).pow(2).sum())
    return Reconstruction(sse / n, l0 / n, 1 - sse / sst if sst > 0 else float("nan"), n)


@dataclass
class SAETrainConfig:
    """The trainer's settings; defaults are SAELens' for a ReLU SAE, as the polysemy spec lists them."""

    architecture: str = "standard"  # standard (ReLU + L1) or topk
    expansion: int = 16  # d_sae = expansion * d_in
    k: int = 32  # topk only
    l1: float = 5.0  # standard only, on inputs scaled to mean norm sqrt(d_in)
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    dead_window: int = 1_000_000  # a latent silent for this many tokens counts as dead
    seed: int = 0

    def __post_init__(self) -> None:
        if self.architecture not in TRAINABLE:
            raise ValueError(f"cannot train architecture '{self.architecture}': use one of {', '.join(TRAINABLE)}")


@dataclass
class StepStats:
    """One optimisation step, in training units (inputs scaled by the trainer's scale)."""

    tokens: int  # tokens seen after this step
    loss: float
    mse: float
    l0: float
    explained_variance: float


@dataclass
class TrainSummary:
    tokens: int
    steps: int
    scale: float  # the input scale s (mean ||s x|| = sqrt(d_in) on the first batch)
    mse: float  # means over the last `last` steps, training units
    l0: float
    explained_variance: float
    dead_fraction: float
    last: int = field(default=10)


class SAETrainer:
    """Streamed SAE training: feed (n_tokens, d_in) batches, one Adam step per batch.

    Use `rebatch` to cut a stream of chunks of any size into fixed-size batches. To resume,
    build a trainer with the same d_in and config, `load_state_dict`, and feed the stream
    from batch `trainer.steps` on (e.g. `itertools.islice(batches, trainer.steps, None)`).
    """

    def __init__(
        self, d_in: int, config: SAETrainConfig | None = None, site: str | None = None, device: torch.device | str | None = None
    ):
        """device: where the SAE, its optimizer and each step run (the model's GPU, for a 7B model's
        65k latents: the same steps as on the CPU, which a CPU takes hours over); None: the CPU.
        The SAE is initialised on the CPU and moved, so every device starts from the same weights."""
        self.config = config or SAETrainConfig()
        c = self.config
        cfg = SAEConfig(
            d_in=d_in,
            d_sae=c.expansion * d_in,
            architecture=c.architecture,
            k=c.k if c.architecture == "topk" else None,
            site=site,
        )
        self.device = torch.device(device or "cpu")
        self.sae = SAE.initialised(cfg, seed=c.seed).to(self.device)
        self.optimizer = torch.optim.Adam(self.sae.parameters(), lr=c.lr, betas=c.betas)
        self.scale: float | None = None
        self.tokens = 0
        self.steps = 0
        self.since_fired = torch.zeros(cfg.d_sae, dtype=torch.int64, device=self.device)
        self.history: list[StepStats] = []

    def _start(self, x: torch.Tensor) -> None:
        """Estimate the input scale and centre b_dec, from the first batch."""
        self.scale = math.sqrt(x.shape[1]) / float(x.norm(dim=1).mean().clamp_min(1e-12))
        with torch.no_grad():
            self.sae.b_dec.copy_((x * self.scale).mean(0))

    def step(self, x: torch.Tensor) -> StepStats:
        """One Adam step on the batch x (n_tokens, d_in)."""
        x = x.detach().to(device=self.device, dtype=torch.float32)
        if self.scale is None:
            self._start(x)
        x = x * self.scale
        sae = self.sae
        z = sae._activate(sae._pre(x))
        x_hat = sae.decode(z)
        mse = (x_hat - x).pow(2).sum(-1).mean()
        loss = mse
        if self.config.architecture == "standard":
            loss = mse + self.config.l1 * (z * sae.W_dec.norm(dim=1)).sum(-1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
            fired = (z > 0).any(0)
            self.since_fired += len(x)
            self.since_fired[fired] = 0
            sst = float((x - x.mean(0)).pow(2).sum())
            ev = 1 - float((x_hat - x).pow(2).sum()) / sst if sst > 0 else float("nan")
            l0 = float((z > 0).sum(-1).float().mean())
        self.tokens += len(x)
        self.steps += 1
        stats = StepStats(self.tokens, float(loss.detach()), float(mse.detach()), l0, ev)
        self.history.append(stats)
        return stats

    def fit(self, batches: Iterable[torch.Tensor], max_tokens: int | None = None) -> TrainSummary:
        """Step through `batches` until they run out or `max_tokens` (counted since the start
        of training, across resumes) have been seen. Batches are not kept."""
        for x in batches:
            if max_tokens is not None and self.tokens >= max_tokens:
                break
            self.step(x)
            del x
        return self.summary()

    def dead_fraction(self) -> float:
        """Share of latents that have not fired in the last `dead_window` tokens (or, before
        that many tokens have been seen, not at all)."""
        if self.tokens == 0:
            return float("nan")
        window = min(self.config.dead_window, self.tokens)
        return float((self.since_fired >= window).float().mean())

    def summary(self, last: int = 10) -> TrainSummary:
        recent = self.history[-last:]

        def mean(name: str) -> float:
            return sum(getattr(s, name) for s in recent) / len(recent) if recent else float("nan")

        return TrainSummary(
            self.tokens,
            self.steps,
            self.scale or float("nan"),
            mean("mse"),
            mean("l0"),
            mean("explained_variance"),
            self.dead_fraction(),
            last,
        )

    def export(self) -> tuple[SAE, SAEConfig]:
        """A copy of the SAE with the input scale folded in, reading raw activations."""
        s = self.scale if self.scale is not None else 1.0
        cfg = SAEConfig(**asdict(self.sae.cfg))
        out = SAE(cfg)
        with torch.no_grad():
            out.W_enc.copy_(self.sae.W_enc * s)
            out.b_enc.copy_(self.sae.b_enc)
            out.W_dec.copy_(self.sae.W_dec / s)
            out.b_dec.copy_(self.sae.b_dec / s)
            out.threshold.copy_(self.sae.threshold)
        return out, cfg

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: plain tensors, numbers and lists, so
        torch.load(..., weights_only=True) accepts it."""
        return {
            "config": {**asdict(self.config), "betas": list(self.config.betas)},
            "d_in": self.sae.cfg.d_in,
            "sae": {k: v.clone() for k, v in self.sae.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scale": self.scale,
            "tokens": self.tokens,
            "steps": self.steps,
            "since_fired": self.since_fired.clone(),
            "history": [list(asdict(s).values()) for s in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = {**state["config"], "betas": tuple(state["config"]["betas"])}
        if saved != asdict(self.config) or state["d_in"] != self.sae.cfg.d_in:
            raise ValueError(
                f"checkpoint was trained with d_in={state['d_in']}, {saved}; this trainer has "
                f"d_in={self.sae.cfg.d_in}, {asdict(self.config)}: build the trainer with the checkpoint's settings"
            )
        self.sae.load_state_dict(state["sae"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scale = state["scale"]
        self.tokens = state["tokens"]
        self.steps = state["steps"]
        self.since_fired = state["since_fired"].to(self.device).clone()
        self.history = [StepStats(*row) for row in state["history"]]


def rebatch(chunks: Iterable[torch.Tensor], batch_tokens: int) -> Iterator[torch.Tensor]:
    """Cut a stream of (n_i, d) chunks into (batch_tokens, d) batches; a last partial batch
    is dropped (a small batch makes a noisy step). Holds at most one batch plus one chunk."""
    pending: list[torch.Tensor] = []
    held = 0
    for chunk in chunks:
        while len(chunk):
            take = chunk[: batch_tokens - held]
            chunk = chunk[len(take) :]
            pending.append(take)
            held += len(take)
            if held == batch_tokens:
                yield torch.cat(pending) if len(pending) > 1 else pending[0].clone()
                pending, held = [], 0


@dataclass
class StreamState:
    """Where a training stream stands, for an exact resume: how many blocks have been read
    and the activations read but not yet trained on (fewer than one batch)."""

    blocks: int = 0
    pending: torch.Tensor | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"blocks": self.blocks, "pending": self.pending}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> StreamState:
        return cls(int(state["blocks"]), state["pending"])


def batches_from_blocks(blocks: Iterable[Any], batch_tokens: int, state: StreamState) -> Iterator[torch.Tensor]:
    """(batch_tokens, d) batches from numbered blocks of activations, resumable exactly.

    `blocks` yields callables, each returning one block's activations (n_i, d) when called;
    the first `state.blocks` are skipped without being called, so a resumed stream pays
    nothing for what it already trained on, and `state.pending` is put back in front.
    `state` is kept current: whenever a batch is yielded it says how to resume from the
    batch after it. Memory holds one block plus less than one batch."""
    pending = state.pending
    for i, block in enumerate(blocks):
        if i < state.blocks:
            continue
        acts = block()
        pending = acts if pending is None or not len(pending) else torch.cat([pending, acts])
        state.blocks = i + 1
        while len(pending) >= batch_tokens:
            batch, pending = pending[:batch_tokens], pending[batch_tokens:].clone()
            state.pending = pending
            yield batch
        state.pending = pending
