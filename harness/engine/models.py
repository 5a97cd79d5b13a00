"""Turn a model spec (bundled alias, hub id, local folder, .gguf file) into a loaded `Model`.

A `Model` is the Hugging Face causal LM, its tokenizer (left padding, so the last
position of every row is the prompt's last token) and the `Layout` that names its sites.
GGUF files are dequantised once and cached as safetensors: the conversion costs
15-40 s on two cores and the second run should not pay it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import mmap
import os
import pickle
import re
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from harness.engine import distributed
from harness.engine.bundled import BUNDLED
from harness.engine.layout import Layout, layout_for, resolve
from harness.errors import UsageError

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
    show_progress: bool | None = None  # False: hide transformers' and huggingface_hub's loading bars
    max_memory: tuple[tuple[str, str], ...] = ()  # with device_map: (device, size) limits, passed to accelerate


def parse_max_memory(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """`--max-memory 0=20GiB --max-memory cpu=64GiB` as (device, size) pairs; a malformed one is a UsageError."""
    out = []
    for item in items:
        device, sep, size = item.partition("=")
        device, size = device.strip(), size.strip()
        if not sep or not re.fullmatch(r"\d+|cpu|disk|mps|cuda:\d+", device) or not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", size):
            raise UsageError(f"--max-memory {item}: use DEVICE=SIZE, e.g. 0=20GiB or cpu=64GiB")
        out.append((device, size))
    return tuple(out)


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
        """Folder name for this model's results (see `slugify`)."""
        return slugify(self.info.spec)


READABLE_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def slugify(spec: str, revision: str | None = None) -> str:
    """Folder name for a model's results: readable, one folder per model, always a single plain name.

    A bundled alias is its own name and a hub id reads `org__name`: both are unique as they
    stand. Anything else gets a short digest appended: a local folder or GGUF file (two
    folders `a/tiny` and `b/tiny` share their last part; the digest is of the absolute
    path), a hub id whose readable form another id could share (`a__b/c`, `a/b__c`) or
    asked for at a `--revision` (another snapshot, other weights), and any spec that is not
    a plain name (`..`, `/abs`), which can then never name a folder outside its parent.
    Slugs never start with "." or "_" (hidden files; the comparison folder).
    """
    if spec in BUNDLED:
        return spec
    path = Path(spec).expanduser()
    if path.suffix == ".gguf" or path.is_dir():  # what `locate` takes for a local model
        identity = str(path.resolve())
        readable = Path(identity).name
    else:
        if READABLE_HUB_ID.match(spec) and "__" not in spec and revision is None:
            return spec.replace("/", "__")
        identity = spec if revision is None else f"{spec}@{revision}"
        readable = spec.replace("/", "__")
    name = re.sub(r"[^\w.-]+", "_", readable).strip("._-")[:60] or "model"
    return f"{name}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"


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


def stat_key(path: Path) -> list[int]:
    """Size, mtime, ctime and inode: any write or replacement through the file system changes one of them."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


_DIGESTS: dict[tuple[str, tuple[int, ...]], str] = {}


def source_digest(path: Path) -> str:
    """sha256 of a GGUF file, hashed once per process: `model_fingerprint` and `load_model` both need it."""
    key = (str(path.resolve()), tuple(stat_key(path)))
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


# ---- GGUF header: walked by hand, because gguf.GGUFReader parses every vocabulary entry (5-10 s) ----

_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


class _Truncated(Exception):
    """The header ends (or says it ends) past the end of the file."""


class _Cursor:
    """Reads little- or big-endian GGUF values from a buffer, refusing to run past its end."""

    def __init__(self, buf: Any, order: str) -> None:
        self.buf, self.order, self.pos = buf, order, 0

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(self.order + fmt)
        if self.pos + size > len(self.buf):
            raise _Truncated
        (value,) = struct.unpack_from(self.order + fmt, self.buf, self.pos)
        self.pos += size
        return value

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise _Truncated
        self.pos += n

    def string(self) -> bytes:
        n = self.take("Q")
        start = self.pos
        self.skip(n)
        return bytes(self.buf[start:self.pos])

    def value(self, vtype: int) -> Any:
        """Read one value; arrays are skipped (None), since no header array matters here."""
        if vtype in _GGUF_SCALARS:
            return self.take(_GGUF_SCALARS[vtype])
        if vtype == _GGUF_STRING:
            return self.string()
        if vtype != _GGUF_ARRAY:
            raise ValueError(f"unknown value type {vtype}")
        item, count = self.take("I"), self.take("Q")
        if item in _GGUF_SCALARS:
            self.skip(count * struct.calcsize(self.order + _GGUF_SCALARS[item]))
        elif item == _GGUF_STRING:
            self.skip_strings(count)
        else:
            for _ in range(count):
                self.value(item)
        return None

    def skip_strings(self, count: int) -> None:
        """The vocabulary arrays hold up to ~260k strings: one tight loop, not a call per string."""
        fmt, buf, pos, end = self.order + "Q", self.buf, self.pos, len(self.buf)
        for _ in range(count):
            if pos + 8 > end:
                raise _Truncated
            pos += 8 + struct.unpack_from(fmt, buf, pos)[0]
        if pos > end:
            raise _Truncated
        self.pos = pos


@dataclass(frozen=True)
class GGUFHeader:
    """What the harness needs from a GGUF header: the file's quantisation type."""

    file_type: str  # e.g. "Q4_K_M", from general.file_type, else the most common tensor type


def read_gguf_header(path: Path) -> GGUFHeader:
    """Check that `path` is a whole GGUF file (header, and tensor data up to the last byte the header names)."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _walk_gguf(buf)
    except (_Truncated, ValueError, KeyError, OverflowError, MemoryError) as e:
        detail = "truncated" if isinstance(e, _Truncated) or not str(e) else str(e)
        raise UsageError(f"{path} is not a complete GGUF file ({detail}): download or copy it again") from None


def _walk_gguf(buf: Any) -> GGUFHeader:
    import gguf

    if len(buf) < 4 or buf[:4] != b"GGUF":
        raise ValueError("no GGUF magic number")
    order = "<" if struct.unpack_from("<I", buf, 4)[0] < 1 << 16 else ">"
    cur = _Cursor(buf, order)
    cur.skip(4)
    if cur.take("I") < 2:
        raise ValueError("GGUF version 1 is not supported")
    n_tensors, n_kv = cur.take("Q"), cur.take("Q")
    meta: dict[bytes, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        meta[key] = cur.value(cur.take("I"))
    tensors = [_tensor_extent(cur) for _ in range(n_tensors)]
    alignment = meta.get(b"general.alignment") or gguf.GGUF_DEFAULT_ALIGNMENT
    data_start = -(-cur.pos // alignment) * alignment
    end = data_start + max((offset + nbytes for _, offset, nbytes in tensors), default=0)
    if end > len(buf):
        raise ValueError(f"truncated: its header names {end} bytes, the file has {len(buf)}")
    return GGUFHeader(file_type=_file_type_name(meta.get(b"general.file_type"), tensors))


def _tensor_extent(cur: _Cursor) -> tuple[str, int, int]:
    """(type name, offset, size in bytes) of one tensor-info record."""
    import gguf

    cur.string()
    dims = [cur.take("Q") for _ in range(cur.take("I"))]
    kind = gguf.GGMLQuantizationType(cur.take("I"))
    offset = cur.take("Q")
    block, block_bytes = gguf.GGML_QUANT_SIZES[kind]
    return kind.name, offset, math.prod(dims) // block * block_bytes


def _file_type_name(code: int | None, tensors: list[tuple[str, int, int]]) -> str:
    import gguf

    if code is None:
        sizes: dict[str, int] = {}
        for name, _, nbytes in tensors:
            sizes[name] = sizes.get(name, 0) + nbytes
        return max(sizes, key=sizes.__getitem__) if sizes else "unknown"
    try:
        name = gguf.LlamaFileType(code).name
    except ValueError:
        return f"file_type_{code}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def gguf_quantization(header: GGUFHeader) -> str:
    """The quantization a results file records for GGUF weights, which the cache holds as float32."""
    return f"gguf-{header.file_type} (dequantised to float32)"


# ---- the converted-weights cache: cache_root()/gguf/<sha16>, verified at every load ----

MANIFEST = "harness-manifest.json"  # written at conversion: sha256 and size of every file
STAMP = "harness-verified.json"  # written after a full check: the files' stat keys at that moment
STALE_STAGING_S = 15 * 60  # a staging folder untouched this long belongs to a dead conversion


def gguf_to_folder(gguf: Path) -> tuple[Path, str]:
    """Dequantise a GGUF file once into a safetensors folder under the cache; return (folder, sha256).

    A cached folder is used only if it matches the manifest written at conversion;
    otherwise it is converted again, with one warning.
    """
    sha = source_digest(gguf)
    folder = cache_root() / "gguf" / sha[:16]
    remove_stale_staging(folder.parent)
    if folder.exists():
        problem = cache_problem(folder, sha)
        if problem is None:
            return folder, sha
        log.warning("cached weights in %s are damaged (%s); converting %s again", folder, problem, gguf.name)
        discard(folder)
    convert_into_cache(gguf, folder, sha)
    return folder, sha


def convert_into_cache(gguf: Path, folder: Path, sha: str) -> None:
    """Convert in a staging folder, write the manifest, then rename: readers never see half a folder."""
    log.info("converting %s to safetensors (once; cached in %s)", gguf.name, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        convert_gguf(gguf, staging)
        write_json(staging / MANIFEST, manifest_of(staging, sha))
        os.replace(staging, folder)
        write_stamp(folder)
    except OSError:
        if not (folder / MANIFEST).exists():  # else another process finished the same conversion first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise `gguf` with transformers and save model and tokenizer as safetensors into `out`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        with gguf_bar_follows_switch():
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
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def cached_files(folder: Path) -> list[Path]:
    """The files of a cache folder that count: hidden ones are our own half-written temporaries."""
    return [p for p in sorted(folder.iterdir()) if not p.name.startswith(".") and p.name != STAMP]


@contextmanager
def gguf_bar_follows_switch() -> Iterator[None]:
    """transformers' GGUF dequantising bar ignores its progress-bar switch; make it obey while converting."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    if hf_logging.is_progress_bar_enabled() or not hasattr(gguf_utils, "tqdm"):
        yield
        return
    original = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def manifest_of(folder: Path, source_sha: str) -> dict[str, Any]:
    files = {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in cached_files(folder)}
    return {"source_sha256": source_sha, "files": files}


def write_json(path: Path, data: Any) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def listed_stats(folder: Path) -> dict[str, list[int]]:
    """Stat keys of every file that counts, the manifest included."""
    return {p.name: stat_key(p) for p in cached_files(folder)}


def write_stamp(folder: Path) -> None:
    """Record that the folder matched its manifest now; a read-only cache just gets checked in full each time."""
    try:
        write_json(folder / STAMP, listed_stats(folder))
    except OSError as e:
        log.debug("cannot write %s: %s", folder / STAMP, e)


def cache_problem(folder: Path, source_sha: str) -> str | None:
    """Why a cached folder cannot be trusted, or None when it matches its manifest.

    Sizes are compared always; contents are hashed only when a file's size, mtime,
    ctime or inode changed since the last full check (the stamp): every write through
    the file system changes ctime, which user space cannot set back.
    """
    manifest = read_json(folder / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("source_sha256") != source_sha:
        return f"{MANIFEST} is missing, unreadable or for another GGUF file"
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(entry, dict) for entry in files.values()):
        return f"{MANIFEST} is malformed"
    stats = listed_stats(folder)
    if sorted(stats) != sorted([*files, MANIFEST]):
        return "its files differ from the manifest"
    for name, entry in files.items():
        if stats[name][0] != entry.get("size"):
            return f"{name} has {stats[name][0]} bytes, the manifest says {entry.get('size')}"
    if read_json(folder / STAMP) == stats:
        return None
    for name, entry in files.items():
        if sha256_file(folder / name) != entry.get("sha256"):
            return f"{name} does not match its sha256"
    write_stamp(folder)
    return None


def discard(folder: Path) -> None:
    """Move a folder out of readers' way under a staging name, then delete it."""
    doomed = folder.parent / f".tmp-discard-{folder.name}-{os.getpid()}-{time.monotonic_ns()}"
    try:
        os.replace(folder, doomed)
    except FileNotFoundError:  # another process discarded it first
        return
    shutil.rmtree(doomed, ignore_errors=True)


def remove_stale_staging(parent: Path) -> None:
    """Delete staging folders of interrupted conversions; a live conversion keeps writing, so it stays fresh."""
    if not parent.is_dir():
        return
    cutoff = time.time() - STALE_STAGING_S
    for staging in parent.glob(".tmp-*"):
        if staging.is_dir() and newest_mtime(staging) < cutoff:
            log.info("removing %s, left by an interrupted conversion", staging)
            shutil.rmtree(staging, ignore_errors=True)


def newest_mtime(folder: Path) -> float:
    try:
        return max([folder.stat().st_mtime, *(p.stat().st_mtime for p in folder.iterdir())])
    except FileNotFoundError:  # removed meanwhile by its owner
        return time.time()


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# ---- model specs and identity ----

@dataclass(frozen=True)
class Located:
    """A spec located on disk or on the hub, before anything heavy happens."""

    source: str  # bundled | gguf | folder | hub
    where: str  # GGUF file, folder, or hub id
    revision: str | None  # hub only


@dataclass(frozen=True)
class Resolved:
    """A spec ready for from_pretrained: where to load from and what identifies the weights."""

    source: str
    where: str  # folder or hub id
    revision: str | None  # hub revision asked for, or "sha256:<hash>" of a GGUF file
    fingerprint: str | None
    quantization: str | None  # GGUF's, before any bitsandbytes option


def locate(spec: str, revision: str | None) -> Located:
    """Classify a model spec, or a one-line UsageError; reads no weights and asks no server."""
    if spec in BUNDLED:
        return Located("bundled", str(BUNDLED[spec]()), None)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UsageError(f"no such GGUF file: {spec}")
        return Located("gguf", str(path), None)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UsageError(f"{spec} is a folder without config.json: point --model at a Hugging Face model folder")
        return Located("folder", str(path), None)
    if HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return Located("hub", spec, revision)
    raise UsageError(
        f"unknown model '{spec}': use a bundled alias ({', '.join(BUNDLED)}), a hub id like org/name, "
        "a local model folder or a .gguf file"
    )


def resolve_spec(spec: str, revision: str | None) -> Resolved:
    """Locate `spec`, check its files, and convert a GGUF file (once, cached); one-line UsageError on bad input."""
    found = locate(spec, revision)
    if found.source in ("bundled", "gguf"):
        gguf = Path(found.where)
        header = read_gguf_header(gguf)
        folder, sha = gguf_to_folder(gguf)
        return Resolved(found.source, str(folder), f"sha256:{sha}", f"sha256:{sha}", gguf_quantization(header))
    if found.source == "folder":
        folder = Path(found.where)
        for weights in sorted(folder.glob("*.safetensors")):
            check_safetensors(weights)
        return Resolved("folder", found.where, None, folder_fingerprint(folder), None)
    return Resolved("hub", found.where, found.revision, None, None)


def model_fingerprint(spec: str, options: LoadOptions) -> str | None:
    """Identity of the weights `load_model(spec, options)` would load, without loading them.

    GGUF and bundled models: "sha256:<file digest>"; local folders: `folder_fingerprint`;
    hub models: the commit the revision resolves to, or None when that cannot be told
    cheaply (offline and not cached, or the hub unreachable). Equals `ModelInfo.fingerprint`.
    """
    found = locate(spec, options.revision)
    if found.source in ("bundled", "gguf"):
        return f"sha256:{source_digest(Path(found.where))}"
    if found.source == "folder":
        return folder_fingerprint(Path(found.where))
    return hub_commit(found.where, found.revision)


def model_quantization(spec: str, options: LoadOptions) -> str | None:
    """What `ModelInfo.quantization` will say, without loading: GGUF type and/or bitsandbytes mode."""
    found = locate(spec, options.revision)
    gguf = gguf_quantization(read_gguf_header(Path(found.where))) if found.source in ("bundled", "gguf") else None
    return combine_quantization(gguf, quantization_name(options))


def combine_quantization(gguf: str | None, bnb: str | None) -> str | None:
    return ", ".join(q for q in (gguf, bnb) if q) or None


def folder_fingerprint(folder: Path) -> str:
    """Digest of the names, sizes and mtimes of a model folder's top-level files.

    Reading the weights would cost seconds to minutes per run; a stat per file costs
    microseconds, and saving, downloading or copying files all change their mtime, so
    changed weights never keep the old fingerprint (a copy without kept mtimes merely
    gets a new one, which reruns rather than wrongly reusing).
    """
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            st = path.stat()
            digest.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return f"folder-stat:{digest.hexdigest()}"


COMMIT = re.compile(r"^[0-9a-f]{40}$")


def hub_commit(repo: str, revision: str | None) -> str | None:
    """The commit `revision` of `repo` resolves to: from the local cache offline, else one metadata request."""
    import huggingface_hub
    from huggingface_hub import constants

    revision = revision or "main"
    if COMMIT.match(revision):
        return revision
    if constants.HF_HUB_OFFLINE:
        cached = huggingface_hub.try_to_load_from_cache(repo, "config.json", revision=revision)
        return Path(cached).parent.name if isinstance(cached, str) else None
    try:
        return huggingface_hub.model_info(repo, revision=revision).sha
    except Exception as e:  # any failure only means "unknown": the runner then does not reuse
        log.debug("cannot resolve %s@%s on the hub: %s", repo, revision, e)
        return None


def check_safetensors(path: Path) -> None:
    """A one-line error for a truncated or corrupt safetensors file, before from_pretrained reads it."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError(f"header of {n} bytes in a file of {size}")
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError, IndexError) as e:
        raise UsageError(f"{path} is not a valid safetensors file ({first_line(e)}): save or download the model again") from None
    if 8 + n + end != size:
        raise UsageError(
            f"{path} is truncated or corrupt (its header describes {8 + n + end} bytes, the file has {size}): "
            "save or download the model again"
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
        raise UsageError(f"--device-map spreads one model over the GPUs, but {distributed.world_size()} data-parallel "
                         "processes were started: run one process with --device-map, or several without it")
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
    prepare_tokenizer(tokenizer)
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
        return UsageError(f"{spec} needs code of its own from its repository to load, which runs on this machine: "
                          "read that code, then pass --trust-remote-code (or use a model transformers supports natively)")
    if source == "hub":
        return hub_error(spec, e)
    return UsageError(f"cannot load {spec}: {first_line(e)}")


def check_finite(spec: str, hf: Any, options: LoadOptions) -> None:
    """Refuse weights holding NaN or Inf: every number computed from them would be meaningless.

    A parameter's sum is finite unless it holds NaN or Inf or the sum overflows; only then
    is `isfinite` checked element by element. On SmolLM2 135M (one CPU core) the sums take
    0.2 s where `torch.isfinite(p).all()` on every parameter takes 2.6 s.
    """
    for name, p in hf.named_parameters():
        if not p.is_floating_point() or p.device.type == "meta" or bool(torch.isfinite(p.sum())):
            continue
        if not bool(torch.isfinite(p).all()):
            if options.dtype == "float16":
                raise UsageError(f"{spec} has NaN or Inf in {name} as float16: use --dtype bfloat16 or float32")
            raise UsageError(f"{spec} has NaN or Inf in its weights ({name}): the file is corrupt, download or convert it again")


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
