"""A model folder with the architecture and tokenizer of another and random weights, for timing.

    python -m benchmarks.random_model SOURCE_FOLDER OUT_FOLDER [--seed 0]

Where the weights cannot travel (a GPU machine with no network, and bundled GGUFs too large to
copy there), a random copy of the same architecture costs the same arithmetic per token, so
the benchmarks' ratios hold; only what the weights compute is meaningless. SOURCE_FOLDER needs
`config.json` and the tokenizer files (a converted bundled model in the harness cache has them).
Weights are initialised as transformers initialises a new model, seeded, and saved as
float32 safetensors; `load_model` then casts them as it would real ones (bfloat16 on CUDA).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "generation_config.json",
)


def build(source: Path, out: Path, seed: int = 0) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, out / name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(build(args.source, args.out, args.seed))


if __name__ == "__main__":
    main()
