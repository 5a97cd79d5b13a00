"""LoRA fine-tuning engine part: masking, determinism, resume, base weights, adapter life cycle."""

from __future__ import annotations

import hashlib

import pytest
import torch

from harness.engine.train import (
    IGNORE_INDEX,
    TrainConfig,
    _batch_plan,
    _collate,
    _encode,
    finetune_lora,
    load_adapter,
    reply_loss,
    save_adapter,
    unload_adapter,
)
from harness.errors import UsageError
from tests.tiny_models import WEEKDAYS, tiny_model, tiny_tokenizer

EXAMPLES = [(f"Today is {day}. Tomorrow is", f" {WEEKDAYS[(i + 1) % 7]}.") for i, day in enumerate(WEEKDAYS)]
EXAMPLES += [(f"The month after {m} is", f" {n}") for m, n in [("May", "June"), ("June", "July"), ("March", "April")]]
FAST = dict(steps=6, batch_size=3, lr=1e-2)


def _base() -> torch.nn.Module:
    """A frozen eval-mode model, as the harness hands it to tasks as `model.hf`."""
    return tiny_model("llama").requires_grad_(False)


def _lora_state(peft_model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_" in n}


def _base_hash(model) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def test_labels_cover_reply_and_eos_only():
    tok = tiny_tokenizer()
    encoded = _encode(tok, EXAMPLES[:3], append_eos=True)
    batch = _collate(encoded, [0, 1, 2], tok.pad_token_id)
    for row, (prompt, reply) in enumerate(encoded):
        assert reply[-1] == tok.eos_token_id
        labels, mask = batch["labels"][row], batch["attention_mask"][row]
        n = len(prompt) + len(reply)
        assert (labels[: len(prompt)] == IGNORE_INDEX).all()
        assert labels[len(prompt) : n].tolist() == reply
        assert (labels[n:] == IGNORE_INDEX).all() and (mask[n:] == 0).all() and (mask[:n] == 1).all()
        assert batch["input_ids"][row, : len(prompt)].tolist() == tok(EXAMPLES[row][0])["input_ids"]
    with_eos_text = _encode(tok, [(EXAMPLES[0][0], EXAMPLES[0][1] + tok.eos_token)], append_eos=True)
    assert with_eos_text == encoded[:1]  # EOS written in the reply is not doubled
    assert _encode(tok, EXAMPLES[:1], append_eos=False)[0][1] == encoded[0][1][:-1]


def test_reply_loss_ignores_prompt_positions_and_weighs_examples_equally():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 11, generator=gen)
    labels = torch.full((2, 6), IGNORE_INDEX)
    labels[0, 2:6] = torch.tensor([1, 2, 3, 4])  # long reply
    labels[1, 5] = 7  # one-token reply
    base = reply_loss(logits, labels)
    changed = logits.clone()
    changed[0, 0] += 5.0  # predicts a prompt token: no loss there
    changed[1, :4] -= 3.0
    assert torch.equal(reply_loss(changed, labels), base)
    ce = torch.nn.functional.cross_entropy
    per_example = [ce(logits[0, 1:5], labels[0, 2:6]), ce(logits[1, 4:5], labels[1, 5:6])]
    assert torch.allclose(base, torch.stack(per_example).mean())


def test_batch_plan_is_seeded_groups_by_length_and_covers_each_epoch():
    lengths = list(range(20))
    plan = _batch_plan(lengths, batch_size=4, seed=3, steps=10)
    assert plan == _batch_plan(lengths, batch_size=4, seed=3, steps=10)
    assert plan != _batch_plan(lengths, batch_size=4, seed=4, steps=10)
    assert sorted(i for batch in plan[:5] for i in batch) == list(range(20))  # epoch 0
    assert sorted(i for batch in plan[5:] for i in batch) == list(range(20))  # epoch 1
    assert plan[:5] != plan[5:]


def test_same_seed_gives_bit_identical_adapter_and_base_is_untouched():
    adapters, reports = [], []
    for _ in range(2):
        model = _base()
        before = _base_hash(model)
        initial_params = {n: p.detach().clone() for n, p in model.named_parameters()}
        result = finetune_lora(model, tiny_tokenizer(), EXAMPLES, TrainConfig(**FAST, seed=7))
        adapters.append(_lora_state(result.model))
        reports.append(result.report)
        # Base weights, read through the wrapped modules, never moved; only LoRA weights did.
        for name, p in result.model.named_parameters():
            if "lora_" in name:
                assert not p.requires_grad
                continue
            original = name.removeprefix("base_model.model.").replace(".base_layer", "")
            assert torch.equal(p, initial_params[original]), name
        assert any("lora_B" in n and p.abs().sum() > 0 for n, p in result.model.named_parameters())
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        unload_adapter(result.model)
        assert _base_hash(model) == before
    assert adapters[0].keys() == adapters[1].keys()
    assert all(torch.equal(adapters[0][k], adapters[1][k]) for k in adapters[0])
    assert reports[0].losses == reports[1].losses and reports[0].tokens == reports[1].tokens
    assert reports[0].steps == 6 and reports[0].reply_tokens > 0 and reports[0].tokens > reports[0].reply_tokens

    other = finetune_lora(_base(), tiny_tokenizer(), EXAMPLES, TrainConfig(**FAST, seed=8)).model
    assert not all(torch.equal(adapters[0][k], v) for k, v in _lora_state(other).items())


def test_adapter_runs_through_the_base_models_own_modules_and_unloads_cleanly():
    model = _base()
    tok = tiny_tokenizer()
    ids = tok(["Today is Monday. Tomorrow is"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        plain = model(ids).logits
    layer = model.model.layers[1]
    result = finetune_lora(model, tok, EXAMPLES, TrainConfig(**FAST))
    assert result.model.base_model.model is model and model.model.layers[1] is layer
    seen = []
    handle = layer.register_forward_hook(lambda mod, args, out: seen.append(1))
    with torch.no_grad():
        through_peft = result.model(input_ids=ids).logits
        direct = model(ids).logits
    handle.remove()
    assert len(seen) == 2
    assert torch.equal(through_peft, direct) and not torch.allclose(direct, plain)
    base = unload_adapter(result.model)
    assert base is model and type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    with torch.no_grad():
        assert torch.equal(model(ids).logits, plain)


def test_saved_adapter_loads_back_onto_a_fresh_base(tmp_path):
    tok = tiny_tokenizer()
    ids = tok(["The month after May is"], return_tensors="pt")["input_ids"]
    result = finetune_lora(_base(), tok, EXAMPLES, TrainConfig(**FAST))
    with torch.no_grad():
        trained = result.model(input_ids=ids).logits
    folder = save_adapter(result.model, tmp_path / "adapter")
    assert (folder / "adapter_config.json").exists() and (folder / "adapter_model.safetensors").exists()
    assert not list(tmp_path.glob(".tmp-*"))
    loaded = load_adapter(_base(), folder)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, trained)


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("optimizer", ["adamw", "adopt"])
def test_interrupted_run_resumes_to_the_same_adapter(tmp_path, optimizer):
    config = TrainConfig(**FAST, optimizer=optimizer, checkpoint_every=3)
    tok = tiny_tokenizer()
    whole = finetune_lora(_base(), tok, EXAMPLES, config, checkpoint_dir=tmp_path / "whole")

    def crash_at_5(step: int, loss: float) -> None:
        if step == 5:
            raise _Interrupt

    model = _base()
    before = _base_hash(model)
    with pytest.raises(_Interrupt):
        finetune_lora(model, tok, EXAMPLES, config, checkpoint_dir=tmp_path / "cut", on_step=crash_at_5)
    # The failed call leaves the model as it found it, and only step 3 on disk.
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear and _base_hash(model) == before
    assert [p.name for p in (tmp_path / "cut").iterdir()] == ["step-000003"]

    resumed = finetune_lora(model, tok, EXAMPLES, config, checkpoint_dir=tmp_path / "cut")
    assert resumed.report.resumed_from == 3
    assert resumed.report.losses == whole.report.losses and resumed.report.tokens == whole.report.tokens
    a, b = _lora_state(whole.model), _lora_state(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [p.name for p in (tmp_path / "cut").iterdir()] == ["step-000006"]

    # A finished run in the same folder is reused, not retrained.
    again = finetune_lora(_base(), tok, EXAMPLES, config, checkpoint_dir=tmp_path / "cut")
    assert again.report.resumed_from == 6
    assert all(torch.equal(a[k], v) for k, v in _lora_state(again.model).items())


def test_checkpoint_from_other_settings_is_refused(tmp_path):
    tok = tiny_tokenizer()
    finetune_lora(_base(), tok, EXAMPLES, TrainConfig(**FAST), checkpoint_dir=tmp_path)
    model = _base()
    with pytest.raises(UsageError, match="remove it or choose another folder"):
        finetune_lora(model, tok, EXAMPLES, TrainConfig(**{**FAST, "lr": 1e-3}), checkpoint_dir=tmp_path)
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear


@pytest.mark.parametrize("optimizer", ["adamw", "adopt"])
def test_loss_falls_over_thirty_steps(optimizer):
    report = finetune_lora(
        _base(), tiny_tokenizer(), EXAMPLES, TrainConfig(steps=30, batch_size=4, lr=1e-2, optimizer=optimizer)
    ).report
    assert sum(report.losses[-5:]) < sum(report.losses[:5])
    assert max(report.grad_norms) > 0


def test_progress_bar_shows_the_loss():
    shown = []

    class Bar:
        def __init__(self, iterable, desc, total=None):
            self.iterable, self.total = iterable, total

        def __iter__(self):
            return iter(self.iterable)

        def set_postfix(self, **values):
            shown.append(values["loss"])

    report = finetune_lora(_base(), tiny_tokenizer(), EXAMPLES, TrainConfig(**FAST), progress=Bar).report
    assert shown == [f"{loss:.4f}" for loss in report.losses]


def test_bad_settings_are_usage_errors():
    with pytest.raises(UsageError, match="adamw, adopt"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(UsageError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(UsageError, match="at least one"):
        finetune_lora(_base(), tiny_tokenizer(), [], TrainConfig())
