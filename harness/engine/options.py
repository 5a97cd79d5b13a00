"""How a model is loaded: the options of `harness run` that pick the device, the dtype, the
quantisation and the memory of each device, and the rules between them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from harness.engine import distributed
from harness.errors import UsageError

DTYPES = {"auto": None, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model; the CLI's loading flags, one field each."""

    dtype: str = "auto"  # auto: bfloat16 on CUDA, float32 on CPU
    device: str | None = None  # None: cuda when available, else cpu
    device_map: str | None = None  # "auto": accelerate spreads layers over the GPUs
    revision: str | None = None
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    trust_remote_code: bool = False
    show_progress: bool | None = None  # False: hide transformers' and huggingface_hub's loading bars
    max_memory: tuple[tuple[str, str], ...] = ()  # with device_map: (device, size) limits, passed to accelerate


def parse_max_memory(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """`--max-memory 0=20GiB --max-memory cpu=64GiB` as (device, size) pairs; a malformed one is a UsageError."""
    out = []
    for item in items:
        device, sep, size = item.partition("=")
        device, size = device.strip(), size.strip()
        if (
            not sep
            or not re.fullmatch(r"\d+|cpu|disk|mps|cuda:\d+", device)
            or not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", size)
        ):
            raise UsageError(f"--max-memory {item}: use DEVICE=SIZE, e.g. 0=20GiB or cpu=64GiB")
        out.append((device, size))
    return tuple(out)


def quantization_config(options: LoadOptions) -> Any:
    if not (options.load_in_4bit or options.load_in_8bit):
        return None
    if options.load_in_4bit and options.load_in_8bit:
        raise UsageError("choose one of --load-in-4bit and --load-in-8bit")
    flag = "--load-in-4bit" if options.load_in_4bit else "--load-in-8bit"
    if not torch.cuda.is_available():
        raise UsageError(f"{flag} needs a CUDA GPU (bitsandbytes); drop the flag on this machine")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UsageError(f"{flag} needs bitsandbytes: pip install 'probe-harness[quant]'") from None
    from transformers import BitsAndBytesConfig

    if options.load_in_4bit:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_type="nf4")
    return BitsAndBytesConfig(load_in_8bit=True)


DEVICE_CHECKS = {
    "cpu": lambda: True,
    "cuda": lambda: torch.cuda.is_available(),
    "mps": lambda: torch.backends.mps.is_available(),
    "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available(),
}


def pick_device(options: LoadOptions) -> str:
    """The device to load onto: --device checked by torch's own parser and against what this machine has."""
    if not options.device:
        if not torch.cuda.is_available():
            return "cpu"
        # data parallel: each process takes the GPU of its local rank, not all of them cuda:0
        return f"cuda:{distributed.local_rank()}" if distributed.world_size() > 1 else "cuda"
    try:
        device = torch.device(options.device)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"--device {options.device} is not a device: use cpu, cuda, cuda:N or mps") from None
    if device.type not in DEVICE_CHECKS:
        raise UsageError(f"--device {options.device}: the harness runs on {', '.join(DEVICE_CHECKS)}; use one of them")
    if not DEVICE_CHECKS[device.type]():
        raise UsageError(f"--device {options.device} but no {device.type} device is visible: use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {options.device}: only {torch.cuda.device_count()} CUDA GPU(s) visible: use cuda:0")
    return str(device)


def target_device(options: LoadOptions) -> str:
    """Where the weights go: quantised and device-mapped models are placed on CUDA by accelerate."""
    if options.device_map or options.load_in_4bit or options.load_in_8bit:
        return "cuda"
    return pick_device(options)


def quantization_name(options: LoadOptions) -> str | None:
    return "bnb-4bit" if options.load_in_4bit else "bnb-8bit" if options.load_in_8bit else None


def pick_dtype(options: LoadOptions, device: str) -> torch.dtype:
    if options.dtype not in DTYPES:
        raise UsageError(f"unknown --dtype {options.dtype}: choose one of {', '.join(DTYPES)}")
    dtype = DTYPES[options.dtype]
    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return dtype
