"""Turn a model spec (bundled alias, hub id, local folder, .gguf file) into a loaded `Model`.

A `Model` is the Hugging Face causal LM, its tokenizer (left padding, so the last
position of every row is the prompt's last token) and the `Layout` that names its sites.
GGUF files are dequantised once and cached as safetensors: the conversion costs
15-40 s on two cores and the second run should not pay it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.bundled import BUNDLED
from harness.errors import UsageError
from harness.layout import Layout, layout_for, resolve

log = logging.getLogger(__name__)

DTYPES = {"auto": None, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


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


@dataclass
class ModelInfo:
    """What the results file records about the model, so a number can be traced to its weights."""

    spec: str
    source: str  # bundled | hub | folder | gguf
    revision: str | None  # hub commit, or "sha256:<hash>" of a GGUF file
    architecture: str
    n_params: int
    dtype: str
    quantization: str | None
    device: str


@dataclass
class Model:
    """A loaded causal LM with its tokenizer and layout; shared by every task of one invocation."""

    hf: Any  # transformers PreTrainedModel
    tokenizer: Any
    layout: Layout
    info: ModelInfo
    blocks: Any = field(init=False)
    current_batch: Any = field(default=None, init=False)  # the batch in flight, for intervention hooks
    tokens_processed: int = field(default=0, init=False)
    edits_suspended: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.blocks = resolve(self.hf, self.layout.blocks)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        return self.hf.get_input_embeddings().weight.shape[-1]

    @property
    def input_device(self) -> torch.device:
        return self.hf.get_input_embeddings().weight.device

    @property
    def slug(self) -> str:
        """Folder name for this model's results: the spec with path separators made safe."""
        return slugify(self.info.spec)


def slugify(spec: str) -> str:
    name = Path(spec).name if (os.sep in spec and Path(spec).exists()) else spec
    return re.sub(r"[^\w.-]+", "__", name).strip("_") or "model"


def cache_root() -> Path:
    """Where converted GGUF weights live: $HARNESS_CACHE, else the user cache directory."""
    env = os.environ.get("HARNESS_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("probe-harness"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_to_folder(gguf: Path) -> tuple[Path, str]:
    """Dequantise a GGUF file once into a safetensors folder under the cache; return (folder, sha256)."""
    sha = sha256_file(gguf)
    folder = cache_root() / "gguf" / sha[:16]
    if (folder / "config.json").exists():
        return folder, sha
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors (once; cached in %s)", gguf.name, folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as e:
        raise UsageError(f"reading GGUF files needs the gguf package: pip install gguf ({e})") from None
    except (ValueError, KeyError) as e:
        raise UsageError(f"cannot read {gguf}: {first_line(e)}; transformers supports GGUF for llama, mistral, gemma3, qwen2 and a few more") from None
    # The weights are plain float32 now; save_pretrained refuses while the GGUF quantizer is attached.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, folder)
    except OSError:
        if not (folder / "config.json").exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder, sha


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def resolve_spec(spec: str, revision: str | None) -> tuple[str, str, str | None]:
    """Return (source, path_or_id, revision) for a model spec, or a one-line UsageError."""
    if spec in BUNDLED:
        folder, sha = gguf_to_folder(BUNDLED[spec]())
        return "bundled", str(folder), f"sha256:{sha}"
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UsageError(f"no such GGUF file: {spec}")
        folder, sha = gguf_to_folder(path)
        return "gguf", str(folder), f"sha256:{sha}"
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UsageError(f"{spec} is a folder without config.json: point --model at a Hugging Face model folder")
        return "folder", str(path), None
    if HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return "hub", spec, revision
    raise UsageError(
        f"unknown model '{spec}': use a bundled alias ({', '.join(BUNDLED)}), a hub id like org/name, "
        "a local model folder or a .gguf file"
    )


def hub_error(spec: str, e: BaseException) -> UsageError:
    """Translate a hub failure into the one-line fix a user needs."""
    chain, cur = [], e
    while cur is not None:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    names = {type(c).__name__ for c in chain}
    text = " ".join(str(c) for c in chain)
    if "GatedRepoError" in names or "gated" in text.lower():
        return UsageError(f"{spec} is gated: accept its license on the hub, then `hf auth login` (or set HF_TOKEN)")
    if "RevisionNotFoundError" in names:
        return UsageError(f"{spec} has no such revision: check --revision")
    if "RepositoryNotFoundError" in names or "is not a valid model identifier" in text:
        return UsageError(f"no model {spec} on the hub: check the id, or pass a local folder or a bundled alias")
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True", "ON", "on") or "offline" in text.lower() \
            or "LocalEntryNotFoundError" in names or "couldn't connect" in text:
        return UsageError(
            f"{spec} is not in the local Hugging Face cache and the hub cannot be reached: "
            "download it first with `hf download " + spec + "` or pass a local folder"
        )
    return UsageError(f"cannot load {spec}: {first_line(e)}")


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


def pick_device(options: LoadOptions) -> str:
    if options.device:
        if options.device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"--device {options.device} but no CUDA GPU is visible: use --device cpu")
        return options.device
    return "cuda" if torch.cuda.is_available() else "cpu"


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


def load_model(spec: str, options: LoadOptions | None = None) -> Model:
    """Load `spec` for analysis: eval mode, no gradients, left-padding tokenizer, validated layout."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    options = options or LoadOptions()
    if options.device_map and options.device:
        raise UsageError("use either --device or --device-map, not both")
    quant = quantization_config(options)
    device = target_device(options)
    dtype = pick_dtype(options, device)
    if options.device_map and not torch.cuda.is_available():
        raise UsageError("--device-map needs CUDA GPUs; use --device cpu on this machine")
    source, where, revision = resolve_spec(spec, options.revision)
    common = dict(revision=revision if source == "hub" else None, trust_remote_code=options.trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(where, **common)
        tokenizer = AutoTokenizer.from_pretrained(where, **common)
    except (OSError, ValueError) as e:
        if source == "hub":
            raise hub_error(spec, e) from None
        raise UsageError(f"cannot load {spec}: {first_line(e)}") from None
    layout_check = type("Probe", (), {"config": config})()
    layout_for(layout_check)  # fail before loading gigabytes of weights
    kwargs: dict[str, Any] = dict(dtype=dtype, **common)
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = options.device_map or "auto"
    elif options.device_map:
        kwargs["device_map"] = options.device_map
    try:
        hf = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as e:
        if source == "hub":
            raise hub_error(spec, e) from None
        raise UsageError(f"cannot load {spec}: {first_line(e)}") from None
    if "device_map" not in kwargs:
        hf.to(device)
    hf.eval().requires_grad_(False)
    prepare_tokenizer(tokenizer)
    if source == "hub":
        revision = getattr(hf.config, "_commit_hash", None) or revision
    info = ModelInfo(
        spec=spec,
        source=source,
        revision=revision,
        architecture=type(hf).__name__,
        n_params=sum(p.numel() for p in hf.parameters()),
        dtype=str(dtype).removeprefix("torch."),
        quantization=quantization_name(options),
        device=options.device_map and f"device_map={options.device_map}" or device,
    )
    return Model(hf=hf, tokenizer=tokenizer, layout=layout_for(hf), info=info)


def prepare_tokenizer(tokenizer: Any) -> None:
    """Left padding keeps every prompt's last token at position -1; some tokenizers lack a pad token."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token


def from_hf(hf: Any, tokenizer: Any, spec: str = "in-memory") -> Model:
    """Wrap an already loaded model (tests, notebooks) as a `Model`."""
    hf.eval().requires_grad_(False)
    prepare_tokenizer(tokenizer)
    device = str(next(hf.parameters()).device)
    info = ModelInfo(
        spec=spec, source="memory", revision=None, architecture=type(hf).__name__,
        n_params=sum(p.numel() for p in hf.parameters()), dtype=str(hf.dtype).removeprefix("torch."),
        quantization=None, device=device,
    )
    return Model(hf=hf, tokenizer=tokenizer, layout=layout_for(hf), info=info)
