"""Tiny randomly initialised causal LMs and a real byte-level BPE tokenizer, for tests.

Nothing here touches the network: the tokenizer is trained in-process on a small
built-in corpus, and every model is built from a config.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    BloomConfig,
    Gemma2Config,
    Gemma3Config,
    Gemma3TextConfig,
    GemmaConfig,
    GPT2Config,
    GPTJConfig,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Olmo2Config,
    OlmoConfig,
    OPTConfig,
    Phi3Config,
    PhiConfig,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
    Starcoder2Config,
    XGLMConfig,
)

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}
VOCAB_SIZE = 512

D_MODEL = 64
N_LAYER = 3
N_HEAD = 4
N_KV_HEAD = 2
HEAD_DIM = D_MODEL // N_HEAD
D_MLP = 96  # not 4 * D_MODEL, so a wrong mlp_down shows up as a width mismatch

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
    "hundred",
    "thousand",
]

_PROSE = """\
The quick brown fox jumps over the lazy dog. A language model predicts the next word.
Mary went to the kitchen. John picked up the apple. Where is the apple? The apple is in the kitchen.
If all cats are animals and Tom is a cat, then Tom is an animal.
Paris is the capital of France. Berlin is the capital of Germany. Rome is the capital of Italy.
The answer is yes. The answer is no. It is true. It is false.
She said that the weather would be warm in the morning and cold at night.
We counted the apples one by one and wrote the total on the board.
"""


def _corpus() -> list[str]:
    lines = _PROSE.splitlines()
    for i, day in enumerate(WEEKDAYS):
        for k in range(1, 8):
            target = WEEKDAYS[(i + k) % 7]
            lines.append(f"Let's do some day of the week math. {NUMBER_WORDS[k].capitalize()} days from {day} is {target}.")
        lines.append(f"Today is {day}. Tomorrow is {WEEKDAYS[(i + 1) % 7]}. Yesterday was {WEEKDAYS[(i - 1) % 7]}.")
    for i, month in enumerate(MONTHS):
        for k in range(1, 12, 2):
            target = MONTHS[(i + k) % 12]
            lines.append(f"Let's do some calendar math. {NUMBER_WORDS[k].capitalize()} months from {month} is {target}.")
        lines.append(f"The month after {month} is {MONTHS[(i + 1) % 12]}.")
    for a in range(13):
        for b in range(0, 13, 3):
            lines.append(f"{NUMBER_WORDS[a]} plus {NUMBER_WORDS[b]} is {a + b}. {a} times {b} is {a * b}.")
    lines.append(" ".join(NUMBER_WORDS))
    lines.append(" ".join(str(n) for n in range(101)))
    return lines


@functools.cache
def _trained_tokenizer_json() -> str:
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    # BOS first, as Llama and Gemma tokenizers do; ByteLevel trims the leading space
    # from offsets so " Monday" maps to the characters of "Monday".
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=True),
            processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
            ),
        ]
    )
    return tok.to_str()


@functools.cache
def _tiny_tokenizer() -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_tokenizer_json()),
        padding_side="left",
        **SPECIAL_TOKENS,
    )


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (vocabulary ~512) with <bos>/<eos>/<pad>/<unk>, left padding."""
    return _tiny_tokenizer()


# Rotary models have no weights per position, so their declared maximum costs nothing: room for the
# tasks' longest prompts (the harness refuses prompts past it). GPT-2 and OPT learn one embedding per
# position and keep 128.
ROPE_POSITIONS = 4096


def _ids() -> dict:
    tok = tiny_tokenizer()
    return dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def _llama_family(cls, **extra) -> Callable[[], PreTrainedConfig]:
    def build():
        return cls(
            **_ids(),
            hidden_size=D_MODEL,
            intermediate_size=D_MLP,
            num_hidden_layers=N_LAYER,
            num_attention_heads=N_HEAD,
            num_key_value_heads=N_KV_HEAD,
            max_position_embeddings=ROPE_POSITIONS,
            **extra,
        )

    return build


_GEMMA_EXTRA = dict(head_dim=HEAD_DIM)
_GEMMA_SLIDING = dict(head_dim=HEAD_DIM, query_pre_attn_scalar=HEAD_DIM, sliding_window=4)


def _gemma3() -> Gemma3Config:
    text = _llama_family(Gemma3TextConfig, **_GEMMA_SLIDING)().to_dict()
    vision = dict(
        model_type="siglip_vision_model",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    ids = _ids()
    return Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=4,
        image_token_index=ids["vocab_size"] - 1,
        boi_token_index=ids["bos_token_id"],
        eoi_token_index=ids["eos_token_id"],
        **{k: ids[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")},
    )


def _gpt2() -> GPT2Config:
    return GPT2Config(**_ids(), n_embd=D_MODEL, n_layer=N_LAYER, n_head=N_HEAD, n_inner=D_MLP, n_positions=128)


def _gptj() -> GPTJConfig:
    return GPTJConfig(
        **_ids(),
        n_embd=D_MODEL,
        n_layer=N_LAYER,
        n_head=N_HEAD,
        n_inner=D_MLP,
        n_positions=ROPE_POSITIONS,
        rotary_dim=HEAD_DIM // 2,
    )


def _gpt_neox() -> GPTNeoXConfig:
    return GPTNeoXConfig(
        **_ids(),
        hidden_size=D_MODEL,
        num_hidden_layers=N_LAYER,
        num_attention_heads=N_HEAD,
        intermediate_size=D_MLP,
        max_position_embeddings=ROPE_POSITIONS,
        use_parallel_residual=True,
    )


def _bloom() -> BloomConfig:  # BLOOM's MLP width is fixed at 4 * hidden_size
    return BloomConfig(**_ids(), hidden_size=D_MODEL, n_layer=N_LAYER, n_head=N_HEAD)


def _opt() -> OPTConfig:
    return OPTConfig(
        **_ids(),
        hidden_size=D_MODEL,
        word_embed_proj_dim=D_MODEL,
        num_hidden_layers=N_LAYER,
        num_attention_heads=N_HEAD,
        ffn_dim=D_MLP,
        max_position_embeddings=128,
    )


def _xglm() -> XGLMConfig:
    return XGLMConfig(
        **_ids(), d_model=D_MODEL, num_layers=N_LAYER, attention_heads=N_HEAD, ffn_dim=D_MLP, max_position_embeddings=128
    )


def _phi() -> PhiConfig:
    return PhiConfig(
        **_ids(),
        hidden_size=D_MODEL,
        intermediate_size=D_MLP,
        num_hidden_layers=N_LAYER,
        num_attention_heads=N_HEAD,
        max_position_embeddings=ROPE_POSITIONS,
    )


def _starcoder2() -> Starcoder2Config:
    return Starcoder2Config(
        **_ids(),
        hidden_size=D_MODEL,
        intermediate_size=D_MLP,
        num_hidden_layers=N_LAYER,
        num_attention_heads=N_HEAD,
        num_key_value_heads=N_KV_HEAD,
        max_position_embeddings=ROPE_POSITIONS,
    )


TINY_CONFIGS: dict[str, Callable[[], PreTrainedConfig]] = {
    "llama": _llama_family(LlamaConfig),
    "mistral": _llama_family(MistralConfig),
    "qwen2": _llama_family(Qwen2Config),
    "qwen3": _llama_family(Qwen3Config, head_dim=HEAD_DIM),
    "phi3": _llama_family(Phi3Config),
    "olmo": _llama_family(OlmoConfig),
    "olmo2": _llama_family(Olmo2Config),
    "gemma": _llama_family(GemmaConfig, **_GEMMA_EXTRA),
    "gemma2": _llama_family(Gemma2Config, **_GEMMA_SLIDING),
    "gemma3_text": _llama_family(Gemma3TextConfig, **_GEMMA_SLIDING),
    "gemma3": _gemma3,
    "gpt2": _gpt2,
    "gptj": _gptj,
    "gpt_neox": _gpt_neox,
    "bloom": _bloom,
    "opt": _opt,
    "xglm": _xglm,
    "phi": _phi,
    "starcoder2": _starcoder2,
}


def tiny_model(model_type: str, seed: int = 0, **config_overrides) -> PreTrainedModel:
    """A tiny randomly initialised causal LM of `model_type`, float32, eval mode.

    `config_overrides` set config attributes before the model is built
    (e.g. `use_parallel_residual=False` for a sequential GPT-NeoX).
    """
    config = TINY_CONFIGS[model_type]()
    for name, value in config_overrides.items():
        setattr(config, name, value)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


def save_tiny_model(model_type: str, folder: str | Path, seed: int = 0, **config_overrides) -> Path:
    """Save a tiny model and the tiny tokenizer to `folder`, loadable as a local model."""
    folder = Path(folder)
    tiny_model(model_type, seed, **config_overrides).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder
