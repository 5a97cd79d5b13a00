"""LoRA fine-tuning of a causal LM on (prompt, reply) pairs, as an engine part.

The first task that fine-tunes (incontext_unlearning) and every later one share this
loop, so batching, loss masking, seeding, checkpoints and the adapter's life cycle
behave the same everywhere. The base model is changed only by peft's in-place module
swap: its weights never move, and `unload_adapter` puts the original modules back.

How a harness model looks while an adapter is attached: `get_peft_model(model_hf)`
wraps `model_hf` (the same object, not a copy) as `peft.base_model.model` and replaces
each targeted `nn.Linear` inside it by a peft `lora.Linear` that holds the original layer
as `.base_layer`. Every other module keeps its path and identity, so hooks resolved on
`model_hf` (`model.model.layers.3`, the final norm, the unembedding, a non-targeted
`o_proj`/`down_proj`) keep working, and calling `model_hf(...)` directly runs the adapter.

Data parallel (several processes from `torchrun` or `accelerate launch`): the adapter is wrapped
in torch's `DistributedDataParallel` (the wrapper accelerate's `prepare_model` uses; accelerate
itself does not see a CPU run under torchrun as distributed, so the harness wraps directly).
Every step's batch is the one a single process would draw; rank r trains on its examples r,
r + W, ..., each rank's loss is scaled so that DDP's gradient average equals the single-process
gradient of the whole batch, and rank 0 alone writes checkpoints. The reported losses and token
counts are the whole batch's. What is not the same as one process: dropout masks (each rank
draws its own) and the order of floating-point sums, so a W-process fine-tune agrees with the
single-process one to rounding (exactly so with `lora_dropout=0`), not bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, cast

import numpy as np
import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from harness.engine import distributed
from harness.engine.batching import check_lengths
from harness.engine.finite import check_diverged
from harness.engine.optim import ADOPT
from harness.errors import UsageError

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "adopt")
IGNORE_INDEX = -100  # label of prompt and padding tokens: no loss there
_STATE_FILE = "trainer_state.pt"
_ADAPTER_FILE = "adapter_model.safetensors"
_SHUFFLE_WINDOW = 8  # batches sorted by length within windows of this many batches

Progress = Callable[..., Iterable]


@dataclass
class TrainConfig:
    """LoRA fine-tuning settings; defaults are the incontext_unlearning authors' (their code).

    `weight_decay` applies to either optimizer; ADOPT takes it decoupled (AdamW style).
    ADOPT keeps its own paper's betas (0.9, 0.9999), eps 1e-6 and clip exponent 0.25.
    """

    steps: int = 300
    batch_size: int = 4
    lr: float = 2e-4
    warmup_ratio: float = 0.03  # linear warm-up from 0 over ceil(ratio * steps) steps, then constant
    weight_decay: float = 0.001
    max_grad_norm: float = 0.3
    optimizer: str = "adamw"  # "adamw" (torch, betas 0.9/0.999, eps 1e-8) or "adopt"
    lora_r: int = 4
    lora_alpha: int = 8
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] | None = None  # None: peft's default (q/v projections for Llama)
    append_eos: bool = True  # end each reply with EOS, so generation learns to stop
    checkpoint_every: int = 50  # with a checkpoint_dir; the last step is always saved
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        for name in ("steps", "batch_size", "lora_r", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"train option {name} must be a positive integer, got {getattr(self, name)}")
        if self.target_modules is not None:
            self.target_modules = tuple(self.target_modules)


@dataclass
class TrainReport:
    """What one fine-tuning run did; everything but `seconds` and memory is deterministic.

    `losses` and `grad_norms` hold one value per optimizer step from step 1, including
    steps restored from a checkpoint; `tokens` counts non-padding tokens fed forward and
    `reply_tokens` those that carried loss, over all steps.
    """

    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    tokens: int = 0
    reply_tokens: int = 0
    resumed_from: int = 0  # the checkpoint step this call started from (0: fresh)
    seconds: float = 0.0  # wall time of this call
    peak_memory_bytes: int | None = None  # CUDA only

    @property
    def steps(self) -> int:
        return len(self.losses)


@dataclass
class FineTuneResult:
    """The trained adapter, attached to the caller's model, and the run's report.

    `model` is the `PeftModel` around the caller's `model_hf` (eval mode, nothing requires
    grad). Evaluate through `model` or `model_hf` alike; `unload_adapter(model)` restores
    the base model.
    """

    model: PeftModel
    report: TrainReport


def finetune_lora(
    model_hf: PreTrainedModel,
    tokenizer: Any,
    examples: Sequence[tuple[str, str]],
    config: TrainConfig,
    checkpoint_dir: Path | None = None,
    progress: Progress | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> FineTuneResult:
    """Attach a LoRA adapter to `model_hf` and train it on (prompt, reply) pairs.

    Loss is cross-entropy on the reply tokens only, averaged per example then over the
    batch, so a short reply ("forgot") weighs as much as a long one. With
    `checkpoint_dir`, training state is saved every `config.checkpoint_every` steps and at
    the end, and a call with the same folder, data and config resumes from the latest
    checkpoint, ending with the same adapter as an uninterrupted run. `progress` is a
    bar factory like `RunContext.progress(iterable, desc, total)`; `on_step(step, loss)`
    runs after each step and its checkpoint. On any error the adapter is removed and
    `model_hf` is left as it was.
    """
    if not examples:
        raise UsageError("finetune_lora needs at least one (prompt, reply) example")
    encoded = _encode(tokenizer, examples, config.append_eos)
    check_lengths(model_hf, [p + r for p, r in encoded])
    plan = _batch_plan([len(p) + len(r) for p, r in encoded], config.batch_size, config.seed, config.steps)
    fingerprint = _fingerprint(model_hf, config, encoded)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = cast(torch.Tensor, model_hf.get_input_embeddings().weight).device

    was_training = model_hf.training
    requires_grad = {p: p.requires_grad for p in model_hf.parameters()}
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(config.seed)
        peft_model = get_peft_model(model_hf, _lora_config(config))
        try:
            report = _train(
                peft_model,
                encoded,
                plan,
                pad_id,
                device,
                config,
                fingerprint,
                checkpoint_dir,
                progress or _default_progress,
                on_step,
            )
        except BaseException:
            unload_adapter(peft_model)
            raise
        finally:
            peft_model.train(was_training)
            for p in peft_model.parameters():
                p.requires_grad_(requires_grad.get(p, False))
    return FineTuneResult(peft_model, report)


def save_adapter(peft_model: PeftModel, folder: Path) -> Path:
    """Save the adapter unmerged (peft's `save_pretrained`), atomically: temp folder, then rename."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(str(tmp))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def load_adapter(model_hf: PreTrainedModel, folder: Path) -> PeftModel:
    """Attach a saved adapter to a base model for evaluation (eval mode, frozen)."""
    peft_model = PeftModel.from_pretrained(model_hf, str(folder), is_trainable=False)
    peft_model.eval()
    return peft_model


def unload_adapter(peft_model: PeftModel) -> PreTrainedModel:
    """Remove the adapter without merging it: the original modules return, weights untouched."""
    return peft_model.unload()


def _lora_config(config: TrainConfig) -> LoraConfig:
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        bias="none",
        target_modules=list(config.target_modules) if config.target_modules else None,
        task_type="CAUSAL_LM",
    )


def _encode(tokenizer: Any, examples: Sequence[tuple[str, str]], append_eos: bool) -> list[tuple[list[int], list[int]]]:
    """Prompt and reply token ids, tokenized apart so the prompt is exactly what generation sees.

    EOS is appended to a reply that does not already end with it (a reply may carry it as text).
    """
    eos = tokenizer.eos_token_id if append_eos else None
    encoded = []
    for prompt, reply in examples:
        prompt_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
        reply_ids = list(tokenizer(reply, add_special_tokens=False)["input_ids"])
        if eos is not None and reply_ids[-1:] != [eos]:
            reply_ids.append(eos)
        if not reply_ids:
            raise UsageError(f"empty reply for prompt {prompt[:60]!r}: every example needs a reply to learn")
        encoded.append((prompt_ids, reply_ids))
    return encoded


def _batch_plan(lengths: Sequence[int], batch_size: int, seed: int, steps: int) -> list[list[int]]:
    """Example indices of every step's batch, a pure function of the seed.

    Each epoch shuffles the examples, sorts windows of a few batches by length (less
    padding), and shuffles the batches; epoch e draws from its own generator, so any
    step's batch is known without replaying earlier ones (what resuming needs).
    """
    plan: list[list[int]] = []
    epoch = 0
    window = batch_size * _SHUFFLE_WINDOW
    while len(plan) < steps:
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(lengths)).tolist()
        batches = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
            batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
        plan += [batches[i] for i in rng.permutation(len(batches))]
        epoch += 1
    return plan[:steps]


def _collate(encoded: list[tuple[list[int], list[int]]], batch: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids, mask and labels; labels are IGNORE_INDEX on prompt and padding."""
    width = max(len(encoded[i][0]) + len(encoded[i][1]) for i in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for row, i in enumerate(batch):
        prompt, reply = encoded[i]
        n = len(prompt) + len(reply)
        ids[row, :n] = torch.tensor(prompt + reply)
        mask[row, :n] = 1
        labels[row, len(prompt) : n] = torch.tensor(reply)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def reply_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over examples of each example's mean next-token cross-entropy on its labelled tokens."""
    return per_example_reply_loss(logits, labels).mean()


def per_example_reply_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each example's mean next-token cross-entropy on its labelled tokens, shape (batch,)."""
    targets = labels[:, 1:]
    ce = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
    counts = (targets != IGNORE_INDEX).sum(dim=1)
    return ce.sum(dim=1) / counts


def _make_optimizer(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adopt":
        return ADOPT(params, lr=config.lr, weight_decay=config.weight_decay, decouple=True)
    return torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=config.weight_decay)


def _warmup(config: TrainConfig) -> Callable[[int], float]:
    """Constant learning rate after a linear warm-up from 0 (transformers' constant_with_warmup)."""
    warmup = math.ceil(config.warmup_ratio * config.steps)
    return lambda step: min(1.0, step / warmup) if warmup else 1.0


def _fingerprint(model_hf: PreTrainedModel, config: TrainConfig, encoded: list) -> str:
    """What a checkpoint must match to be resumed: model config, settings (not the save rate), data."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "checkpoint_every"}
    blob = json.dumps([model_hf.config.to_json_string(use_diff=False), settings, encoded], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; fp32 elsewhere (CPU bf16 matmuls are slow and change the numbers)."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _default_progress(iterable: Iterable, desc: str, total: int | None = None) -> Iterable:
    return tqdm(iterable, desc=desc, total=total, leave=False, disable=None)


def _train(
    peft_model: PeftModel,
    encoded: list,
    plan: list[list[int]],
    pad_id: int,
    device: torch.device,
    config: TrainConfig,
    fingerprint: str,
    checkpoint_dir: Path | None,
    progress: Progress,
    on_step: Callable[[int, float], None] | None,
) -> TrainReport:
    started = time.perf_counter()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = _make_optimizer(params, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup(config))
    report = TrainReport()
    if checkpoint_dir is not None:
        _resume(Path(checkpoint_dir), fingerprint, peft_model, optimizer, scheduler, report)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    peft_model.train()
    world = distributed.world_size()
    forward = _data_parallel(peft_model, device) if world > 1 else peft_model
    bar = progress(range(report.steps, config.steps), desc="fine-tuning", total=config.steps - report.steps)
    for step in bar:
        loss, counts = _rank_loss(forward, encoded, plan[step], pad_id, device, world)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # under DDP: gradients averaged over ranks here
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        scheduler.step()

        batch_loss, tokens, reply_tokens = distributed.sum_over_ranks(torch.stack([c.float() for c in counts]))
        report.losses.append((batch_loss / world).item())
        report.grad_norms.append(grad_norm.item())
        check_diverged("fine-tuning", step + 1, report.losses[-1], params, config.lr)
        report.tokens += int(tokens)
        report.reply_tokens += int(reply_tokens)
        done = step + 1
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{report.losses[-1]:.4f}")
        if checkpoint_dir is not None and (done % config.checkpoint_every == 0 or done == config.steps):
            _save_checkpoint(Path(checkpoint_dir), done, fingerprint, peft_model, optimizer, scheduler, report)
        if on_step is not None:
            on_step(done, report.losses[-1])

    report.seconds = time.perf_counter() - started
    if device.type == "cuda":
        report.peak_memory_bytes = torch.cuda.max_memory_allocated(device)
    return report


def _data_parallel(peft_model: PeftModel, device: torch.device) -> torch.nn.Module:
    """The adapter wrapped for gradient averaging across ranks (parameters start equal: same seed)."""
    from torch.nn.parallel import DistributedDataParallel

    distributed.process_group()
    if len({p.device for p in peft_model.parameters()}) > 1:
        raise UsageError(
            "data-parallel fine-tuning needs the whole model on one device per process: "
            "drop --device-map, or fine-tune in one process"
        )
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(peft_model, device_ids=ids)


def _rank_loss(
    forward: torch.nn.Module, encoded: list, batch: list[int], pad_id: int, device: torch.device, world: int
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """This rank's share of the step's batch (examples r, r + W, ...), its loss, and (loss, tokens,
    reply tokens) to sum over ranks.

    One process: the batch's `reply_loss`. Several: the sum of this rank's per-example losses
    times W / len(batch), since DDP averages the ranks' gradients, which then equal the gradient
    of the whole batch's mean. A rank with no example (a batch smaller than W) runs one with
    weight 0, since every rank must join every backward pass.
    """
    mine = batch[distributed.rank() :: world]
    part = {k: v.to(device) for k, v in _collate(encoded, mine or batch[:1], pad_id).items()}
    with _autocast(device):
        logits = forward(input_ids=part["input_ids"], attention_mask=part["attention_mask"]).logits
    per_example = per_example_reply_loss(logits, part["labels"])
    if world == 1:
        loss = per_example.mean()  # reply_loss, bit for bit
    else:
        loss = per_example.sum() * (world / len(batch) if mine else 0.0)
    keep = 1 if mine else 0
    return loss, (loss.detach(), part["attention_mask"].sum() * keep, (part["labels"] != IGNORE_INDEX).sum() * keep)


def _step_folder(checkpoint_dir: Path, step: int) -> Path:
    return checkpoint_dir / f"step-{step:06d}"


def _save_checkpoint(
    checkpoint_dir: Path,
    step: int,
    fingerprint: str,
    peft_model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    report: TrainReport,
) -> None:
    """Adapter, optimizer, schedule, RNG and report so far, written to a temp folder then renamed.

    Data parallel: every rank's RNG state is gathered (dropout draws differ per rank) and rank 0
    writes; the others wait for the folder to be whole before going on.
    """
    rng_cpu = distributed.gather_objects(torch.get_rng_state())
    final = _step_folder(checkpoint_dir, step)
    if not distributed.is_main():
        distributed.barrier()
        return
    if not final.exists():
        tmp = checkpoint_dir / f".tmp-step-{step:06d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        peft_model.save_pretrained(str(tmp))
        torch.save(
            {
                "step": step,
                "fingerprint": fingerprint,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng_cpu": rng_cpu,
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "losses": report.losses,
                "grad_norms": report.grad_norms,
                "tokens": report.tokens,
                "reply_tokens": report.reply_tokens,
            },
            tmp / _STATE_FILE,
        )
        os.replace(tmp, final)
    for old in checkpoint_dir.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    distributed.barrier()


def _resume(
    checkpoint_dir: Path,
    fingerprint: str,
    peft_model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    report: TrainReport,
) -> None:
    """Load the latest checkpoint in `checkpoint_dir` into the fresh run, if there is one."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    folders = sorted(checkpoint_dir.glob("step-*"))
    if not folders:
        return
    latest = folders[-1]
    state = torch.load(latest / _STATE_FILE, weights_only=True)
    if state["fingerprint"] != fingerprint:
        raise UsageError(
            f"checkpoint folder {checkpoint_dir} holds a run with another model, data or "
            f"settings: remove it or choose another folder"
        )
    result = set_peft_model_state_dict(peft_model, load_file(latest / _ADAPTER_FILE))
    if getattr(result, "unexpected_keys", None):
        raise UsageError(f"checkpoint {latest} does not fit this adapter (unexpected {getattr(result, 'unexpected_keys')[:3]})")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng_cpu = state["rng_cpu"]  # one state per rank (a tensor in checkpoints of single-process runs before that)
    if isinstance(rng_cpu, (list, tuple)):
        rng_cpu = rng_cpu[distributed.rank()] if distributed.rank() < len(rng_cpu) else rng_cpu[0]
    torch.set_rng_state(rng_cpu)
    if state["rng_cuda"]:
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    report.losses = list(state["losses"])
    report.grad_norms = list(state["grad_norms"])
    report.tokens, report.reply_tokens = state["tokens"], state["reply_tokens"]
    report.resumed_from = state["step"]
    log.info("resuming fine-tuning from %s", latest)
