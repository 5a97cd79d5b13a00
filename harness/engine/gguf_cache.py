"""GGUF weights: the file's header, read by hand in milliseconds, and the converted-weights cache
(`cache_root()/gguf/<first 16 hex of the sha256>`): converted once into safetensors, with a
manifest of every file's size and sha256, verified at every load and converted again when damaged."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import mmap
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.errors import UsageError
from harness.results.records import write_atomic

log = logging.getLogger(__name__)
_DIGESTS: dict[tuple[str, tuple[int, ...]], str] = {}


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


def source_digest(path: Path) -> str:
    """sha256 of a GGUF file, hashed once per process: `model_fingerprint` and `load_model` both need it."""
    key = (str(path.resolve()), tuple(stat_key(path)))
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


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
        return bytes(self.buf[start : self.pos])

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
        raise UsageError(
            f"cannot read {gguf}: {first_line(e)}; transformers supports GGUF for llama, mistral, gemma3, qwen2 and a few more"
        ) from None
    # The weights are plain float32 now; save_pretrained refuses while the GGUF quantizer is attached.
    setattr(model, "hf_quantizer", None)  # plain attributes of a PreTrainedModel, not submodules
    setattr(model, "is_quantized", False)
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
    """The cache's manifests and stamps, written atomically (a reader never sees half a file)."""
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True))


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
