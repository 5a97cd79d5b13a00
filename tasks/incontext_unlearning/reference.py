"""The paper's numbers for in-context unlearning, as the spec gives them (approximate).

They come from a third-party summary of arXiv 2410.00382, not from the paper's tables,
so every value is marked approximate; with 20 ID eval items our intervals are about
±15–20 points wide, so only large gaps from these are meaningful.
"""

from __future__ import annotations

from typing import Any

SOURCE = "Takashiro et al. 2025, Answer When Needed, Forget When Not (arXiv 2410.00382), via a third-party summary; approximate"


def reference_numbers() -> dict[str, Any]:
    """The reference numbers, in percent except the internal answer score (a share, 0-1).

    Forget and retain are the authors' strict rules: our `forget_acc` and `retain_acc`.
    Keys: `<dataset>_<domain>_<metric>` per model and setting.
    """
    return {
        "source": SOURCE,
        "approximate": True,
        "unit": "percent",
        "tofu_lora": {
            "Llama2-7B": {
                "tofu_id_forget_acc": 85.0,
                "tofu_id_retain_acc": 80.0,
                "tofu_ood_forget_acc": 92.3,
                "tofu_ood_retain_acc": 42.7,
            },
            "Llama2-13B": {
                "tofu_id_forget_acc": 100.0,
                "tofu_id_retain_acc": 80.0,
                "tofu_ood_forget_acc": 89.7,
                "tofu_ood_retain_acc": 44.4,
            },
            "Mistral-7B": {
                "tofu_id_forget_acc": 90.0,
                "tofu_id_retain_acc": 75.0,
                "tofu_ood_forget_acc": 46.2,
                "tofu_ood_retain_acc": 74.4,
            },
        },
        "finetuning_method_table_lora": {
            "Llama2-7B": {
                "tofu_id_forget_acc": 95.0,
                "tofu_id_retain_acc": 85.0,
                "age_id_forget_acc": 93.0,
                "age_id_retain_acc": 63.0,
            },
            "Mistral-7B": {
                "tofu_id_forget_acc": 95.0,
                "tofu_id_retain_acc": 80.0,
                "age_id_forget_acc": 100.0,
                "age_id_retain_acc": 65.0,
            },
        },
        "abstract": {"forget_acc_up_to": 95.0, "retain_acc_up_to": 80.0},
        "baselines_llama2_7b_tofu_id": {
            "zero_shot": {"forget_acc": 0.0, "retain_acc": 0.0},
            "gradient_ascent": {"forget_acc": 0.0, "retain_acc": 0.0},
            "icul": {"forget_acc": 0.0, "retain_acc": 65.0},
        },
        "internal_answer_score_llama2_7b": {
            "lora": {"tofu_id": 0.03, "tofu_ood": 0.14, "age_id": 0.23, "age_ood": 0.34},
            "last_layer_tuning": {"reported": 0.0},
        },
        "note": "With 20 ID eval items, 95% intervals are about ±15-20 points.",
    }
