"""Training an SAE on activations streamed from the model: the corpus in blocks of texts through
the forward pass (stopped at the site's layer), into fixed-size batches of tokens, one trainer
step each, with a checkpoint every few steps so a killed run resumes exactly where it was.

The trainer (`probes.sae.SAETrainer`) is pure optimisation on arrays; this is the engine's part:
the model, the stream, the checkpoints, the progress bar, and stopping on divergence.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from harness.engine.finite import check_diverged
from probes.sae import SAETrainer, StreamState, TrainSummary, batches_from_blocks


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file, then rename: a kill mid-write leaves the last checkpoint whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train_streamed(
    ctx: Any,
    trainer: SAETrainer,
    texts: Iterator[str],
    site: str,
    *,
    tokens: int,
    batch_tokens: int,
    context: int,
    block_texts: int,
    key: dict[str, Any],
    checkpoint_every: int,
) -> TrainSummary:
    """Train `trainer` on `tokens` activations at `site`, `batch_tokens` per step, from `texts`
    (streamed `block_texts` at a time, each cut to `context` tokens).

    key: everything that sets the result (model, site, trainer config, corpus ...): the
    checkpoint is named by its digest, so a resumed run never continues another's training.
    """
    checkpoint = None
    if ctx.checkpoint_dir is not None:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        checkpoint = Path(ctx.checkpoint_dir) / f"sae-{site}-{digest}.pt"
    state = StreamState()
    if checkpoint is not None and checkpoint.is_file():
        saved = torch.load(checkpoint, weights_only=True, map_location=trainer.device)
        trainer.load_state_dict(saved["trainer"])
        state = StreamState.from_dict(saved["stream"])
        ctx.log.info("resuming SAE training at step %d from %s", trainer.steps, checkpoint)

    def stacked(block: list[str]) -> torch.Tensor:
        return torch.cat(list(ctx.stream(block, site, context)))

    def blocks() -> Iterator[Callable[[], torch.Tensor]]:
        while True:
            block = list(itertools.islice(texts, block_texts))
            yield functools.partial(stacked, block)

    n_steps = -(-tokens // batch_tokens)
    bar = ctx.progress(range(n_steps), desc=f"training SAE at {site}", total=n_steps)
    bar.update(trainer.steps)
    for x in batches_from_blocks(blocks(), batch_tokens, state) if trainer.steps < n_steps else ():
        stats = trainer.step(x)
        check_diverged("SAE training", trainer.steps, stats.loss, trainer.sae.parameters(), trainer.config.lr)
        bar.update(1)
        if trainer.steps % 10 == 0 or trainer.steps == n_steps:
            bar.set_postfix(mse=f"{stats.mse:.3g}", l0=f"{stats.l0:.1f}", dead=f"{trainer.dead_fraction():.2f}")
        if checkpoint is not None and ctx.writes_files and trainer.steps % checkpoint_every == 0 and trainer.steps < n_steps:
            save_checkpoint(checkpoint, {"trainer": trainer.state_dict(), "stream": state.to_dict()})
        if trainer.steps >= n_steps:
            break
    bar.close()
    return trainer.summary()
