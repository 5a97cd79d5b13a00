"""code_vs_language: few-shot logical inference (FLD, bAbI) as a comparison across models.

Uchiyama et al. 2024, "Which Programming Language and What Features at Pre-training Stage
Affect Downstream Logical Inference Performance?" (EMNLP 2024, arXiv 2410.06735). The data
side lives in `generators` (FLD-style and bAbI-style items, deterministic for a seed),
`loaders` (the papers' data sets from the Hub, mapped to the same records) and `prompts`
(k-shot prompts, answer choices, the parse rule behind `format_rate`).
"""

from tasks.code_vs_language.task import CodeVsLanguage, CodeVsLanguageConfig

__all__ = ["CodeVsLanguage", "CodeVsLanguageConfig"]
