"""The paper's numbers (Tables 1-3 and the QA figures), beside ours in every results file."""

from __future__ import annotations

from harness import Reference

PAPER = "Cao, Kojima, Matsuo, Iwasawa 2023, Unnatural Error Correction: GPT-4 Can Almost Perfectly Handle Unnatural Scrambled Text (EMNLP 2023, arXiv 2311.18805)"

_REC = {  # zero-shot rand20 / 50 / 100 / keepfirst / keepfirstlast, few-shot rand100
    "gpt-4-0314": (93.8, 96.0, 96.0, 96.1, 96.6, 96.6),
    "gpt-3.5-turbo-0301": (83.0, 81.7, 77.9, 86.1, 90.7, 72.6),
    "text-davinci-003": (42.9, 52.9, 19.2, 69.8, 81.7, 37.7),
    "falcon-180B": (75.2, 61.8, -17.3, 57.9, 81.9, None),
    "meta-llama/Llama-2-70b-hf": (69.4, 41.5, -32.3, 39.8, 70.8, None),
    "meta-llama/Llama-2-7b-hf": (-5.9, -64.2, -44.1, -56.6, -14.5, None),
}
_QA = {  # (Acc_orig, Acc_sub, Acc_rand100, RPG rand100), fractions
    "gpt-4-0314": (0.977, 0.621, 0.934, 0.88),
    "gpt-3.5-turbo-0301": (0.971, 0.526, 0.818, 0.66),
    "meta-llama/Llama-2-70b-hf": (0.884, 0.572, 0.679, 0.34),
    "gpt-4-0314@dream": (0.967, 0.459, 0.885, 0.84),
    "meta-llama/Llama-2-70b-hf@dream": (0.930, 0.502, 0.572, 0.16),
}


def reference() -> Reference:
    metrics: dict[str, dict[str, float]] = {}
    for model, vals in _REC.items():
        keys = [f"recovery_rate_{t}" for t in ("random_20", "random_50", "random_100", "keepfirst", "keepfirstlast")] + [
            "recovery_rate_random_100_3shot"
        ]
        metrics[model] = {k: v for k, v in zip(keys, vals) if v is not None}
    for model, (orig, sub, r100, rpg) in _QA.items():
        metrics.setdefault(model, {}).update(
            {
                "qa_accuracy_original": orig,
                "qa_accuracy_substituted": sub,
                "qa_accuracy_random_100": r100,
                "qa_rpg_random_100": rpg,
            }
        )
    return Reference(
        source="recomputed from authors' outputs (github ccqq77/unnatural-error-correction), RealtimeQA; " + PAPER,
        metrics=metrics,
        notes={
            "recovery_rate": "RealtimeQA evidence (408 texts), zero-shot, per-item mean, %; our default data is the shipped sample",
            "recovery_rate_random_100_3shot": "few-shot (shots=3) recovery rate on random_100; compare with recovery_rate_random_100 of a shots=3 run",
            "qa": "model ids without a suffix: RealtimeQA (346 items); '@dream': DREAM test, human-annotated subset (512)",
            "ll_gap_per_char, prefer_original, recovery_pref, restoration_*": "no reference: not in the paper (small-model variants of the spec)",
        },
    )
