"""Items and examples for in-context unlearning: the shipped sample, TOFU and the AGE file.

Every source maps to the same `QAItem`; each item then gives two `Example`s. The forget
example tags the fact the question needs (gold `forgot`); the retain example tags an
unrelated one (gold: the true answer). What gets tagged follows the authors' code:
TOFU tags the answer (retain: one of its perturbed answers), AGE tags the person
(retain: one of the ten other people in `choices`); the sample supports both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Optional, Sequence

import numpy as np

from harness import UsageError, load_hub_dataset

DATA = Path(__file__).resolve().parent / "data"
SAMPLE_FILE = DATA / "fictional_authors.jsonl"
TOFU = "locuslab/TOFU"
TOFU_ID_CONFIG = "real_authors_perturbed"
TOFU_OOD_CONFIG = "world_facts_perturbed"
AGE_TRAIN_PEOPLE = 200
AGE_EVAL_PEOPLE = 100
AGE_FIELDS = ("question", "answer", "person")
FORGOT = "forgot"

Target = Literal["answer", "subject"]
Kind = Literal["forget", "retain"]


@dataclass(frozen=True)
class QAItem:
    """One question with its true answer and the unrelated targets its retain example may tag."""

    id: str
    question: str
    answer: str
    subject: str  # the author or person asked about; "" where the source names none (TOFU)
    distractors: tuple[str, ...]  # same-type wrong answers (TOFU perturbed_answer)
    other_subjects: tuple[str, ...]  # other people (AGE choices; other authors of the sample split)


@dataclass(frozen=True)
class TaskData:
    """Train and eval items of one source and domain, with what each split's forget tags hold.

    The targets differ between splits only for AGE OOD, whose eval set is TOFU world facts.
    """

    train: list[QAItem]
    eval: list[QAItem]
    source: str
    domain: str
    train_target: Target
    eval_target: Target


@dataclass(frozen=True)
class Example:
    """One prompt case: `target` goes between the forget tags, `gold` is the reply wanted."""

    item_id: str
    kind: Kind
    question: str
    target: str
    gold: str
    answer: str  # the item's true answer, for both kinds (lenient forget scoring, logit lens)


def make_examples(items: Sequence[QAItem], target: Target, rng: np.random.Generator) -> list[Example]:
    """A forget and a retain example per item, in item order (forget first).

    The retain target is drawn from the item's distractors (target=answer) or other
    subjects (target=subject), never equal to the answer or the item's own subject.
    """
    examples = []
    for item in items:
        forget_target = item.answer if target == "answer" else item.subject
        pool = item.distractors if target == "answer" else item.other_subjects
        pool = [p for p in dict.fromkeys(pool) if _norm(p) not in (_norm(item.answer), _norm(item.subject))]
        if not forget_target or not pool:
            raise UsageError(
                f"item {item.id} has no {'subject' if target == 'subject' else 'wrong answer'} to tag "
                f"for target={target}: use --task-arg target={'answer' if target == 'subject' else 'subject'}"
            )
        retain_target = pool[int(rng.integers(len(pool)))]
        examples.append(Example(item.id, "forget", item.question, forget_target, FORGOT, item.answer))
        examples.append(Example(item.id, "retain", item.question, retain_target, item.answer, item.answer))
    return examples


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


# ---------------------------------------------------------------------------------------
# Shipped sample
# ---------------------------------------------------------------------------------------


def sample_records(path: Path = SAMPLE_FILE) -> list[dict[str, Any]]:
    """The raw sample rows: id, author, question, answer, distractors, split (train/eval)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_sample(target: Target = "answer", path: Path = SAMPLE_FILE) -> TaskData:
    """The shipped sample: 100 questions on 25 invented authors, 20 authors train, 5 eval (ID only).

    A retain example with target=subject tags another author of the same split, so no
    eval author appears in a training prompt.
    """
    rows = sample_records(path)
    splits = {}
    for split in ("train", "eval"):
        mine = [r for r in rows if r["split"] == split]
        authors = list(dict.fromkeys(r["author"] for r in mine))
        splits[split] = [
            QAItem(
                r["id"],
                r["question"],
                r["answer"],
                r["author"],
                tuple(r["distractors"]),
                tuple(a for a in authors if a != r["author"]),
            )
            for r in mine
        ]
    return TaskData(splits["train"], splits["eval"], "sample", "id", target, target)


# ---------------------------------------------------------------------------------------
# TOFU (Hub) and AGE (local file)
# ---------------------------------------------------------------------------------------


def _tofu_split(config: str, split: str, data_files: Optional[Mapping[str, str]]) -> Any:
    """One TOFU config, sliced as the authors did (`train[:80%]`); a local file of the same shape in tests."""
    if data_files is not None:
        return load_hub_dataset("json", data_files=data_files[config], split=split)
    return load_hub_dataset(TOFU, config, split=split)


def tofu_items(rows: Iterable[Mapping[str, Any]], prefix: str, start: int = 0) -> list[QAItem]:
    """TOFU rows (question, answer, perturbed_answer: list of wrong answers) as items."""
    return [
        QAItem(f"{prefix}:{start + k}", r["question"], r["answer"], "", tuple(r["perturbed_answer"]), ())
        for k, r in enumerate(rows)
    ]


def tofu_world_facts(data_files: Optional[Mapping[str, str]] = None) -> list[QAItem]:
    """TOFU `world_facts_perturbed` (117 rows), the OOD eval set of both TOFU and AGE."""
    return tofu_items(_tofu_split(TOFU_OOD_CONFIG, "train", data_files), f"tofu:{TOFU_OOD_CONFIG}")


def load_tofu(domain: str, data_files: Optional[Mapping[str, str]] = None) -> TaskData:
    """TOFU as the authors split it: ID = `real_authors_perturbed` first 80% / last 20%;
    OOD = all of `real_authors_perturbed` / `world_facts_perturbed`.

    `data_files` maps each config name to a local JSON/JSONL file of the same shape.
    """
    prefix = f"tofu:{TOFU_ID_CONFIG}"
    if domain == "id":
        train = tofu_items(_tofu_split(TOFU_ID_CONFIG, "train[:80%]", data_files), prefix)
        eval_ = tofu_items(_tofu_split(TOFU_ID_CONFIG, "train[80%:]", data_files), prefix, start=len(train))
    else:
        train = tofu_items(_tofu_split(TOFU_ID_CONFIG, "train", data_files), prefix)
        eval_ = tofu_world_facts(data_files)
    return TaskData(train, eval_, f"hub:{TOFU}", domain, "answer", "answer")


def age_items(rows: Iterable[Mapping[str, Any]], prefix: str) -> list[QAItem]:
    """AGE rows (question, answer, person, choices: ten other people) as items."""
    return [QAItem(f"{prefix}:{k}", r["question"], r["answer"], r["person"], (), tuple(r["choices"])) for k, r in enumerate(rows)]


def split_by_person(rows: Sequence[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """People in order of first appearance: the first 200 train, the next 100 eval (valid)."""
    order = {p: i for i, p in enumerate(dict.fromkeys(r["person"] for r in rows))}
    train = [r for r in rows if order[r["person"]] < AGE_TRAIN_PEOPLE]
    eval_ = [r for r in rows if AGE_TRAIN_PEOPLE <= order[r["person"]] < AGE_TRAIN_PEOPLE + AGE_EVAL_PEOPLE]
    return train, eval_


def _age_rows(path: Path) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    if path.is_dir():  # the authors' `save_to_disk` folder, with splits train and valid
        import datasets

        saved = datasets.load_from_disk(str(path))
        if not {"train", "valid"} <= set(saved.keys()):
            raise UsageError(f"age_path={path}: the saved data set needs splits train and valid; or give a JSON/JSONL file")
        return list(saved["train"]), list(saved["valid"])
    if not path.is_file():
        raise UsageError(f"age_path={path}: no such file; give the AGE JSON/JSONL file or the authors' saved folder")
    return split_by_person(list(load_hub_dataset("json", data_files=str(path), split="train")))


def load_age(path: str, domain: str, tofu_files: Optional[Mapping[str, str]] = None) -> TaskData:
    """AGE from a local file (not on the Hub): a JSON/JSONL file (fields question, answer,
    person, choices; split by person order) or the authors' `save_to_disk` folder.

    ID evaluates on AGE's valid people; OOD on TOFU `world_facts_perturbed`, tagged TOFU style.
    """
    train_rows, eval_rows = _age_rows(Path(path))
    for r in [*train_rows, *eval_rows]:
        if not isinstance(r.get("choices"), (list, tuple)) or not all(isinstance(r.get(f), str) for f in AGE_FIELDS):
            raise UsageError(
                f"age_path={path}: every row needs strings {', '.join(AGE_FIELDS)} and a list of choices; "
                f"a row has {sorted(r)[:8]}: give the AGE file as published"
            )
    if not train_rows or (domain == "id" and not eval_rows):
        people = len({r["person"] for r in [*train_rows, *eval_rows]})
        raise UsageError(
            f"age_path={path}: {people} people leave no {'training' if not train_rows else 'evaluation'} "
            f"items (the first {AGE_TRAIN_PEOPLE} people train, the next {AGE_EVAL_PEOPLE} evaluate): "
            "give the whole AGE file, or domain=ood"
        )
    train = age_items(train_rows, "age:train")
    if domain == "id":
        return TaskData(train, age_items(eval_rows, "age:valid"), f"age_file:{path}", domain, "subject", "subject")
    return TaskData(train, tofu_world_facts(tofu_files), f"age_file:{path}", domain, "subject", "answer")


def load_data(
    source: str,
    domain: str = "id",
    target: Optional[Target] = None,
    age_path: Optional[str] = None,
    data_files: Optional[Mapping[str, str]] = None,
) -> TaskData:
    """The items a run uses. `target` chooses what the sample's forget tags hold; TOFU
    always tags the answer and AGE the person (None: the source's own).
    """
    if domain not in ("id", "ood"):
        raise UsageError(f"domain={domain}: use domain=id or domain=ood")
    if target not in (None, "answer", "subject"):
        raise UsageError(f"target={target}: use target=answer or target=subject")
    if source == "sample":
        if domain == "ood":
            raise UsageError("the shipped sample has no OOD split: use domain=id, or source=hub or source=age_file")
        return load_sample(target or "answer")
    if source == "hub":
        if target == "subject":
            raise UsageError("TOFU questions name no subject to tag: use target=answer with source=hub")
        return load_tofu(domain, data_files)
    if source == "age_file":
        if not age_path:
            raise UsageError("source=age_file needs the file: --task-arg age_path=PATH")
        if target == "answer":
            raise UsageError("AGE items carry no wrong answers to tag: use target=subject with source=age_file")
        return load_age(age_path, domain, data_files)
    raise UsageError(f"source={source}: use source=sample, source=hub or source=age_file")
