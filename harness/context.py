"""What a task gets from the engine: the model's machinery bound to this run's options.

Tasks call `ctx.score`, `ctx.collect`, `ctx.intervene`, `ctx.generate` rather than the
model directly, so batching, progress bars, token accounting and interventions behave
the same in every task.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from harness import intervene as _intervene
from harness.batching import BatchSizer
from harness import scoring, sites
from harness.sites import Position


@dataclass
class RunContext:
    model: Any
    seed: int = 0
    limit: int | None = None
    batch_size: int | str = "auto"
    artifacts_dir: Path | None = None
    log_samples: bool = False
    show_progress: bool | None = None  # None: only on a terminal
    samples: list[dict] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("harness.task"))
    _sizers: dict[str, BatchSizer] = field(default_factory=dict, repr=False)

    def progress(self, iterable: Iterable, desc: str, total: int | None = None) -> Iterable:
        disable = None if self.show_progress is None else not self.show_progress
        return tqdm(iterable, desc=desc, total=total, disable=disable, leave=False)

    def _sizer(self, kind: str) -> BatchSizer:
        """One batch size per kind of call, kept for the whole task: halved once on OOM, not again per call."""
        if kind not in self._sizers:
            self._sizers[kind] = BatchSizer(self.batch_size, self.model.input_device)
        return self._sizers[kind]

    def _bar(self, desc: str):
        return lambda batches: self.progress(batches, desc)

    def score(self, prompts: Sequence[str], targets: Sequence[int], desc: str = "scoring",
              prefix_lengths: Sequence[int] | None = None) -> scoring.Scores:
        """Next-token scores; `prefix_lengths` reuses shared prefixes (see harness.scoring.score)."""
        return scoring.score(self.model, prompts, targets, self._sizer("score"), self._bar(desc), prefix_lengths)

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 32, desc: str = "generating") -> list[str]:
        return scoring.generate(self.model, prompts, max_new_tokens, self._sizer("generate"), self._bar(desc))

    def collect(self, prompts: Sequence[str], sites_: Sequence[str], positions: Position = "last", desc: str = "collecting") -> dict[str, Any]:
        return sites.collect(self.model, prompts, sites_, positions, self._sizer("collect"), self._bar(desc))

    def intervene(self, edits: Sequence[_intervene.Edit]):
        return _intervene.intervene(self.model, edits)

    def rng(self, salt: int = 0) -> np.random.Generator:
        """A generator seeded from the run seed; `salt` separates independent streams."""
        return np.random.default_rng([self.seed, salt])

    def limited(self, items: Sequence[Any]) -> Sequence[Any]:
        return items if self.limit is None else items[: self.limit]

    def log_sample(self, record: dict[str, Any]) -> None:
        if self.log_samples:
            self.samples.append(record)

    def save_figure(self, fig: Any, name: str) -> Path | None:
        """Save a matplotlib figure into the run's artifacts folder and close it."""
        import matplotlib.pyplot as plt

        if self.artifacts_dir is None:
            plt.close(fig)
            return None
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        path = self.artifacts_dir / name
        fig.savefig(path, dpi=120, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        self.artifacts.append(name)
        return path

    def write_samples(self) -> None:
        if self.samples and self.artifacts_dir is not None:
            self.artifacts_dir.mkdir(parents=True, exist_ok=True)
            with open(self.artifacts_dir / "samples.jsonl", "w") as f:
                for record in self.samples:
                    f.write(json.dumps(record, default=str) + "\n")
            self.artifacts.append("samples.jsonl")
