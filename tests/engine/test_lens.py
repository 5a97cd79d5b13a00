"""The logit lens at the last layer is the model's own next-token distribution, on every layout."""

from __future__ import annotations

import pytest
import torch

from harness import RunContext
from harness.engine.layout import LAYOUTS
from harness.engine.models import from_hf
from tests.tiny_models import TINY_CONFIGS, tiny_model, tiny_tokenizer

PROMPTS = ["Mary went to the kitchen.", "Two days from Monday is", "The apple"]


@pytest.mark.parametrize("model_type", sorted(TINY_CONFIGS))
def test_lens_at_the_last_layer_equals_the_models_softmax(model_type):
    model = from_hf(tiny_model(model_type), tiny_tokenizer(), spec=f"tiny-{model_type}")
    ctx = RunContext(model=model, batch_size=2, show_progress=False)
    targets = list(range(0, 400, 7))
    lens = ctx.logit_lens(PROMPTS, targets)
    assert lens.layers == list(range(model.n_layers)) and lens.logprobs.shape == (3, model.n_layers, len(targets))
    for i, prompt in enumerate(PROMPTS):
        ids = torch.tensor([model.tokenizer(prompt)["input_ids"]])
        with torch.no_grad():
            logits = model.hf(ids).logits[0, -1].float()
        torch.testing.assert_close(lens.logprobs[i, -1], logits.log_softmax(-1)[targets], atol=1e-4, rtol=1e-4)
        assert int(lens.top_token[i, -1]) == int(logits.argmax())
    # Earlier layers read something else: the lens is not the last layer copied.
    assert not torch.allclose(lens.logprobs[:, 0], lens.logprobs[:, -1], atol=1e-3)


def test_every_layout_is_covered_by_a_tiny_model():
    assert set(LAYOUTS) <= set(TINY_CONFIGS)
