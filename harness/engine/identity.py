"""Which weights a model spec names: a bundled alias, a hub id, a folder or a GGUF file; its results
folder name, its fingerprint (the hub commit, the GGUF's sha256, a folder's file stats) and
quantisation, and the one-line errors of the hub."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from harness.engine.bundled import BUNDLED
from harness.engine.gguf_cache import first_line, gguf_quantization, gguf_to_folder, read_gguf_header, source_digest
from harness.engine.options import LoadOptions, quantization_name
from harness.errors import UsageError

log = logging.getLogger(__name__)


HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


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
    chain: list[BaseException] = []
    cur: BaseException | None = e
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
    if (
        os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True", "ON", "on")
        or "offline" in text.lower()
        or "LocalEntryNotFoundError" in names
        or "couldn't connect" in text
    ):
        return UsageError(
            f"{spec} is not in the local Hugging Face cache and the hub cannot be reached: "
            "download it first with `hf download " + spec + "` or pass a local folder"
        )
    return UsageError(f"cannot load {spec}: {first_line(e)}")
