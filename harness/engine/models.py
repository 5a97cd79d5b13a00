"""Turn a model spec (bundled alias, hub id, local folder, .gguf file) into a loaded `Model`.

A `Model` is the Hugging Face causal LM, its tokenizer (left padding, so the last
position of every row is the prompt's last token) and the `Layout` that names its sites.
GGUF files are dequantised once and cached as safetensors: the conversion costs
15-40 s on two cores and the second run should not pay it.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.engine import distributed
from harness.engine.finite import finite
from harness.engine.gguf_cache import (
    MANIFEST,
    STALE_STAGING_S,
    STAMP,
    GGUFHeader,
    cache_problem,
    cache_root,
    cached_files,
    convert_gguf,
    convert_into_cache,
    discard,
    first_line,
    gguf_bar_follows_switch,
    gguf_quantization,
    gguf_to_folder,
    listed_stats,
    manifest_of,
    newest_mtime,
    read_gguf_header,
    read_json,
    remove_stale_staging,
    sha256_file,
    source_digest,
    stat_key,
    write_json,
    write_stamp,
)
from harness.engine.identity import (
    COMMIT,
    HUB_ID,
    READABLE_HUB_ID,
    Located,
    Resolved,
    check_safetensors,
    combine_quantization,
    folder_fingerprint,
    hub_commit,
    hub_error,
    locate,
    model_fingerprint,
    model_quantization,
    resolve_spec,
    slugify,
)
from harness.engine.layout import Layout, layout_for, resolve
from harness.engine.options import (
    DEVICE_CHECKS,
    DTYPES,
    LoadOptions,
    parse_max_memory,
    pick_device,
    pick_dtype,
    quantization_config,
    quantization_name,
    target_device,
)
from harness.errors import UsageError

__all__ = [  # the load's parts live in gguf_cache, identity and options; importable from here as before the split
    "COMMIT",
    "DEVICE_CHECKS",
    "DTYPES",
    "GGUFHeader",
    "HUB_ID",
    "LoadOptions",
    "Located",
    "MANIFEST",
    "Model",
    "ModelInfo",
    "READABLE_HUB_ID",
    "Resolved",
    "STALE_STAGING_S",
    "STAMP",
    "cache_problem",
    "cache_root",
    "cached_files",
    "check_finite",
    "check_safetensors",
    "combine_quantization",
    "convert_gguf",
    "convert_into_cache",
    "discard",
    "first_line",
    "folder_fingerprint",
    "from_hf",
    "gguf_bar_follows_switch",
    "gguf_quantization",
    "gguf_to_folder",
    "hub_commit",
    "hub_error",
    "listed_stats",
    "load_error",
    "load_model",
    "load_weights",
    "loading_bars",
    "locate",
    "manifest_of",
    "model_fingerprint",
    "model_quantization",
    "newest_mtime",
    "parse_max_memory",
    "pick_device",
    "pick_dtype",
    "prepare_tokenizer",
    "quantization_config",
    "quantization_name",
    "read_gguf_header",
    "read_json",
    "remove_stale_staging",
    "resolve_spec",
    "safetensors_only",
    "sha256_file",
    "slugify",
    "source_digest",
    "stat_key",
    "target_device",
    "write_json",
    "write_stamp",
]

log = logging.getLogger(__name__)


@dataclass
class ModelInfo:
    """What the results file records about the model, so a number can be traced to its weights."""

    spec: str
    source: str  # bundled | hub | folder | gguf
    revision: str | None  # hub commit, or "sha256:<hash>" of a GGUF file
    architecture: str
    n_params: int
    dtype: str
    quantization: str | None  # "bnb-4bit", "bnb-8bit", or "gguf-<file type> (dequantised to float32)"
    device: str
    fingerprint: str | None = None  # identity of the weights; see `model_fingerprint`
    bos: str | None = None  # the BOS policy prompts were tokenised under (`prepare_tokenizer`)


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
    active_edits: int = field(default=0, init=False)  # edits in force (`intervene`), for the run's timing by phase

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
        """Folder name for this model's results (see `slugify`)."""
        return slugify(self.info.spec)


@contextmanager
def loading_bars(show: bool | None) -> Iterator[None]:
    """Hide transformers' and huggingface_hub's progress bars while loading when `show` is False."""
    if show is not False:
        yield
        return
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as hf_logging

    transformers_on, hub_on = hf_logging.is_progress_bar_enabled(), not hub_utils.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    hub_utils.disable_progress_bars()
    try:
        yield
    finally:
        if transformers_on:
            hf_logging.enable_progress_bar()
        if hub_on:
            hub_utils.enable_progress_bars()


def load_model(spec: str, options: LoadOptions | None = None) -> Model:
    """Load `spec` for analysis: eval mode, no gradients, left-padding tokenizer, validated layout."""
    options = options or LoadOptions()
    with loading_bars(options.show_progress):
        return _load_model(spec, options)


def _load_model(spec: str, options: LoadOptions) -> Model:
    from transformers import AutoConfig, AutoTokenizer

    if options.device_map and options.device:
        raise UsageError("use either --device or --device-map, not both")
    if options.device_map and distributed.world_size() > 1:
        raise UsageError(
            f"--device-map spreads one model over the GPUs, but {distributed.world_size()} data-parallel "
            "processes were started: run one process with --device-map, or several without it"
        )
    quant = quantization_config(options)
    device = target_device(options)
    dtype = pick_dtype(options, device)
    if options.device_map and not torch.cuda.is_available():
        raise UsageError("--device-map needs CUDA GPUs; use --device cpu on this machine")
    resolved = resolve_spec(spec, options.revision)
    source, where = resolved.source, resolved.where
    common = dict(revision=resolved.revision if source == "hub" else None, trust_remote_code=options.trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(where, **common)
        tokenizer = AutoTokenizer.from_pretrained(where, **common)
    except (OSError, ValueError) as e:
        raise load_error(spec, source, e) from None
    layout_check = type("Probe", (), {"config": config})()
    layout_for(layout_check)  # fail before loading gigabytes of weights
    kwargs: dict[str, Any] = dict(dtype=dtype, use_safetensors=safetensors_only(resolved), **common)
    if quant is not None:
        kwargs["quantization_config"] = quant
        # data parallel: each process's quantised copy on its own GPU
        kwargs["device_map"] = options.device_map or ({"": distributed.local_rank()} if distributed.world_size() > 1 else "auto")
    elif options.device_map:
        kwargs["device_map"] = options.device_map
    if options.max_memory and "device_map" in kwargs:
        kwargs["max_memory"] = {int(d) if d.isdigit() else d: size for d, size in options.max_memory}
    hf = load_weights(spec, resolved, kwargs)
    if "device_map" not in kwargs:
        hf.to(device)
    hf.eval().requires_grad_(False)
    check_finite(spec, hf, options)
    bos = prepare_tokenizer(tokenizer, type(hf).__name__)
    revision, fingerprint = resolved.revision, resolved.fingerprint
    if source == "hub":
        revision = getattr(hf.config, "_commit_hash", None) or revision
        fingerprint = revision if revision and COMMIT.match(revision) else None
    info = ModelInfo(
        spec=spec,
        source=source,
        revision=revision,
        architecture=type(hf).__name__,
        n_params=sum(p.numel() for p in hf.parameters()),
        dtype=str(dtype).removeprefix("torch."),
        quantization=combine_quantization(resolved.quantization, quantization_name(options)),
        device=options.device_map and f"device_map={options.device_map}" or device,
        fingerprint=fingerprint,
        bos=bos,
    )
    return Model(hf=hf, tokenizer=tokenizer, layout=layout_for(hf), info=info)


def safetensors_only(resolved: Resolved) -> bool | None:
    """Never unpickle when safetensors are there: always for the cache, for a folder that has them.

    Elsewhere (a hub repo or folder with only .bin files) transformers reads pickles with
    torch's weights-only loader, which refuses anything but tensors.
    """
    if resolved.source in ("bundled", "gguf"):
        return True
    if resolved.source == "folder":
        folder = Path(resolved.where)
        return True if any(folder.glob("*.safetensors")) else None
    return None


def load_weights(spec: str, resolved: Resolved, kwargs: dict[str, Any]) -> Any:
    """from_pretrained, with every failure a user can cause turned into one line."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(resolved.where, **kwargs)
    except pickle.UnpicklingError:
        raise UsageError(
            f"{spec} holds pickled weights with more than tensors in them, which torch refuses to load "
            "(they could run code): use a safetensors copy of the model"
        ) from None
    except SafetensorError as e:
        raise UsageError(f"{spec} has a corrupt safetensors file ({first_line(e)}): save or download the model again") from None
    except (OSError, ValueError) as e:
        raise load_error(spec, resolved.source, e) from None


def load_error(spec: str, source: str, e: BaseException) -> UsageError:
    """One line for a failed from_pretrained: the remote-code refusal names our flag, not transformers' keyword."""
    if "trust_remote_code" in str(e):
        return UsageError(
            f"{spec} needs code of its own from its repository to load, which runs on this machine: "
            "read that code, then pass --trust-remote-code (or use a model transformers supports natively)"
        )
    if source == "hub":
        return hub_error(spec, e)
    return UsageError(f"cannot load {spec}: {first_line(e)}")


def check_finite(spec: str, hf: Any, options: LoadOptions) -> None:
    """Refuse weights holding NaN or Inf: every number computed from them would be meaningless (`finite`)."""
    for name, p in hf.named_parameters():
        if not p.is_floating_point() or p.device.type == "meta":
            continue
        if not finite(p):
            if options.dtype == "float16":
                raise UsageError(f"{spec} has NaN or Inf in {name} as float16: use --dtype bfloat16 or float32")
            raise UsageError(f"{spec} has NaN or Inf in its weights ({name}): the file is corrupt, download or convert it again")


# Architectures whose tokenizers add no BOS, which the papers ran through TransformerLens: it
# prepends BOS (GPT-2's <|endoftext|>) to every prompt, and without it the first real token is
# the attention sink and its state an outlier. Other tokenizers keep their own special tokens.
PREPEND_BOS_ARCHITECTURES = frozenset({"GPT2LMHeadModel", "GPTJForCausalLM", "GPTNeoForCausalLM", "GPTNeoXForCausalLM"})


def prepare_tokenizer(tokenizer: Any, architecture: str = "") -> str:
    """Left padding keeps every prompt's last token at position -1; some tokenizers lack a pad token.

    Returns the BOS policy the results record (`model.bos`): the tokenizer's own BOS, BOS
    prepended for the GPT-2 family (`PREPEND_BOS_ARCHITECTURES`), or none.
    """
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if adds_bos(tokenizer):
        return f"added by the tokenizer ({tokenizer.bos_token})"
    if architecture in PREPEND_BOS_ARCHITECTURES:
        if tokenizer.bos_token is None:
            tokenizer.bos_token = tokenizer.eos_token
        with contextlib.suppress(AttributeError, ValueError, NotImplementedError):
            tokenizer.add_bos_token = True
        if adds_bos(tokenizer):
            return f"prepended ({tokenizer.bos_token}), as TransformerLens does for {architecture}"
    return "none: the tokenizer adds no BOS"


def adds_bos(tokenizer: Any) -> bool:
    """Whether encoding a text puts the BOS token first."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


def from_hf(hf: Any, tokenizer: Any, spec: str = "in-memory") -> Model:
    """Wrap an already loaded model (tests, notebooks) as a `Model`."""
    hf.eval().requires_grad_(False)
    bos = prepare_tokenizer(tokenizer, type(hf).__name__)
    device = str(next(hf.parameters()).device)
    info = ModelInfo(
        spec=spec,
        source="memory",
        revision=None,
        architecture=type(hf).__name__,
        n_params=sum(p.numel() for p in hf.parameters()),
        dtype=str(hf.dtype).removeprefix("torch."),
        quantization=None,
        device=device,
        bos=bos,
    )
    return Model(hf=hf, tokenizer=tokenizer, layout=layout_for(hf), info=info)
