"""Where the sentences and multiple-choice items come from.

The shipped sample (written for this project) runs offline; DREAM and AQuA-RAT come from
the Hub through `datasets`, and RealtimeQA from its weekly `*_qa.jsonl` files on disk
(`source=file:PATH`). Every loader returns the same `Data`.
"""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness import UsageError, load_hub_dataset
from tasks.scrambled_text.prompts import LETTERS, aqua_prompt, dialogue_prompt, evidence_prompt
from tasks.scrambled_text.scramble import collapse_spaces

DATA = Path(__file__).resolve().parent / "data"


@dataclass
class QAItem:
    id: str
    context: str  # the text that gets scrambled
    question: str
    choices: list[str]
    answer: str  # a letter
    style: Literal["evidence", "dialogue", "aqua"] = "evidence"

    def prompt(self, context: str, likelihood: bool = True) -> str:
        if self.style == "dialogue":
            return dialogue_prompt(self.question, self.choices, context)
        if self.style == "aqua":
            return aqua_prompt(context, self.choices, likelihood)
        return evidence_prompt(self.question, self.choices, context)


@dataclass
class Data:
    sentences: list[str]
    qa: list[QAItem]
    source: str


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_sample() -> Data:
    """The shipped sample: 200 sentences and 60 three-option questions, written for this project."""
    sentences = [r["text"] for r in _jsonl(DATA / "sentences.jsonl")]
    qa = [
        QAItem(r["id"], r["context"], r["question"], list(r["choices"]), r["answer"], "evidence")
        for r in _jsonl(DATA / "qa.jsonl")
    ]
    return Data(sentences, qa, "sample")


def strip_tags(text: str) -> str:
    return re.sub(r"<[^>]+>", "", text)


def load_realtimeqa(path: str) -> Data:
    """RealtimeQA weekly `*_qa.jsonl` files (a file or a folder): evidence texts for ScrRec and QA."""
    p = Path(path)
    files = sorted(glob.glob(str(p / "*qa.jsonl"))) if p.is_dir() else [str(p)]
    if not files or not all(Path(f).is_file() for f in files):
        raise UsageError(f"source=file:{path}: no RealtimeQA *_qa.jsonl file there; point it at a weekly file or their folder")
    sentences, qa = [], []
    for f in files:
        for k, r in enumerate(_records(f)):
            evidence = collapse_spaces(strip_tags(r.get("evidence") or "")).strip()
            if not evidence:
                continue
            if not evidence.endswith("."):
                evidence += "."
            try:
                answer = r["answer"][0] if isinstance(r["answer"], list) else r["answer"]
                item = QAItem(
                    f"{Path(f).stem}:{k}",
                    evidence,
                    str(r["question_sentence"]),
                    [str(c) for c in r["choices"]],
                    LETTERS[int(answer)],
                    "evidence",
                )
            except (KeyError, TypeError, ValueError, IndexError) as e:
                raise UsageError(
                    f"source=file:{path}: record {k + 1} of {f} is not a RealtimeQA question ({type(e).__name__}: "
                    f"{e}); it needs question_sentence, choices, answer and evidence"
                ) from None
            sentences.append(evidence)
            qa.append(item)
    if not qa:
        raise UsageError(f"source=file:{path}: no record with an evidence text; point it at RealtimeQA *_qa.jsonl files")
    return Data(sentences, qa, f"file:{path}")


def _records(f: str) -> list[dict]:
    """The JSON objects of one JSON-lines file, or a one-line UsageError saying why the file is not one."""
    try:
        records = _jsonl(Path(f))
    except UnicodeDecodeError:
        raise UsageError(f"source=file:{f} is not a text file; point it at a RealtimeQA *_qa.jsonl file") from None
    except json.JSONDecodeError as e:
        raise UsageError(
            f"source=file:{f} is not JSON lines ({e.msg}, line {e.lineno}); point it at a RealtimeQA *_qa.jsonl file"
        ) from None
    if not all(isinstance(r, dict) for r in records):
        raise UsageError(f"source=file:{f}: every line must be a JSON object (a RealtimeQA question)")
    return records


def dream_items(records: Any) -> list[QAItem]:
    """DREAM records (fields dialogue: list of turns, question, choice: 3 options, answer: the option text)."""
    items = []
    for k, r in enumerate(records):
        choices = list(r["choice"])
        items.append(
            QAItem(
                str(r.get("id", k)),
                "\n".join(r["dialogue"]),
                r["question"],
                choices,
                LETTERS[choices.index(r["answer"])],
                "dialogue",
            )
        )
    return items


def aqua_items(records: Any) -> list[QAItem]:
    """AQuA-RAT records (fields question, options: 'A)21', ..., correct: a letter)."""
    items = []
    for k, r in enumerate(records):
        options = [re.sub(r"^\s*[A-E]\s*\)\s*", "", o) for o in r["options"]]
        items.append(QAItem(f"aqua:{k}", r["question"], "", options, r["correct"].strip(), "aqua"))
    return items


def load_hub(qa_dataset: str, data_files: str | None = None) -> Data:
    """DREAM (`dataset-org/dream`, test) or AQuA-RAT (`deepmind/aqua_rat`, raw, test).

    `data_files`: a local JSON/JSONL file of the same shape instead of the Hub (for tests).
    ScrRec has no Hub copy of RealtimeQA: DREAM dialogues stand in for its sentences.
    """
    if qa_dataset == "dream":
        ds = (
            load_hub_dataset("json", data_files=data_files, split="train")
            if data_files
            else load_hub_dataset("dataset-org/dream", split="test")
        )
        qa = dream_items(ds)
        return Data([q.context for q in qa if q.context], qa, "hub:dataset-org/dream")
    ds = (
        load_hub_dataset("json", data_files=data_files, split="train")
        if data_files
        else load_hub_dataset("deepmind/aqua_rat", "raw", split="test")
    )
    qa = aqua_items(ds)
    return Data([q.context for q in qa], qa, "hub:deepmind/aqua_rat")


def _unique_by_text(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
