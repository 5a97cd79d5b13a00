"""Sparse autoencoders on disk, in SAELens' layout: a folder with `cfg.json` and
`sae_weights.safetensors` (W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in],
b_dec [d_in], and threshold [d_sae] for JumpReLU).

Reading that layout ourselves, with the safetensors library, lets a task load any public
SAELens SAE without installing SAELens (and its pinned dependencies), and lets SAELens
users load ours. The file IO lives here rather than in `probes/sae.py` because probes
import only numpy, torch, scipy and scikit-learn.

Sources: a local folder, or `hf://ORG/REPO/SUBDIR` (the SAE's folder inside a hub model
repository, as SAELens releases are organised: e.g.
`hf://jbloom/GPT2-Small-SAEs-Reformatted/blocks.8.hook_resid_pre`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from harness.engine.finite import finite
from harness.errors import UsageError
from probes.sae import ARCHITECTURES, NORMALIZATIONS, SAE, SAEConfig

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"

# TransformerLens hook names (what SAELens records) <-> our site kinds.
HOOK_TO_KIND = {
    "hook_resid_pre": "resid_pre",
    "hook_resid_post": "resid_post",
    "hook_attn_out": "attn_out",
    "hook_mlp_out": "mlp_out",
    "mlp.hook_post": "mlp_act",
}
KIND_TO_HOOK = {kind: hook for hook, kind in HOOK_TO_KIND.items()}
HOOK_NAME = re.compile(r"^blocks\.(\d+)\.(" + "|".join(re.escape(h) for h in HOOK_TO_KIND) + r")$")
SITE_NAME = re.compile(r"^(" + "|".join(KIND_TO_HOOK) + r")\.(\d+)$")


def hook_name_to_site(hook_name: str) -> str:
    """`blocks.8.hook_resid_pre` -> `resid_pre.8` (and attn_out, mlp_out, resid_post, mlp_act)."""
    m = HOOK_NAME.match(hook_name)
    if not m:
        accepted = ", ".join(f"blocks.L.{h}" for h in HOOK_TO_KIND)
        raise UsageError(f"SAE hook_name '{hook_name}' has no site here: use an SAE trained at one of {accepted}")
    return f"{HOOK_TO_KIND[m.group(2)]}.{m.group(1)}"


def site_to_hook_name(site: str) -> str:
    """`resid_pre.8` -> `blocks.8.hook_resid_pre`, the inverse of hook_name_to_site."""
    m = SITE_NAME.match(site)
    if not m:
        raise UsageError(f"site '{site}' has no SAELens hook name: use one of {', '.join(k + '.L' for k in KIND_TO_HOOK)}")
    return f"blocks.{m.group(2)}.{KIND_TO_HOOK[m.group(1)]}"


def _fetch(source: str) -> Path:
    """The local folder holding the SAE's two files, downloading them for an hf:// source."""
    if not source.startswith("hf://"):
        folder = Path(source)
        if not (folder / CFG_FILE).is_file():
            raise UsageError(f"no {CFG_FILE} in SAE folder '{source}': point sae= at a folder saved by SAELens or save_sae")
        return folder
    parts = source[len("hf://") :].strip("/").split("/")
    if len(parts) < 2:
        raise UsageError(f"SAE source '{source}' is not hf://ORG/REPO or hf://ORG/REPO/SUBDIR: name the repository")
    repo_id, subfolder = "/".join(parts[:2]), "/".join(parts[2:]) or None
    paths = []
    for filename in (CFG_FILE, WEIGHTS_FILE):
        try:
            paths.append(Path(hf_hub_download(repo_id, filename, subfolder=subfolder)))
        except (OSError, EntryNotFoundError) as e:
            raise UsageError(
                f"cannot fetch {filename} of {source} ({type(e).__name__}): check the repository and "
                f"folder names, or download it while online (HF_HUB_OFFLINE unset)"
            ) from e
    return paths[0].parent


def _config(raw: dict[str, Any], source: str) -> SAEConfig:
    """Our SAEConfig from SAELens' cfg.json, whose versions spell things differently:
    `architecture` (standard|jumprelu|topk, newer) or `activation_fn_str` (relu|topk, older);
    k in `activation_fn_kwargs.k` (older) or `k` (newer); hook_name and model_name at the
    top level (before 6.0) or inside `metadata` (6.0 on)."""
    act = raw.get("activation_fn_str") or "relu"
    arch = raw.get("architecture") or ("topk" if act == "topk" else "standard")
    if arch == "standard" and act == "topk":
        arch = "topk"
    if arch not in ARCHITECTURES or act not in ("relu", "topk"):
        raise UsageError(
            f"SAE {source} has architecture '{arch}' (activation '{act}'): only "
            f"{', '.join(ARCHITECTURES)} are supported; use an SAE of one of those"
        )
    k = (raw.get("activation_fn_kwargs") or {}).get("k", raw.get("k")) if arch == "topk" else None
    norm = raw.get("normalize_activations") or "none"
    if norm not in NORMALIZATIONS:
        raise UsageError(f"SAE {source} has normalize_activations '{norm}': only {', '.join(NORMALIZATIONS)} are supported")
    metadata = raw.get("metadata") or {}
    hook_name = raw.get("hook_name") or metadata.get("hook_name")
    try:
        return SAEConfig(
            d_in=int(raw["d_in"]),
            d_sae=int(raw["d_sae"]),
            architecture=arch,
            k=None if k is None else int(k),
            apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
            normalize_activations=norm,
            site=None if hook_name is None else hook_name_to_site(hook_name),
            model_name=raw.get("model_name") or metadata.get("model_name"),
        )
    except (KeyError, ValueError) as e:
        raise UsageError(f"SAE {source} has an unusable {CFG_FILE} ({e}): it needs d_in, d_sae and, for topk, k") from e


def load_sae(source: str, d_model: int | None = None) -> tuple[SAE, SAEConfig]:
    """Load an SAE saved in SAELens' layout from a folder or `hf://ORG/REPO/SUBDIR`, as float32.

    d_model: the model's width at the SAE's site; a different d_in is an error naming both.
    """
    folder = _fetch(source)
    try:
        raw = json.loads((folder / CFG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise UsageError(f"{folder / CFG_FILE} is not JSON ({type(e).__name__}): re-save the SAE") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{folder / CFG_FILE} holds a {type(raw).__name__}, not SAELens' config object: re-save the SAE")
    for key in ("d_in", "d_sae"):
        if isinstance(raw.get(key), bool) or not isinstance(raw.get(key), int) or raw[key] < 1:
            raise UsageError(
                f"{folder / CFG_FILE}: {key} is {str(raw.get(key))[:40]!r}, not a positive whole number: re-save the SAE"
            )
    cfg = _config(raw, source)
    if d_model is not None and cfg.d_in != d_model:
        raise UsageError(
            f"SAE {source} has d_in={cfg.d_in} but the model's width at its site is {d_model}: "
            f"use an SAE trained on this model, or sae=train"
        )
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise UsageError(f"no {WEIGHTS_FILE} beside {CFG_FILE} in {source}: copy the SAE's weights file there")
    with torch.device("meta"):  # the shapes cfg.json implies, without allocating what it declares
        expected = {name: tuple(t.shape) for name, t in SAE(cfg).tensors().items()}
    try:  # the weights' header first: a cfg.json that declares more than the file holds allocates nothing
        with safe_open(str(weights), framework="pt") as f:
            stored = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError) as e:
        raise UsageError(f"cannot read {weights} ({first_line(e)}): re-download or re-save the SAE") from None
    for name, shape in expected.items():
        if name not in stored:
            raise UsageError(f"{weights} has no tensor '{name}', which a {cfg.architecture} SAE needs: re-save the SAE")
        if stored[name] != shape:
            raise UsageError(
                f"{weights}: {name} has shape {stored[name]}, but {CFG_FILE} "
                f"(d_in={cfg.d_in}, d_sae={cfg.d_sae}) implies {shape}: the two files do not belong together"
            )
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise UsageError(f"cannot read {weights} ({first_line(e)}): re-download or re-save the SAE") from None
    for name in expected:
        if not tensors[name].is_floating_point() or not finite(tensors[name]):
            raise UsageError(
                f"{weights}: {name} holds NaN, infinite or non-float values, so every number computed "
                "from the SAE would be meaningless: re-download or re-train the SAE"
            )
    sae = SAE(cfg)
    with torch.no_grad():
        for name in expected:
            getattr(sae, name).copy_(tensors[name].to(torch.float32))
    return sae, cfg


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _cfg_json(cfg: SAEConfig) -> dict[str, Any]:
    """cfg.json in SAELens' spelling, with both the newer (`architecture`, `k`, `metadata`)
    and older (`activation_fn_str`, `activation_fn_kwargs`, top-level hook fields) fields,
    so either version reads it."""
    topk = cfg.architecture == "topk"
    hook_name = None if cfg.site is None else site_to_hook_name(cfg.site)
    hook = {
        "model_name": cfg.model_name,
        "hook_name": hook_name,
        "hook_layer": None if hook_name is None else int(hook_name.split(".")[1]),
        "hook_head_index": None,
    }
    out: dict[str, Any] = {
        "architecture": cfg.architecture,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": "float32",
        "device": "cpu",
        **hook,
        "metadata": hook,
        "activation_fn_str": "topk" if topk else "relu",
        "activation_fn_kwargs": {"k": cfg.k} if topk else {},
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "finetuning_scaling_factor": False,
        "normalize_activations": cfg.normalize_activations,
    }
    if topk:
        out["k"] = cfg.k
    return out


def save_sae(sae: SAE, cfg: SAEConfig, folder: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write `folder` with cfg.json and sae_weights.safetensors, atomically: both files go
    into a temporary folder beside it, which is then renamed into place, so a reader never
    sees one file without the other (an existing folder is replaced).

    extra: {file name: JSON-able object} written into the folder with them (a training record).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        (tmp / CFG_FILE).write_text(json.dumps(_cfg_json(cfg), indent=2))
        save_file({k: v.contiguous().to(torch.float32) for k, v in sae.tensors().items()}, str(tmp / WEIGHTS_FILE))
        for name, data in (extra or {}).items():
            (tmp / Path(name).name).write_text(json.dumps(data, indent=1))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a saved SAE is ordinary output
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            os.replace(folder, old / folder.name)
            os.replace(tmp, folder)
            shutil.rmtree(old)
        else:
            os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder
