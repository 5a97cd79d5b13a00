"""incontext_unlearning: language models that pretend to forget, via in-context knowledge unlearning.

Takashiro, Kojima, Gambardella, Cao, Iwasawa, Matsuo, "Answer When Needed, Forget When Not:
Language Models Pretend to Forget via In-Context Knowledge Unlearning" (arXiv 2410.00382,
Findings of ACL 2025). A chat model sees a fact wrapped in forget tags; it should answer
`forgot` to questions that need the fact and answer the rest. A logit lens shows whether the
answer is still decodable in middle layers.

The package is split by job: `data` (items and their loaders), `prompts` (forget tags,
prompts, fine-tuning replies, scoring rules), `reference` (the paper's numbers), `task`
(the task itself, `IncontextUnlearning`, which reads like the paper's method section).
"""

from tasks.incontext_unlearning.task import IncontextUnlearning, UnlearningConfig, forget_tags

__all__ = ["IncontextUnlearning", "UnlearningConfig", "forget_tags"]
