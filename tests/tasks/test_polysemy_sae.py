"""polysemy_sae: the spec's acceptance criteria 1-7 through the task, on a tiny random GPT-2.

Criteria 1, 2 and 4 are also tested on the probes alone (tests/probes/test_probes_polysemy.py,
tests/probes/test_probes_sae.py); criteria 5 and 6 on the data module (tests/tasks/test_polysemy_data.py).
Here they are checked where the task uses them.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, GPT2Config

from harness import RunContext, UsageError, load_sae, save_sae
from harness.api.task import parse_config
from harness.engine.models import from_hf
from harness.run.runner import RunSpec, run_task
from probes.polysemy import Confusion, compare_top_units
from probes.sae import SAE, SAEConfig, StreamState, batches_from_blocks
from tasks.polysemy_sae import PolysemySAE
from tasks.polysemy_sae.data import SKIP_MULTI_TOKEN, load_pairs
from tasks.polysemy_sae.task import CPU_BATCH, CPU_TOKENS, GPU_BATCH, GPU_TOKENS, Evaluation, PolysemyConfig
from tests.tasks.test_polysemy_data import byte_level_bpe
from tests.tiny_models import tiny_model, tiny_tokenizer

D = 64


def tiny_gpt2(seed: int = 0):
    """GPT-2, 2 layers, d_model 64, with a GPT-2-style byte-level BPE in which every target word is one token."""
    tok = byte_level_bpe()
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_embd=D,
        n_layer=2,
        n_head=4,
        n_inner=96,
        n_positions=128,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = from_hf(AutoModelForCausalLM.from_config(cfg, dtype=torch.float32), tok)
    model.info.fingerprint = f"tiny-gpt2-{seed}"
    return model


@pytest.fixture(scope="module")
def gpt2():
    return tiny_gpt2()


def context(tmp_path, model, seed=0, **kw) -> RunContext:
    return RunContext(
        model=model,
        seed=seed,
        show_progress=False,
        bootstrap=200,
        cache_dir=tmp_path / "cache",
        checkpoint_dir=tmp_path / "checkpoints",
        artifacts_dir=tmp_path / "artifacts",
        log_samples=True,
        **kw,
    )


def config(*args: str) -> PolysemyConfig:
    return PolysemySAE.resolve_config(parse_config(PolysemySAE, list(args)), "cpu")


SMALL = ("tokens=6000", "batch_tokens=512", "expansion=4")


# --- criterion 1: the rates, and undefined rates absent with a note ----------------------------------


def test_metric_counts_give_the_spec_numbers_exactly():
    c = Confusion(tp=30, fp=10, tn=40, fn=20)
    assert c.accuracy == pytest.approx(0.70, abs=1e-9) and c.precision == pytest.approx(0.75, abs=1e-9)
    assert c.recall == pytest.approx(0.60, abs=1e-9) and c.specificity == pytest.approx(0.80, abs=1e-9)
    assert c.f1 == pytest.approx(60 / 90, abs=1e-9)
    assert Confusion(0, 0, 5, 5).precision is None and Confusion(0, 5, 0, 0).recall is None


def planted(labels: np.ndarray, same: np.ndarray) -> Evaluation:
    n = len(labels)
    top = compare_top_units(np.eye(4)[np.zeros(n, int)], np.eye(4)[np.where(same, 0, 1)])
    return Evaluation(
        "resid_pre.1", {m: same for m in ("sae", "random_sae", "raw_resid", "raw_mlp", "probe", "cosine")}, top, np.ones(n), {}
    )


def test_undefined_rates_are_absent_and_noted_not_nan(tmp_path, gpt2):
    labels = np.array([1, 1, 0, 0] * 5)
    notes: list[str] = []
    metrics, counts = PolysemySAE().metrics(
        context(tmp_path, gpt2), planted(labels, np.zeros(20, bool)), labels, np.arange(20) % 10, notes
    )
    assert "sae.precision" not in metrics  # nothing said 'same': TP + FP = 0
    assert any(n.startswith("sae.precision is undefined") for n in notes)
    assert metrics["sae.specificity"].value == 1.0 and metrics["sae.recall"].value == 0.0
    assert counts["sae"] == {"tp": 0, "fp": 0, "tn": 10, "fn": 10}
    assert all(np.isfinite([m.value, m.ci_low, m.ci_high]).all() for m in metrics.values())


# --- criterion 2: planted latents and a constant argmax, through the task -------------------------


def test_planted_verdicts_give_accuracy_one(tmp_path, gpt2):
    labels = np.array([1, 0] * 10)
    metrics, _ = PolysemySAE().metrics(context(tmp_path, gpt2), planted(labels, labels == 1), labels, np.arange(20) % 10, [])
    assert metrics["sae.accuracy"].value == 1.0 and metrics["sae.f1"].value == 1.0
    assert metrics["sae.accuracy"].ci_low == 1.0  # every resample is perfect too


def test_intervals_resample_words_and_n_counts_the_words_of_each_denominator(tmp_path, gpt2):
    """Five words, four pairs each (two per label): the pairs of a word share its contexts."""
    labels = np.array([1, 1, 0, 0] * 5)
    words = np.repeat(np.arange(5), 4)
    same = np.array([True, True, False, False, True, True, True, True] * 2 + [False, False, False, False])
    metrics, _ = PolysemySAE().metrics(context(tmp_path, gpt2), planted(labels, same), labels, words, [])
    assert metrics["sae.accuracy"].n == 5 and metrics["sae.specificity"].n == 5 and metrics["sae.recall"].n == 5
    assert metrics["sae.precision"].n == 4  # the fifth word's pairs are never said "same"
    # Words 1 and 3 are wholly wrong on their different-sense pairs: resampling words sees that they move together.
    row_wise = RunContext(model=gpt2, seed=0, show_progress=False, bootstrap=200).metric((~same[labels == 0]).astype(float))
    assert metrics["sae.specificity"].ci_high - metrics["sae.specificity"].ci_low > row_wise.ci_high - row_wise.ci_low


def constant_sae(folder, site="resid_pre.1") -> None:
    """An SAE whose latent 3 is the only one that ever fires: its top latent never changes."""
    cfg = SAEConfig(d_in=D, d_sae=16, site=site)
    sae = SAE(cfg)
    with torch.no_grad():
        sae.b_enc[3] = 1.0
    save_sae(sae, cfg, folder)


def test_constant_top_latent_is_the_trivial_line_end_to_end(tmp_path, gpt2):
    constant_sae(tmp_path / "const")
    result = PolysemySAE().run(gpt2, config(f"sae={tmp_path / 'const'}"), context(tmp_path, gpt2))
    m = result.metrics
    assert m["sae.recall"].value == 1.0 and m["sae.specificity"].value == 0.0 and m["sae.accuracy"].value == 0.5
    assert result.details["sae_info"]["source"] == str(tmp_path / "const")
    assert result.details["site"] == "resid_pre.1"


@pytest.mark.parametrize("null", ["zeros", "random"])
def test_an_sae_that_learnt_nothing_does_not_earn_the_finding(tmp_path, gpt2, null):
    """The null SAEs of the finding's own test: all zero (says "same" everywhere), and random latents."""
    from dataclasses import asdict

    from harness.report.findings import HOLDS, parse_finding, verdict

    cfg = SAEConfig(d_in=D, d_sae=16 * D, site="resid_pre.1")
    sae = SAE(cfg) if null == "zeros" else SAE.initialised(cfg, seed=7)
    save_sae(sae, cfg, tmp_path / null)
    result = PolysemySAE().run(gpt2, config(f"sae={tmp_path / null}"), context(tmp_path, gpt2))
    cell = verdict(parse_finding(asdict(PolysemySAE.finding)), result.metrics)
    assert cell.verdict != HOLDS and not any(f.verdict == HOLDS for f in cell.facets), cell.reason
    if null == "zeros":
        m = result.metrics
        assert (m["sae.accuracy"].value, m["sae.specificity"].value, m["sae.recall"].value) == (0.5, 0.0, 1.0)


# --- criterion 3: end to end on a tiny random GPT-2, trained SAE, through the runner ---------------


def test_end_to_end_trains_an_sae_and_reports_every_method(tmp_path, gpt2, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    cfg = config("sae=train", "tokens=50000")
    spec = RunSpec(
        models=["tiny"], tasks=["polysemy_sae"], output_dir=tmp_path, show_progress=False, log_samples=True, bootstrap=200
    )
    start = time.perf_counter()
    results = run_task(gpt2, PolysemySAE, cfg, tmp_path / "tiny" / "polysemy_sae.json", spec)
    assert time.perf_counter() - start < 60
    d = results.details
    assert d["site"] == "resid_pre.1"  # round(2 * 2 / 3) = 1
    n_valid = d["n_valid"]
    assert n_valid == 100 and d["n_skipped"] == 0  # every target is one token in this vocabulary
    for method, c in d["counts"].items():
        assert c["tp"] + c["fn"] == c["tn"] + c["fp"] == n_valid // 2, method
    folder = tmp_path / "tiny" / "polysemy_sae"
    samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    words = {label: {s["word"] for s in samples if s["label"] == label} for label in (0, 1)}
    said_same = {s["word"] for s in samples if s["said_same"]["sae"]}
    n_units = {
        "accuracy": len(words[0] | words[1]),
        "f1": len(words[0] | words[1]),
        "recall": len(words[1]),
        "specificity": len(words[0]),
        "precision": len(said_same),
    }
    for key, m in results.metrics.items():
        assert m.ci_low <= m.ci_high, key
        if key.startswith("sae.") and key.split(".")[1] in n_units:  # n: the words behind the rate's denominator
            assert 0 <= m.value <= 1 and m.n == n_units[key.split(".")[1]], key
    assert -1 <= results.metrics["sae.accuracy_minus_random_sae"].value <= 1
    assert results.metrics["sae.specificity_minus_raw_resid"].n == len(words[0])
    assert results.metrics["sae.specificity_minus_random_sae"].n == len(words[0])
    for method in ("sae", "random_sae", "raw_resid", "raw_mlp", "probe", "cosine"):
        assert f"{method}.accuracy" in results.metrics and f"{method}.specificity" in results.metrics
    info = d["sae_info"]
    assert info["train_tokens"] >= 50_000 and info["d_sae"] == 16 * D and info["arch"] == "standard"
    assert 0 <= info["dead_fraction"] <= 1 and info["l0"] > 0 and info["mse"] > 0
    assert results.task.config["tokens"] == 50_000 and results.task.config["batch_tokens"] == CPU_BATCH
    assert {"confusion.png", "samples.jsonl"} <= {p.name for p in folder.iterdir()}
    assert len(samples) == n_valid and {"id", "word", "label", "k1", "k2", "v1", "v2"} <= set(samples[0])
    assert [s["k1"] == s["k2"] for s in samples] == [s["said_same"]["sae"] for s in samples]
    assert not (tmp_path / "tiny" / ".polysemy_sae.checkpoints").exists()  # removed once the run finished


# --- criterion 4: our saved SAE loads back through sae=PATH; a wrong width is a clear error --------


def test_cached_sae_loads_through_sae_path_with_equal_results(tmp_path, gpt2):
    trained = PolysemySAE().run(gpt2, config(*SMALL), context(tmp_path, gpt2))
    folder = trained.details["sae_info"]["path"]
    loaded = PolysemySAE().run(gpt2, config(f"sae={folder}"), context(tmp_path / "b", gpt2))
    cfg = json.loads((tmp_path / "cache" / "sae").glob("*/cfg.json").__next__().read_text())
    assert cfg["hook_name"] == "blocks.1.hook_resid_pre" and cfg["d_in"] == D  # SAELens' spelling
    assert loaded.details["site"] == "resid_pre.1"  # taken from the SAE's cfg.json
    for key in trained.metrics:
        assert loaded.metrics[key].value == trained.metrics[key].value, key


def test_sae_of_another_width_or_site_is_a_usage_error(tmp_path, gpt2):
    cfg = SAEConfig(d_in=D * 2, d_sae=16, site="resid_pre.1")
    save_sae(SAE(cfg), cfg, tmp_path / "wide")
    with pytest.raises(UsageError, match="d_in=128 but the model's width"):
        PolysemySAE().run(gpt2, config(f"sae={tmp_path / 'wide'}"), context(tmp_path, gpt2))
    constant_sae(tmp_path / "l0", site="resid_pre.0")
    with pytest.raises(UsageError, match="trained at resid_pre.0"):
        PolysemySAE().run(gpt2, config(f"sae={tmp_path / 'l0'}", "layer=1"), context(tmp_path, gpt2))
    with pytest.raises(UsageError, match="not at a attn_out site"):
        PolysemySAE().run(gpt2, config(f"sae={tmp_path / 'l0'}", "site=attn_out"), context(tmp_path, gpt2))


def test_loaded_sae_sets_the_site_when_none_is_given(tmp_path, gpt2):
    constant_sae(tmp_path / "attn", site="attn_out.0")
    result = PolysemySAE().run(gpt2, config(f"sae={tmp_path / 'attn'}"), context(tmp_path, gpt2))
    assert result.details["site"] == "attn_out.0"


# --- criterion 5: target locating; split words are counted in n_skipped ---------------------------


def test_split_target_words_are_counted_as_skipped(tmp_path, gpt2):
    tok = gpt2.tokenizer
    rows = [p.to_json() for p in load_pairs()[:20]]
    for i, word in enumerate(["zugzwangs", "quokkas"]):  # not single tokens in this vocabulary
        assert len(tok(" " + word, add_special_tokens=False)["input_ids"]) > 1
        c1, c2 = f"The {word} were in the old book.", f"Nobody had seen {word} in town."
        rows.append(
            {
                **rows[0],
                "id": f"split-{i}",
                "target_word": word,
                "context_1": c1,
                "context_2": c2,
                "target_word_location_1": {"char_start": 4, "char_end": 4 + len(word)},
                "target_word_location_2": {"char_start": 16, "char_end": 16 + len(word)},
                "label": i,
            }
        )
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = PolysemySAE().pairs(gpt2, config(f"source=file:{path}"), context(tmp_path, gpt2))
    assert (pairs.n_total, pairs.n_skipped, pairs.skip_reasons) == (22, 2, {SKIP_MULTI_TOKEN: 2})
    assert not {"split-0", "split-1"} & set(pairs.ids) and len(pairs.ids) == 20
    kept = PolysemySAE().pairs(gpt2, config(f"source=file:{path}", "multi_token=last"), context(tmp_path, gpt2))
    assert kept.n_skipped == 0 and {"split-0", "split-1"} <= set(kept.ids)


def test_a_vocabulary_that_splits_every_word_of_one_label_is_a_usage_error(tmp_path):
    model = from_hf(tiny_model("llama", num_hidden_layers=2), tiny_tokenizer())
    with pytest.raises(UsageError, match="multi_token=last"):
        PolysemySAE().pairs(model, config(), context(tmp_path, model))
    kept = PolysemySAE().pairs(model, config("multi_token=last"), context(tmp_path, model))
    assert kept.n_skipped == 0 and len(kept.ids) == 100


# --- criterion 6: a local file of the PS-Eval shape runs through the task --------------------------


def test_pairs_from_a_local_file_keep_their_labels(tmp_path, gpt2):
    path = tmp_path / "mine.jsonl"
    rows = [p.to_json() for p in load_pairs()[:20]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    constant_sae(tmp_path / "const")
    result = PolysemySAE().run(gpt2, config(f"source=file:{path}", f"sae={tmp_path / 'const'}"), context(tmp_path, gpt2))
    assert result.details["n_pairs"] == 20
    assert sum(r["label"] for r in rows) == result.details["counts"]["sae"]["tp"]  # constant: every same pair is a TP


# --- criterion 7: same seed, same SAE and metrics; another seed, another SAE ------------------------


def test_same_seed_gives_identical_weights_and_metrics(tmp_path, gpt2):
    runs = [
        PolysemySAE().run(gpt2, config(*SMALL), context(tmp_path / name, gpt2, seed=seed))
        for name, seed in (("a", 0), ("b", 0), ("c", 1))
    ]
    weights = [load_file(f"{r.details['sae_info']['path']}/sae_weights.safetensors") for r in runs]
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name
    assert not torch.equal(weights[0]["W_enc"], weights[2]["W_enc"])
    assert {k: m.model_dump() for k, m in runs[0].metrics.items()} == {k: m.model_dump() for k, m in runs[1].metrics.items()}


# --- caching, checkpoints and resuming -------------------------------------------------------------


def test_finished_sae_is_reused_from_the_cache(tmp_path, gpt2, monkeypatch):
    first = PolysemySAE().run(gpt2, config(*SMALL), context(tmp_path, gpt2))
    assert first.details["sae_info"]["cached"] is False

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the SAE was cached")

    monkeypatch.setattr("probes.sae.SAETrainer.step", no_training)
    again = PolysemySAE().run(gpt2, config(*SMALL), context(tmp_path, gpt2))
    assert again.details["sae_info"]["cached"] is True
    assert again.details["sae_info"]["train_tokens"] == first.details["sae_info"]["train_tokens"]
    assert again.metrics["sae.specificity"] == first.metrics["sae.specificity"]
    with pytest.raises(AssertionError, match="trained again"):  # another config: another cache folder
        PolysemySAE().run(gpt2, config(*SMALL, "l1=1.0"), context(tmp_path, gpt2))


def test_killed_training_resumes_from_its_checkpoint_to_the_same_weights(tmp_path, gpt2, monkeypatch):
    from probes.sae import SAETrainer

    args = (*SMALL, "checkpoint_every=3")
    streamed: list[int] = []
    real_stream, real_step = RunContext.stream, SAETrainer.step
    monkeypatch.setattr(
        RunContext,
        "stream",
        lambda self, texts, site, n=None: (streamed.append(len(texts)), real_stream(self, texts, site, n))[1],
    )
    whole = PolysemySAE().run(gpt2, config(*args), context(tmp_path / "whole", gpt2))
    whole_calls = len(streamed)

    def dies_at_step_8(self, x):
        if self.steps == 8:
            raise KeyboardInterrupt
        return real_step(self, x)

    monkeypatch.setattr(SAETrainer, "step", dies_at_step_8)
    ctx = context(tmp_path / "killed", gpt2)
    with pytest.raises(KeyboardInterrupt):
        PolysemySAE().run(gpt2, config(*args), ctx)
    saved = list((tmp_path / "killed" / "checkpoints").glob("sae-*.pt"))
    assert len(saved) == 1 and torch.load(saved[0], weights_only=True)["trainer"]["steps"] == 6
    monkeypatch.setattr(SAETrainer, "step", real_step)
    streamed.clear()
    resumed = PolysemySAE().run(gpt2, config(*args), ctx)
    a = load_file(f"{whole.details['sae_info']['path']}/sae_weights.safetensors")
    b = load_file(f"{resumed.details['sae_info']['path']}/sae_weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(streamed) < whole_calls  # blocks trained on before the checkpoint are not streamed again
    assert resumed.metrics["sae.specificity"] == whole.metrics["sae.specificity"]


def test_blocks_already_trained_on_are_not_computed_again():
    blocks = [torch.full((5, 2), float(i)) for i in range(6)]
    called: list[int] = []

    def thunks():
        for i, b in enumerate(blocks):
            yield lambda i=i, b=b: (called.append(i), b)[1]

    whole = list(batches_from_blocks(thunks(), 4, StreamState()))
    assert len(whole) == 7  # 30 rows: 7 batches of 4, the last 2 rows dropped
    state = StreamState()
    it = batches_from_blocks(thunks(), 4, state)
    first = [next(it) for _ in range(3)]
    assert (state.blocks, len(state.pending)) == (3, 3)  # 15 rows read, 12 trained on
    called.clear()
    rest = list(batches_from_blocks(thunks(), 4, StreamState.from_dict(state.to_dict())))
    assert called == [3, 4, 5]
    assert all(torch.equal(x, y) for x, y in zip(first + rest, whole)) and len(first + rest) == 7


# --- defaults, site choice, sweeps and option errors -----------------------------------------------


def test_defaults_are_settled_per_device_and_explicit_values_kept():
    assert (config().tokens, config().batch_tokens) == (CPU_TOKENS, CPU_BATCH)
    gpu = PolysemySAE.resolve_config(parse_config(PolysemySAE, []), "cuda")
    assert (gpu.tokens, gpu.batch_tokens) == (GPU_TOKENS, GPU_BATCH) == (2_000_000, 4096)
    assert PolysemySAE.resolve_config(parse_config(PolysemySAE, ["tokens=777"]), "cuda").tokens == 777
    assert dataclasses.asdict(PolysemyConfig())["expansion"] == 16


def test_layer_sweep_reports_every_layer_and_plots_specificity(tmp_path, gpt2):
    ctx = context(tmp_path, gpt2)
    result = PolysemySAE().run(gpt2, config(*SMALL, "layers=0,1"), ctx)
    assert result.details["layers"] == [0, 1] and set(result.details["per_layer"]) == {"0", "1"}
    assert result.details["sae_info_per_layer"]["0"]["site"] == "resid_pre.0"
    assert "specificity_by_layer.png" in ctx.artifacts and "confusion.png" in ctx.artifacts
    assert result.metrics["sae.specificity"].model_dump() == result.details["per_layer"]["1"]["sae.specificity"]


@pytest.mark.parametrize(
    "args, match",
    [
        (["site=embed"], "site=embed: use one of"),
        (["layer=5"], "past the model's depth"),
        (["site=resid_pre.0", "layer=1"], "disagree"),
        (["layers=0,9"], "past the model's depth"),
    ],
)
def test_bad_sites_are_usage_errors(tmp_path, gpt2, args, match):
    with pytest.raises(UsageError, match=match):
        PolysemySAE().run(gpt2, config(*args), context(tmp_path, gpt2))


def test_task_imports_only_the_public_harness_api():
    import ast
    from pathlib import Path

    source = Path(__file__).resolve().parents[2] / "tasks" / "polysemy_sae" / "task.py"
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("harness."):
            raise AssertionError(f"task.py imports {node.module}")


def test_loaded_sae_from_the_hub_layout_is_read_without_saelens(tmp_path):
    constant_sae(tmp_path / "blocks.1.hook_resid_pre")
    sae, cfg = load_sae(str(tmp_path / "blocks.1.hook_resid_pre"), D)
    assert cfg.site == "resid_pre.1" and int(sae.encode(torch.randn(3, D)).argmax(-1).unique()) == 3
