"""The paper's data sets from the Hugging Face Hub, mapped to the generators' item records.

FLD: `hitachi-nlp/FLD.v2`, config `default` (FLD) or `star` (FLD*); `context` (`facts` in
later releases) and `hypothesis` fill the prompt, `world_assump_label` is the gold label.
bAbI: `facebook/babi_qa`, config `en-qa{k}`, whose rows are stories of context and question
lines (each question becomes one item, its story the context lines before it), or the flat
`Muennighoff/babi` (`passage`, `question`, `answer`, `task`; lm-evaluation-harness's source).

Every loader takes `data_files`: a local JSON/JSONL or parquet file of the same shape, read
instead of the Hub (that is how the tests run offline).
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from harness import UsageError, load_hub_dataset

from .generators import LABELS, BabiItem, FLDItem

FLD_REPO = "hitachi-nlp/FLD.v2"
FLD_CONFIGS = ("default", "star")
BABI_REPOS = ("facebook/babi_qa", "Muennighoff/babi")


def _load_dataset(path: str, config: str | None, split: str, data_files: str | None) -> Any:
    if data_files:
        builder = "parquet" if str(data_files).endswith(".parquet") else "json"
        return load_hub_dataset(builder, data_files=str(data_files), split="train", fallback="source=gen")
    return load_hub_dataset(path, config, split=split, fallback="source=gen")


def _label(value: Any, row: int) -> str:
    """FLD.v2 writes PROVED / DISPROVED / UNKNOWN; older serialisations `__PROVED__` and lower case."""
    label = str(value).strip().strip("_").upper()
    if label not in LABELS:
        raise UsageError(f"FLD row {row}: world_assump_label {value!r} is not one of {', '.join(LABELS)}; check the data file")
    return label


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def fld_items(records: Iterable[dict], source: str) -> list[FLDItem]:
    """FLD.v2 rows as FLDItems; the proofs are not kept (the task scores the label only)."""
    items = []
    for k, r in enumerate(records):
        context = r["context"] if r.get("context") is not None else r["facts"]
        items.append(
            FLDItem(
                f"{source}/{k}",
                str(context).strip(),
                str(r["hypothesis"]).strip(),
                _label(r["world_assump_label"], k),
                _optional_int(r.get("depth")),
                _optional_int(r.get("num_all_distractors")),
                (),
                source,
            )
        )
    return items


def load_fld_hub(
    config: str = "default", split: str = "test", limit: int | None = None, data_files: str | None = None
) -> list[FLDItem]:
    """FLD (`default`) or FLD* (`star`) from `hitachi-nlp/FLD.v2`, the first `limit` rows."""
    if config not in FLD_CONFIGS:
        raise UsageError(f"FLD.v2 has no config {config!r}: use default (FLD) or star (FLD*)")
    rows = _load_dataset(FLD_REPO, config, split, data_files)
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    return fld_items(rows, f"hub:{FLD_REPO}:{config}:{split}")


def _story_lines(story: Any) -> list[dict]:
    """babi_qa's `story` as a list of line dicts: the Hub's datasets return a dict of lists,
    a JSON file a list of dicts; `type` is 0/1 (ClassLabel) or the names context/question."""
    if isinstance(story, dict):
        keys = list(story)
        story = [dict(zip(keys, values)) for values in zip(*(story[k] for k in keys))]
    lines = []
    for line in story:
        kind = line["type"]
        lines.append({**line, "type": {0: "context", 1: "question"}.get(kind, kind)})
    return lines


def babi_qa_items(records: Iterable[dict], task: int, source: str) -> list[BabiItem]:
    """facebook/babi_qa stories: one item per question line, its story the context lines before it."""
    items = []
    for s, row in enumerate(records):
        context: list[str] = []
        for line in _story_lines(row["story"]):
            if line["type"] == "question":
                items.append(
                    BabiItem(
                        f"{source}/{len(items)}",
                        task,
                        tuple(context),
                        line["text"].strip(),
                        str(line["answer"]).strip(),
                        source,
                        story_id=f"{source}/story{s}",
                    )
                )
            else:
                context.append(line["text"].strip())
    return items


def babi_flat_items(records: Iterable[dict], task: int, source: str) -> list[BabiItem]:
    """Muennighoff/babi rows of bAbI task `task` (the file mixes all twenty)."""
    items: list[BabiItem] = []
    stories, previous = 0, ()
    for r in records:
        if int(r["task"]) != task:
            continue
        story = tuple(re.sub(r"^\d+\s+", "", line.strip()) for line in str(r["passage"]).splitlines() if line.strip())
        if not (previous and story[: len(previous)] == previous):  # a story's later questions extend its passage
            stories += 1
        previous = story
        items.append(
            BabiItem(
                f"{source}/{len(items)}",
                task,
                story,
                str(r["question"]).strip(),
                str(r["answer"]).strip(),
                source,
                story_id=f"{source}/story{stories}",
            )
        )
    return items


def load_babi_hub(
    task: int, split: str = "test", limit: int | None = None, repo: str = "facebook/babi_qa", data_files: str | None = None
) -> list[BabiItem]:
    """bAbI task `task` from `facebook/babi_qa` (config en-qa{task}) or `Muennighoff/babi`, first `limit` items."""
    if repo not in BABI_REPOS:
        raise UsageError(f"babi_repo={repo}: use {' or '.join(BABI_REPOS)}")
    if not 1 <= task <= 20:
        raise UsageError(f"bAbI has tasks 1 to 20, not {task}")
    if repo == "facebook/babi_qa":
        rows = _load_dataset(repo, f"en-qa{task}", split, data_files)
        items = babi_qa_items(rows, task, f"hub:{repo}:en-qa{task}:{split}")
    else:
        rows = _load_dataset(repo, None, split, data_files)
        items = babi_flat_items(rows, task, f"hub:{repo}:{split}")
    return items if limit is None else items[:limit]
