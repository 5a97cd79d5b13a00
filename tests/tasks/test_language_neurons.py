"""language_neurons: the spec's acceptance criteria on the shipped data, tiny random models and local hub files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness.api.context import RunContext
from harness.api.task import parse_config
from harness.engine.models import from_hf
from harness.engine.sites import collect, hook_site, n_linear_units, parse_site
from harness.errors import UsageError
from harness.run.runner import RunSpec, run_task
from tasks.language_neurons import (
    DATA,
    FLORES,
    LANGS,
    LanguageIdentifier,
    LanguageNeurons,
    UnitSpace,
    forcing_edits,
    load_hub,
    load_shipped,
    pool_mlp_acts,
    pool_units,
    score_languages,
    unit_sites,
)
from tests.tiny_models import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def tiny():
    return from_hf(tiny_model("llama"), tiny_tokenizer())


@pytest.fixture(scope="module")
def corpus():
    return load_shipped()


def test_shipped_sample_is_parallel_and_split(corpus):
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == list(range(1, 101))
    assert all(set(r) == {"id", *LANGS} for r in rows)
    for L in LANGS:
        assert len(corpus.score[L]) == 80 and len(corpus.heldout[L]) == 20
        assert len(set(r[L] for r in rows)) == 100  # no duplicates
    assert all(8 <= len(r["en"].split()) <= 25 for r in rows)
    assert corpus.sources == [r["en"] for r in rows[80:]]


def test_language_identifier_recognises_the_shipped_sample(corpus):
    # Checks the detector and our translations at once: >= 95% of rows per language.
    identify = LanguageIdentifier()
    assert identify.name.startswith("lingua-language-detector")
    for L in LANGS:
        found = identify(corpus.score[L] + corpus.heldout[L])
        assert np.mean([f == L for f in found]) >= 0.95, L
    assert identify(["", "ok then", "これ"]) == ["unknown"] * 3


def test_pooling_is_the_mean_over_real_tokens_for_any_batch_size(tiny, corpus):
    texts = corpus.score["en"][:5] + corpus.score["ja"][:3] + ["Short."]
    one, widths = pool_mlp_acts(RunContext(model=tiny, batch_size=1, show_progress=False), texts, "pool")
    eight, _ = pool_mlp_acts(RunContext(model=tiny, batch_size=8, show_progress=False), texts, "pool")
    assert widths == [96] * tiny.n_layers and one.shape == (len(texts), 96 * tiny.n_layers)
    torch.testing.assert_close(one, eight, atol=1e-5, rtol=0)
    per_token = collect(tiny, texts, [f"mlp_act.{L}" for L in range(tiny.n_layers)], positions="all", batch_size=1)
    for L in range(tiny.n_layers):
        means = torch.stack([a.mean(0) for a in per_token[f"mlp_act.{L}"]])
        torch.testing.assert_close(eight[:, 96 * L : 96 * (L + 1)], means, atol=1e-5, rtol=0)


def test_planted_japanese_neuron_is_found(corpus):
    # The tiny tokenizer is byte-level, so Japanese and Chinese share every single token;
    # a token *pair* (e.g. the first two bytes of a hiragana) is what occurs only in ja.
    model = from_hf(tiny_model("llama", num_hidden_layers=2), tiny_tokenizer())
    tok = model.tokenizer
    V = len(tok)
    texts = [t for L in LANGS for t in corpus.score[L]]
    labels = np.array([j for j, L in enumerate(LANGS) for _ in corpus.score[L]])
    ids = tok(texts, add_special_tokens=True)["input_ids"]
    pairs = [{a * V + b for a, b in zip(x[:-1], x[1:])} for x in ids]
    seen = {L: set().union(*(pairs[i] for i in np.flatnonzero(labels == j))) for j, L in enumerate(LANGS)}
    ja_only = torch.tensor(sorted(seen["ja"] - set().union(*(seen[L] for L in LANGS if L != "ja"))))
    assert len(ja_only) > 0

    def plant(act):
        x = model.current_batch.input_ids
        hit = torch.zeros(x.shape, dtype=act.dtype)
        hit[:, 1:] = torch.isin(x[:, :-1] * V + x[:, 1:], ja_only).to(act.dtype)
        act = act.clone()
        act[..., 7] += 5.0 * hit
        return act

    handle = hook_site(model, parse_site("mlp_act.0", model.n_layers), plant)
    try:
        pooled, widths = pool_mlp_acts(RunContext(model=model, batch_size=16, show_progress=False), texts, "pool")
    finally:
        handle.remove()
    scores = score_languages(pooled, labels, k=3)
    ja = LANGS.index("ja")
    assert scores.top["ja"][0] == 7 and scores.ap[ja, 7] > 0.95
    assert all(7 not in scores.top[L] for L in LANGS if L != "ja")
    assert unit_sites(scores.top["ja"][:1], widths) == [("mlp_act.0", 7)]
    # the forcing value is the median of the planted unit over Japanese sentences: it carries the +5
    assert scores.force[ja, 7] > np.median(pooled[labels != ja, 7].numpy()) + 0.5


def test_forcing_hook_sets_units_at_every_step_and_leaves_the_rest(tiny):
    widths = [96] * tiny.n_layers
    units = np.array([3, 50, 100, 101, 250])
    values = np.array([1.5, -2.0, 0.25, 3.0, 7.0], dtype=np.float32)
    edits = forcing_edits(units, values, widths)
    assert [e.site for e in edits] == ["mlp_act.0", "mlp_act.1", "mlp_act.2"]
    assert edits[1].dims == [4, 5] and edits[1].position == "all" and edits[1].op == "set"
    seen = {L: [] for L in range(tiny.n_layers)}
    modules = [tiny.blocks[L].mlp.down_proj for L in range(tiny.n_layers)]
    n_hooks = [len(m._forward_pre_hooks) for m in modules]

    def watch(L, slot):
        def fn(act):
            seen[L].append((slot, act.detach().clone()))

        return fn

    sites = [parse_site(f"mlp_act.{L}", tiny.n_layers) for L in range(tiny.n_layers)]
    before = [hook_site(tiny, s, watch(L, "before")) for L, s in enumerate(sites)]
    try:
        ctx = RunContext(model=tiny, show_progress=False)
        with ctx.intervene(edits):
            after = [hook_site(tiny, s, watch(L, "after")) for L, s in enumerate(sites)]
            try:
                bos = tiny.tokenizer.bos_token_id
                ctx.generate([[bos]] * 3 + [[bos, 40, 41]], 6, temperature=0.8, seed=1)
            finally:
                for h in after:
                    h.remove()
    finally:
        for h in before:
            h.remove()
    assert [len(m._forward_pre_hooks) for m in modules] == n_hooks  # every hook removed
    for L in range(tiny.n_layers):
        calls = seen[L]
        assert len(calls) == 2 * 6  # prefill + 5 cached steps, each seen before and after the edit
        dims = units[(units >= 96 * L) & (units < 96 * (L + 1))] - 96 * L
        vals = torch.as_tensor(values[(units >= 96 * L) & (units < 96 * (L + 1))])
        others = np.setdiff1d(np.arange(96), dims)
        for (s1, x), (s2, y) in zip(calls[::2], calls[1::2]):
            assert (s1, s2) == ("before", "after")
            assert torch.equal(y[..., dims], vals.expand_as(y[..., dims]))
            torch.testing.assert_close(y[..., others], x[..., others], atol=1e-6, rtol=0)


def test_sampling_is_reproducible_from_its_seed(tiny):
    ctx = RunContext(model=tiny, show_progress=False)
    prompt = [[tiny.tokenizer.bos_token_id]] * 4
    state = torch.random.get_rng_state()
    a = ctx.generate(prompt, 8, temperature=0.8, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    assert a == ctx.generate(prompt, 8, temperature=0.8, seed=5) and len(set(a)) > 1
    assert a != ctx.generate(prompt, 8, temperature=0.8, seed=6)
    greedy = ctx.generate(prompt, 8, temperature=0.0, seed=5)
    assert len(set(greedy)) == 1


def test_config_errors_name_the_fix():
    with pytest.raises(UsageError, match="unknown condition"):
        parse_config(LanguageNeurons, ["conditions=none,steer"])
    with pytest.raises(UsageError, match="needs k >= 1"):
        parse_config(LanguageNeurons, ["k=0"])
    assert parse_config(LanguageNeurons, ["source=hub", "k=1000", "force=zero"]).k == 1000


def test_end_to_end_on_a_tiny_model(tiny, tmp_path):
    config = LanguageNeurons.Config(n_samples=3, max_new_tokens=8, translation_max_new_tokens=8, n_random=2)
    path = tmp_path / "language_neurons.json"
    spec = RunSpec(
        models=["tiny"], tasks=["language_neurons"], output_dir=tmp_path, show_progress=False, limit=2, log_samples=True
    )
    run_task(tiny, LanguageNeurons, config, path, spec)
    data = json.loads(path.read_text())
    m, d = data["metrics"], data["details"]
    k = d["k"]
    assert d["n_units"] == 288 and k == 1 and d["language_identifier"].startswith("lingua")
    for L in LANGS:
        for name in ("mean_ap_top", "mean_ap_bottom", "max_ap", "heldout_ap_top", "heldout_ap_bottom", "edge_share"):
            assert f"{name}.{L}" in m
        # Detection metrics resample sentences (a parallel row with its six translations), never neurons.
        assert m[f"heldout_ap_top.{L}"]["n"] == 20 and m[f"mean_ap_top.{L}"]["n"] == 80 and m[f"edge_share.{L}"]["n"] == 80
        top_ap = [row[2] for row in d["selected"][L]["top"]]
        assert m[f"mean_ap_top.{L}"]["value"] == pytest.approx(np.mean(top_ap), abs=1e-6)
        assert m[f"max_ap.{L}"]["value"] == pytest.approx(max(top_ap), abs=1e-6)
        for side in ("top", "bottom"):
            assert sum(d["layer_hist"][L][side]) == pytest.approx(1.0, abs=1e-4) and len(d["layer_hist"][L][side]) == 3
            assert len(d["selected"][L][side]) == k
        for cond in ("none", "top", "bottom", "both"):
            assert m[f"success.{cond}.uncond.{L}"]["n"] == 2
        assert m[f"success.random.uncond.{L}"]["n"] == 4
        if L != "en":  # both random seeds translate the same two sources: two units
            assert m[f"success.random.translate.{L}"]["n"] == 2
        for name in ("lift", "lift_vs_random"):
            assert f"{name}.uncond.{L}" in m
            assert (f"{name}.translate.{L}" in m) == (L != "en")
    for side in ("top", "bottom"):
        mat = np.array([[d[f"overlap_{side}"][a][b] for b in LANGS] for a in LANGS])
        assert np.allclose(np.diag(mat), 1.0) and np.allclose(mat, mat.T)
        assert m[f"overlap_{side}_max"]["value"] == pytest.approx((mat - np.eye(6)).max())
    assert m["overlap_max"]["value"] == max(m["overlap_top_max"]["value"], m["overlap_bottom_max"]["value"])
    assert m["neuron_share"]["value"] == pytest.approx(2 * k / 288)
    edge = set(d["edge_layers"])
    chosen_layers = [int(site.split(".")[1]) for L in LANGS for side in ("top", "bottom") for site, *_ in d["selected"][L][side]]
    assert m["edge_share"]["value"] == pytest.approx(np.mean([layer in edge for layer in chosen_layers]))
    assert m["edge_share"]["n"] == 80
    # Text i of every language shares its source (translate) or its unforced text (uncond): n counts texts.
    assert m["lift.translate.mean"]["n"] == 2 and m["lift.uncond.mean"]["n"] == 2
    assert m["lift_vs_random.uncond.mean"]["n"] == 12  # random and forced texts are drawn per language
    assert any(n.startswith("mean_ap_*, max_ap.* are in-sample") for n in data["notes"])
    assert any("sites=linear" in n for n in data["notes"])
    assert d["generation"] == {
        "n_uncond": 2,
        "n_translate": 2,
        "conditions": ["none", "random", "top", "bottom", "both"],
        "random_count": 2,
    }
    art = tmp_path / "language_neurons"
    assert (art / "layer_hist.png").exists() and (art / "success.png").exists()
    samples = [json.loads(line) for line in (art / "samples.jsonl").read_text().splitlines()]
    assert {s["condition"] for s in samples} == {"none", "random", "top", "bottom", "both"}
    assert {s["task"] for s in samples} == {"uncond", "translate"}
    assert all(set(s) == {"language", "condition", "task", "seed", "index", "text", "detected"} for s in samples)
    assert data["reference"]["metrics"]["facebook/xglm-564M"]["success.both.uncond.de"] == 0.95


def test_results_are_deterministic(tiny):
    config = LanguageNeurons.Config(n_samples=3, max_new_tokens=6, translation=False, conditions=["none", "both"])
    runs = [LanguageNeurons().run(tiny, config, RunContext(model=tiny, show_progress=False, bootstrap=100)) for _ in range(2)]
    assert runs[0].metrics == runs[1].metrics  # values and intervals
    assert "lift.uncond.de" in runs[0].metrics and "lift_vs_random.uncond.de" not in runs[0].metrics


def test_linear_unit_space_pools_every_linear_layer_and_forces_the_right_modules(tiny, corpus):
    texts = corpus.score["en"][:4] + corpus.score["zh"][:3]
    ctx = RunContext(model=tiny, batch_size=4, show_progress=False)
    pooled, space = pool_units(ctx, texts, "pool", "linear")
    paths = [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ]
    assert space.sites[:7] == [f"linear.0.{p}" for p in paths] and len(space.sites) == 7 * tiny.n_layers
    assert pooled.shape == (len(texts), space.n_units) and space.n_units == n_linear_units(tiny)
    assert space.layer_widths == [space.n_units // tiny.n_layers] * tiny.n_layers
    # The up projection's block of columns is the per-sentence mean of that layer's output.
    per_token = collect(tiny, texts, ["linear.1.mlp.up_proj"], positions="all", batch_size=1)["linear.1.mlp.up_proj"]
    where = space.sites.index("linear.1.mlp.up_proj")
    start, width = sum(space.widths[:where]), space.widths[where]
    torch.testing.assert_close(pooled[:, start : start + width], torch.stack([a.mean(0) for a in per_token]), atol=1e-5, rtol=0)
    assert unit_sites(np.array([start + 3]), space) == [("linear.1.mlp.up_proj", 3)]
    edits = forcing_edits(np.array([0, start + 3, start + 4]), np.array([1.0, 2.0, 3.0]), space)
    assert [(e.site, e.dims) for e in edits] == [("linear.0.self_attn.q_proj", [0]), ("linear.1.mlp.up_proj", [3, 4])]
    # A list of widths still means mlp_act layers.
    assert unit_sites(np.array([100]), [96, 96]) == unit_sites(np.array([100]), UnitSpace.mlp([96, 96])) == [("mlp_act.1", 4)]


def test_end_to_end_with_the_paper_s_linear_neuron_set(tiny):
    config = LanguageNeurons.Config(
        sites="linear", n_samples=2, max_new_tokens=4, translation=False, conditions=["none", "both"], languages=["de"]
    )
    result = LanguageNeurons().run(tiny, config, RunContext(model=tiny, show_progress=False, bootstrap=50))
    d, m = result.details, result.metrics
    assert d["sites"] == "linear" and d["n_units"] == n_linear_units(tiny)
    assert d["neuron_share_of_linear_units"] == pytest.approx(m["neuron_share"].value)
    assert sum(d["units_per_layer"]) == d["n_units"] and "mlp.up_proj" in d["linear_widths"]
    chosen = [site for L in LANGS for side in ("top", "bottom") for site, *_ in d["selected"][L][side]]
    assert all(site.startswith("linear.") for site in chosen)
    assert any("neuron set as in the paper" in n for n in result.notes)
    assert not any("this run scores and forces mlp_act units only" in n for n in result.notes)
    assert "lift.uncond.de" in m


# Hub loaders on local parquet files shaped like FLORES+ and PAWS-X.


def write_hub_copies(root, n_flores=12, n_paws=10):
    import pandas as pd

    flores, paws = root / "flores_plus", root / "paws-x"
    yaml = ["---", "configs:"]
    for code in FLORES.values():
        for split in ("dev", "devtest"):
            path = flores / split / f"{code}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            text = [f"{code} {split} sentence number {i}." for i in range(n_flores)]
            text[1] = text[0]  # a duplicate, dropped
            text[2] = "word " * 300  # too long, dropped
            pd.DataFrame({"id": range(n_flores), "iso_639_3": code[:3], "iso_15924": code[4:], "text": text}).to_parquet(path)
        yaml += [
            f"- config_name: {code}",
            "  data_files:",
            "  - split: dev",
            f"    path: dev/{code}.parquet",
            "  - split: devtest",
            f"    path: devtest/{code}.parquet",
        ]
    (flores / "README.md").write_text("\n".join(yaml + ["---", ""]))
    yaml = ["---", "configs:"]
    for L in ("en", "de", "es", "fr", "ja", "zh"):
        path = paws / L / "test-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(
            {
                "id": range(n_paws),
                "sentence1": [f"{L} paws sentence {i}." for i in range(n_paws)],
                "sentence2": ["other"] * n_paws,
                "label": [0] * n_paws,
            }
        ).to_parquet(path)
        yaml += [f"- config_name: {L}", "  data_files:", "  - split: test", f"    path: {L}/test-*"]
    (paws / "README.md").write_text("\n".join(yaml + ["---", ""]))
    return flores, paws


@pytest.fixture
def hub_copies(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    return write_hub_copies(tmp_path)


def test_hub_loaders_read_flores_and_pawsx_shaped_files(hub_copies):
    flores, paws = hub_copies
    config = LanguageNeurons.Config(
        source="hub", flores_path=str(flores), pawsx_path=str(paws), n_per_source=6, n_heldout=4, n_translate=3, max_tokens=64
    )
    corpus = load_hub(config, tiny_tokenizer())
    for L in LANGS:
        assert len(corpus.score[L]) == 12 and len(corpus.heldout[L]) == 4
        dev = [t for t in corpus.score[L] if "dev sentence" in t]
        assert len(dev) == 6 and len(set(dev)) == 6 and all(FLORES[L] in t for t in dev)
        assert sum("paws sentence" in t and t.startswith(L) for t in corpus.score[L]) == 6
        assert all("devtest" in t for t in corpus.heldout[L]) and not any(t.startswith("word") for t in corpus.score[L])
    assert corpus.sources == [f"eng_Latn devtest sentence number {i}." for i in (0, 3, 4)]  # file order, cleaned
    again = load_hub(config, tiny_tokenizer())
    assert again.score == corpus.score  # seeded


def test_hub_loader_errors_name_the_fix(hub_copies, tmp_path):
    flores, paws = hub_copies
    config = LanguageNeurons.Config(source="hub", flores_path=str(flores), pawsx_path=str(flores), n_per_source=3)
    with pytest.raises(UsageError):  # the FLORES copy has no PAWS-X configs
        load_hub(config, tiny_tokenizer())
    config = LanguageNeurons.Config(source="hub", flores_path=str(paws), pawsx_path=str(paws))
    with pytest.raises(UsageError, match="cannot load|no field"):
        load_hub(config, tiny_tokenizer())


def test_the_draw_memo_computes_each_draw_once_and_gives_back_what_was_computed():
    """A bootstrap draw's result, kept in blocks: the same arrays as computing it fresh, one computation per draw."""
    from tasks.language_neurons.data import LANGS
    from tasks.language_neurons.task import DrawMemo, SentenceResampling, score_languages

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(LANGS)), 12)
    pooled = torch.from_numpy(np.abs(rng.standard_normal((len(labels), 300)).astype(np.float32)))
    scores = score_languages(pooled, labels, 5)
    columns = {L: np.concatenate([scores.top[L], scores.bottom[L]]) for L in LANGS}
    memo = SentenceResampling(pooled, labels, columns, ap=scores.ap, k=5, pool=20)
    fresh = SentenceResampling(pooled, labels, columns, ap=scores.ap, k=5, pool=20)
    draws = [rng.integers(0, len(labels), len(labels)) for _ in range(600)]  # several blocks of 256
    for r in draws + draws[:50]:  # the repeats are served from the memo
        fresh._memo = DrawMemo()
        assert np.array_equal(memo.fixed_ap(r, "de"), fresh.fixed_ap(r, "de"))
        for a, b in zip(memo.reselect(r, "ja"), fresh.reselect(r, "ja")):
            assert np.array_equal(a, b)
    calls = []
    kept = DrawMemo(block=4)
    for r in draws[:10] + draws[:10]:
        w = np.bincount(r, minlength=len(labels))
        kept.get(("k", "L"), w, lambda w: calls.append(1) or (w * 2.0, w[:3]))
    assert len(calls) == len({d.tobytes() for d in (np.bincount(r, minlength=len(labels)) for r in draws[:10])})
    got = kept.get(("k", "L"), np.bincount(draws[3], minlength=len(labels)), lambda w: (w * 0.0, w[:3]))
    assert np.array_equal(got[0], np.bincount(draws[3], minlength=len(labels)) * 2.0)
