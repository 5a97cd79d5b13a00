"""The BOS policy: the tokenizer's own BOS where it adds one, BOS prepended for the GPT-2 family
(as TransformerLens runs it, which the papers on those models used), and the policy recorded."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from harness.engine.models import from_hf
from tests.tiny_models import SPECIAL_TOKENS, _trained_tokenizer_json, tiny_model, tiny_tokenizer


def tokenizer_without_bos() -> PreTrainedTokenizerFast:
    """The tiny tokenizer with GPT-2's habit: no special token put before a text."""
    tok = Tokenizer.from_str(_trained_tokenizer_json())
    tok.post_processor = None
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


@pytest.mark.parametrize("model_type", ["gpt2", "gptj", "gpt_neox"])
def test_the_gpt2_family_gets_bos_prepended_and_says_so(model_type):
    tok = tokenizer_without_bos()
    assert tok("Monday")["input_ids"][0] != tok.bos_token_id  # as GPT-2's tokenizer does
    model = from_hf(tiny_model(model_type), tok)
    ids = model.tokenizer(["Monday", "Tuesday is"])["input_ids"]
    assert (
        all(row[0] == tok.bos_token_id for row in ids) and len(ids[0]) == len(tok.encode("Monday", add_special_tokens=False)) + 1
    )
    assert model.info.bos.startswith("prepended (<bos>)")


def test_other_tokenizers_keep_their_own_special_tokens():
    kept = from_hf(tiny_model("llama"), tokenizer_without_bos())
    assert kept.info.bos == "none: the tokenizer adds no BOS"
    assert kept.tokenizer("Monday")["input_ids"][0] != kept.tokenizer.bos_token_id
    own = from_hf(tiny_model("gpt2"), tiny_tokenizer())
    assert own.info.bos == "added by the tokenizer (<bos>)"


def test_the_results_model_block_records_the_policy(tmp_path):
    from harness.results import read_results
    from harness.run.plan import RunSpec
    from harness.run.runner import run_task
    from tasks.number_helix.task import NumberHelix

    model = from_hf(tiny_model("gpt2"), tokenizer_without_bos(), spec="tiny-gpt2")
    path = tmp_path / "number_helix.json"
    config = NumberHelix.Config(n_problems=60, patching=False, swap=False, max_new_tokens=2)
    run_task(
        model,
        NumberHelix,
        config,
        path,
        RunSpec(models=["tiny-gpt2"], tasks=["number_helix"], output_dir=tmp_path, show_progress=False),
    )
    assert read_results(path).model.bos.startswith("prepended (<bos>)")
