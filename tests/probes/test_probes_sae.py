"""SAE encode/decode, streamed training (determinism, exact resume, bounded memory), SAELens file round trip."""

from __future__ import annotations

import ast
import io
import itertools
import json
import weakref
from pathlib import Path

import pytest
import torch

from harness.engine.sae_io import hook_name_to_site, load_sae, save_sae, site_to_hook_name
from harness.errors import UsageError
from probes.sae import SAE, SAEConfig, SAETrainConfig, SAETrainer, rebatch, reconstruction, top_latent

D_IN = 8
ALLOWED_IMPORTS = {"numpy", "torch", "scipy", "sklearn", "probes", "__future__"}


def sparse_batches(n_batches: int, n_tokens: int = 256, d_in: int = D_IN, n_features: int = 24, seed: int = 0):
    """Activations built from a few sparse directions plus an offset: what an SAE should find."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n_features, d_in, generator=g)
    dirs /= dirs.norm(dim=1, keepdim=True)
    offset = torch.randn(d_in, generator=g) * 3
    for _ in range(n_batches):
        on = (torch.rand(n_tokens, n_features, generator=g) < 0.1).float()
        mag = torch.rand(n_tokens, n_features, generator=g) * 5
        yield (on * mag) @ dirs + offset


def random_sae(cfg: SAEConfig, seed: int = 0) -> SAE:
    sae = SAE(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec):
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        sae.threshold.copy_(torch.rand(cfg.d_sae, generator=g) * 0.5)
    return sae


@pytest.mark.parametrize("module", ["sae.py", "polysemy.py"])
def test_probes_import_only_allowed_packages(module):
    source = Path(__file__).resolve().parents[2] / "probes" / module
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            roots = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots = {(node.module or "").split(".")[0]}
        else:
            continue
        stdlib = {r for r in roots if r in __import__("sys").stdlib_module_names}
        assert roots - stdlib <= ALLOWED_IMPORTS, roots


def test_encode_matches_the_three_definitions():
    x = torch.randn(5, D_IN)
    for arch, k in (("standard", None), ("jumprelu", None), ("topk", 3)):
        sae = random_sae(SAEConfig(D_IN, 16, architecture=arch, k=k))
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        z = sae.encode(x)
        if arch == "standard":
            expected = torch.relu(pre)
        elif arch == "jumprelu":
            expected = pre * (pre > sae.threshold)
        else:
            r = torch.relu(pre)
            kth = r.topk(3, dim=-1).values[:, -1:]
            expected = torch.where(r >= kth, r, torch.zeros_like(r))
            assert ((z != 0).sum(-1) <= 3).all()
        torch.testing.assert_close(z, expected.detach())
        torch.testing.assert_close(sae(x), (z @ sae.W_dec + sae.b_dec).detach())


def test_apply_b_dec_to_input_off_skips_the_subtraction():
    sae = random_sae(SAEConfig(D_IN, 16, apply_b_dec_to_input=False))
    x = torch.randn(4, D_IN)
    torch.testing.assert_close(sae.encode(x), torch.relu(x @ sae.W_enc + sae.b_enc).detach())


def test_constant_norm_rescale_reads_direction_only():
    sae = random_sae(SAEConfig(D_IN, 16, normalize_activations="constant_norm_rescale"))
    x = torch.randn(4, D_IN)
    torch.testing.assert_close(sae.encode(x), sae.encode(7 * x))
    torch.testing.assert_close(sae(7 * x), 7 * sae(x))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="architecture"):
        SAEConfig(D_IN, 16, architecture="gated")
    with pytest.raises(ValueError, match="k="):
        SAEConfig(D_IN, 16, architecture="topk")
    with pytest.raises(ValueError, match="cannot train"):
        SAETrainConfig(architecture="jumprelu")


def test_top_latent_flags_all_zero_rows():
    z = torch.tensor([[0.0, 2.0, 1.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    idx, val, zero = top_latent(z)
    assert idx.tolist()[0] == 1 and idx.tolist()[2] == 0
    assert val.tolist() == [2.0, 0.0, 3.0]
    assert zero.tolist() == [False, True, False]


def test_training_learns_and_scales_inputs():
    trainer = SAETrainer(D_IN, SAETrainConfig(lr=1e-2, expansion=8, l1=0.3))
    first = next(sparse_batches(1))
    summary = trainer.fit(sparse_batches(150))
    assert trainer.scale == pytest.approx(D_IN**0.5 / float(first.norm(dim=1).mean()), rel=1e-6)
    assert summary.tokens == 150 * 256 and summary.steps == 150
    assert trainer.history[-1].mse < 0.5 * trainer.history[0].mse
    assert summary.explained_variance > 0.5
    norms = trainer.sae.W_dec.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    assert 0 <= summary.dead_fraction <= 1
    # The exported SAE reads raw activations: same latents as the trained one on scaled inputs.
    exported, cfg = trainer.export()
    held_out = list(sparse_batches(151))[-1]  # same features and offset, tokens not trained on
    torch.testing.assert_close(
        exported.encode(held_out), trainer.sae.encode(held_out * trainer.scale).detach(), rtol=1e-4, atol=1e-4
    )
    rec = reconstruction(exported, held_out)
    assert rec.explained_variance > 0.5 and rec.n_tokens == 256
    # MSE in raw units = training MSE / scale^2.
    scaled = reconstruction(trainer.sae, held_out * trainer.scale)
    assert rec.mse == pytest.approx(scaled.mse / trainer.scale**2, rel=1e-4)
    assert rec.l0 == pytest.approx(scaled.l0)


def test_topk_training_keeps_k_latents():
    trainer = SAETrainer(D_IN, SAETrainConfig(architecture="topk", k=4, lr=3e-3))
    trainer.fit(sparse_batches(20))
    assert all(s.l0 <= 4 for s in trainer.history)
    z = trainer.sae.encode(next(sparse_batches(1)) * trainer.scale)
    assert ((z != 0).sum(-1) <= 4).all()


def test_fixed_seed_gives_identical_weights_and_other_seed_differs():
    def train(seed: int) -> SAE:
        t = SAETrainer(D_IN, SAETrainConfig(seed=seed, lr=1e-3))
        t.fit(sparse_batches(10))
        return t.sae

    a, b, c = train(0), train(0), train(1)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.W_dec, c.W_dec)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_training_on_a_device_keeps_everything_there_and_matches_the_cpu(device):
    """The model's GPU trains the SAE (a 7B model's 65k latents): same start, same steps; here on
    the CPU the device path is the default path bit for bit, on CUDA it matches to rounding."""

    def train(on) -> SAETrainer:
        t = SAETrainer(D_IN, SAETrainConfig(seed=0, lr=1e-3), device=on)
        t.fit(sparse_batches(10))
        return t

    base, placed = train(None), train(device)
    assert placed.sae.W_enc.device.type == device and placed.since_fired.device.type == device
    assert all(s["exp_avg"].device.type == device for s in placed.optimizer.state.values())
    exported, _ = placed.export()
    assert exported.W_enc.device.type == "cpu"  # what PS-Eval and save_sae read
    tol = 0 if device == "cpu" else 1e-4
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.allclose(getattr(base.sae, name), getattr(placed.sae, name).cpu(), atol=tol, rtol=tol)
    resumed = SAETrainer(D_IN, SAETrainConfig(seed=0, lr=1e-3), device=device)
    resumed.load_state_dict(torch.load(_saved(placed.state_dict()), weights_only=True, map_location=resumed.device))
    assert resumed.since_fired.device.type == device and resumed.steps == placed.steps


def _saved(state) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("arch", ["standard", "topk"])
def test_resume_from_checkpoint_gives_the_same_weights(arch):
    config = SAETrainConfig(architecture=arch, k=4, lr=1e-3, dead_window=1000)
    whole = SAETrainer(D_IN, config)
    whole.fit(rebatch(sparse_batches(12, n_tokens=100), 128))

    first = SAETrainer(D_IN, config)
    first.fit(rebatch(sparse_batches(12, n_tokens=100), 128), max_tokens=4 * 128)
    assert first.steps == 4
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = SAETrainer(D_IN, config)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    resumed.fit(itertools.islice(rebatch(sparse_batches(12, n_tokens=100), 128), resumed.steps, None))

    assert resumed.steps == whole.steps == 9
    for name, value in whole.sae.state_dict().items():
        assert torch.equal(value, resumed.sae.state_dict()[name]), name
    assert torch.equal(whole.since_fired, resumed.since_fired)
    assert resumed.history == whole.history
    assert resumed.summary() == whole.summary()


def test_checkpoint_with_other_settings_is_refused():
    state = SAETrainer(D_IN, SAETrainConfig(expansion=4)).state_dict()
    with pytest.raises(ValueError, match="checkpoint's settings"):
        SAETrainer(D_IN, SAETrainConfig(expansion=8)).load_state_dict(state)


def test_rebatch_cuts_exact_batches_and_drops_the_tail():
    chunks = [torch.arange(n * 2, dtype=torch.float32).reshape(n, 2) + 100 * i for i, n in enumerate([3, 7, 1, 6])]
    out = list(rebatch(iter(chunks), 4))
    assert [len(b) for b in out] == [4, 4, 4, 4]
    torch.testing.assert_close(torch.cat(out), torch.cat(chunks)[:16])


def test_training_keeps_no_batch_alive():
    alive: list[weakref.ref] = []
    most = 0

    def tracked():
        nonlocal most
        for x in sparse_batches(30):
            alive.append(weakref.ref(x))
            most = max(most, sum(r() is not None for r in alive))
            yield x

    SAETrainer(D_IN).fit(tracked())
    assert most <= 2


def test_dead_fraction_counts_silent_latents():
    trainer = SAETrainer(D_IN, SAETrainConfig(dead_window=300, expansion=2))
    with torch.no_grad():
        trainer.sae.b_enc[:4] = -1e6  # these four can never fire
    trainer.fit(sparse_batches(3))
    assert trainer.dead_fraction() >= 4 / 16
    assert trainer.since_fired[:4].tolist() == [768] * 4


# --- SAELens layout on disk ---------------------------------------------------------


def test_hook_names_map_to_sites_both_ways():
    for hook, site in [
        ("blocks.8.hook_resid_pre", "resid_pre.8"),
        ("blocks.8.hook_attn_out", "attn_out.8"),
        ("blocks.11.hook_mlp_out", "mlp_out.11"),
        ("blocks.0.hook_resid_post", "resid_post.0"),
        ("blocks.3.mlp.hook_post", "mlp_act.3"),
    ]:
        assert hook_name_to_site(hook) == site
        assert site_to_hook_name(site) == hook
    with pytest.raises(UsageError, match="blocks.8.attn.hook_z"):
        hook_name_to_site("blocks.8.attn.hook_z")


@pytest.mark.parametrize("arch,k", [("standard", None), ("jumprelu", None), ("topk", 5)])
def test_save_then_load_gives_equal_encodings(tmp_path, arch, k):
    cfg = SAEConfig(D_IN, 32, architecture=arch, k=k, site="resid_pre.1", model_name="tiny")
    sae = random_sae(cfg)
    save_sae(sae, cfg, tmp_path / "sae")
    assert sorted(p.name for p in (tmp_path / "sae").iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    loaded, loaded_cfg = load_sae(str(tmp_path / "sae"), d_model=D_IN)
    assert loaded_cfg == cfg
    x = torch.randn(20, D_IN)
    torch.testing.assert_close(loaded.encode(x), sae.encode(x).detach(), atol=1e-6, rtol=0)
    # Saving over an existing folder replaces it, leaving no temporary folder behind.
    save_sae(sae, cfg, tmp_path / "sae")
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]


def test_trained_sae_round_trips(tmp_path):
    trainer = SAETrainer(D_IN, SAETrainConfig(lr=1e-3), site="mlp_out.0")
    trainer.fit(sparse_batches(5))
    sae, cfg = trainer.export()
    save_sae(sae, cfg, tmp_path / "ours")
    loaded, _ = load_sae(str(tmp_path / "ours"), d_model=None)
    x = next(sparse_batches(1, seed=3))
    torch.testing.assert_close(loaded.encode(x), sae.encode(x).detach(), atol=1e-6, rtol=0)
    written = json.loads((tmp_path / "ours" / "cfg.json").read_text())
    assert written["hook_name"] == "blocks.0.hook_mlp_out" and written["hook_layer"] == 0
    assert written["metadata"]["hook_name"] == "blocks.0.hook_mlp_out"


def write_saelens_folder(folder: Path, cfg: dict, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    folder.mkdir()
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(tensors, str(folder / "sae_weights.safetensors"))


def saelens_tensors(d_in: int, d_sae: int) -> dict[str, torch.Tensor]:
    return {
        "W_enc": torch.randn(d_in, d_sae),
        "b_enc": torch.randn(d_sae),
        "W_dec": torch.randn(d_sae, d_in),
        "b_dec": torch.randn(d_in),
    }


def test_loads_an_older_saelens_topk_cfg(tmp_path):
    cfg = {
        "d_in": D_IN,
        "d_sae": 16,
        "hook_name": "blocks.2.hook_attn_out",
        "hook_layer": 2,
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 3},
        "apply_b_dec_to_input": False,
        "normalize_activations": None,
        "model_name": "gpt2-small",
        "dtype": "float16",
    }
    write_saelens_folder(tmp_path / "s", cfg, {k: v.half() for k, v in saelens_tensors(D_IN, 16).items()})
    sae, loaded = load_sae(str(tmp_path / "s"), d_model=D_IN)
    assert (loaded.architecture, loaded.k, loaded.site, loaded.apply_b_dec_to_input) == ("topk", 3, "attn_out.2", False)
    assert loaded.normalize_activations == "none" and sae.W_enc.dtype == torch.float32
    assert ((sae.encode(torch.randn(6, D_IN)) != 0).sum(-1) <= 3).all()


def test_loads_a_saelens_6_cfg_with_metadata(tmp_path):
    cfg = {
        "architecture": "jumprelu",
        "d_in": D_IN,
        "d_sae": 16,
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "metadata": {"hook_name": "blocks.5.hook_resid_post", "model_name": "gemma"},
    }
    write_saelens_folder(tmp_path / "s", cfg, {**saelens_tensors(D_IN, 16), "threshold": torch.rand(16)})
    sae, loaded = load_sae(str(tmp_path / "s"), d_model=D_IN)
    assert (loaded.architecture, loaded.site, loaded.model_name) == ("jumprelu", "resid_post.5", "gemma")
    assert sae.threshold.abs().sum() > 0


def test_load_errors_name_the_fix(tmp_path):
    base = {"d_in": D_IN, "d_sae": 16, "hook_name": "blocks.1.hook_resid_pre", "architecture": "standard"}
    write_saelens_folder(tmp_path / "ok", base, saelens_tensors(D_IN, 16))
    with pytest.raises(UsageError, match=r"d_in=8 .* is 64"):
        load_sae(str(tmp_path / "ok"), d_model=64)

    with pytest.raises(UsageError, match="cfg.json"):
        load_sae(str(tmp_path / "missing"), d_model=None)
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "cfg.json").write_text(json.dumps(base))
    with pytest.raises(UsageError, match="sae_weights.safetensors"):
        load_sae(str(tmp_path / "noweights"), d_model=None)

    write_saelens_folder(tmp_path / "gated", {**base, "architecture": "gated"}, saelens_tensors(D_IN, 16))
    with pytest.raises(UsageError, match="architecture 'gated'"):
        load_sae(str(tmp_path / "gated"), d_model=None)

    write_saelens_folder(tmp_path / "hookz", {**base, "hook_name": "blocks.1.attn.hook_z"}, saelens_tensors(D_IN, 16))
    with pytest.raises(UsageError, match="hook_name"):
        load_sae(str(tmp_path / "hookz"), d_model=None)

    write_saelens_folder(tmp_path / "shape", base, saelens_tensors(D_IN, 12))
    with pytest.raises(UsageError, match="W_enc"):
        load_sae(str(tmp_path / "shape"), d_model=None)

    write_saelens_folder(tmp_path / "nothr", {**base, "architecture": "jumprelu"}, saelens_tensors(D_IN, 16))
    with pytest.raises(UsageError, match="threshold"):
        load_sae(str(tmp_path / "nothr"), d_model=None)


def test_hub_source_downloads_the_subfolder(tmp_path, monkeypatch):
    import harness.engine.sae_io as sae_io

    cfg = SAEConfig(D_IN, 16, site="resid_pre.8")
    sae = random_sae(cfg)
    save_sae(sae, cfg, tmp_path / "blocks.8.hook_resid_pre")
    calls = []

    def fake_download(repo_id: str, filename: str, subfolder: str | None = None, **kwargs) -> str:
        calls.append((repo_id, filename, subfolder))
        return str(tmp_path / subfolder / filename)

    monkeypatch.setattr(sae_io, "hf_hub_download", fake_download)
    loaded, loaded_cfg = load_sae("hf://jbloom/GPT2-Small-SAEs-Reformatted/blocks.8.hook_resid_pre", d_model=D_IN)
    assert calls == [
        ("jbloom/GPT2-Small-SAEs-Reformatted", "cfg.json", "blocks.8.hook_resid_pre"),
        ("jbloom/GPT2-Small-SAEs-Reformatted", "sae_weights.safetensors", "blocks.8.hook_resid_pre"),
    ]
    assert loaded_cfg.site == "resid_pre.8"
    with pytest.raises(UsageError, match="hf://ORG/REPO"):
        load_sae("hf://justone", d_model=None)
