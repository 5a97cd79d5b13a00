"""code_vs_language data side: generators, hub loaders on local files, prompts, parsing.

The FLD labels are re-derived here by forward chaining over the item's English sentences
(every generated sentence is a Horn clause), an algorithm independent of the generator's
truth tables; the bAbI answers by replaying each story on a simulator written for the test.
"""

import json
import re
from collections import Counter
from dataclasses import asdict

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import UsageError
from tasks.code_vs_language.generators import BABI_TASKS, LABELS, BabiItem, FLDItem, babi_candidates, generate_babi, generate_fld
from tasks.code_vs_language.loaders import load_babi_hub, load_fld_hub
from tasks.code_vs_language.prompts import (
    BABI_INSTRUCTION,
    FLD_INSTRUCTION,
    build_prompt,
    choices,
    hub_candidates,
    parse_answer,
    pick_shots,
)


@pytest.fixture(scope="module")
def fld3000():
    return generate_fld(3000, seed=0)


def _dump(items) -> str:
    return json.dumps([asdict(i) for i in items], sort_keys=True)


# ---------------------------------------------------------------------------------------
# Test-side FLD checker: parse the sentences, forward-chain over Horn clauses
# ---------------------------------------------------------------------------------------

_IS = re.compile(r"^the (\w+) is (not )?(\w+)$")


def _literal(text):
    m = _IS.match(text)
    assert m, text
    return (m[3], m[1]), m[2] is None


def _parse(sentence):
    """(premise properties, conclusion property, positive, name or None for every thing)."""
    if m := re.match(r"^(every|no) (.+) thing is (\w+)$", sentence):
        return tuple(m[2].split(" and ")), m[3], m[1] == "every", None
    if m := re.match(r"^if (.+), then (.+)$", sentence):
        premises = [_literal(t) for t in m[1].split(" and ")]
        (prop, name), positive = _literal(m[2])
        assert all(sign and n == name for (_, n), sign in premises), sentence
        return tuple(p for (p, _), _ in premises), prop, positive, name
    (prop, name), positive = _literal(sentence)
    return (), prop, positive, name


def _closure(definite, start):
    known = set(start)
    changed = True
    while changed:
        changed = False
        for body, head in definite:
            if head not in known and all(b in known for b in body):
                known.add(head)
                changed = True
    return known


def forward_chain_label(context, hypothesis):
    sentences = [s for s in re.split(r"\s*sent\d+:\s*", context) if s]
    formulas = [_parse(s.rstrip(".")) for s in sentences]
    (h_prop, h_name), h_positive = _literal(hypothesis.rstrip("."))
    names = {n for *_, n in formulas if n is not None} | {h_name}
    definite, goals = [], []  # Horn clauses: body -> head, and bodies that must not all hold
    for premises, prop, positive, name in formulas:
        for n in [name] if name else sorted(names):
            body = tuple((p, n) for p in premises)
            (definite if positive else goals).append((body, (prop, n)) if positive else body + ((prop, n),))
    facts = [head for body, head in definite if not body]
    rules = [(body, head) for body, head in definite if body]

    def consistent(extra):
        model = _closure(rules, facts + extra)
        return not any(all(a in model for a in goal) for goal in goals)

    if not consistent([]):
        return None
    atom = (h_prop, h_name)
    atom_entailed = atom in _closure(rules, facts)
    negation_entailed = not consistent([atom])
    if h_positive:
        return "PROVED" if atom_entailed else "DISPROVED" if negation_entailed else "UNKNOWN"
    return "PROVED" if negation_entailed else "DISPROVED" if atom_entailed else "UNKNOWN"


def test_the_test_checker_itself_tells_the_three_labels_apart():
    context = "sent1: the wug is red. sent2: every red thing is loud. sent3: if the wug is loud, then the wug is not soft."
    assert forward_chain_label(context, "the wug is loud.") == "PROVED"
    assert forward_chain_label(context, "the wug is not loud.") == "DISPROVED"
    assert forward_chain_label(context, "the wug is soft.") == "DISPROVED"
    assert forward_chain_label(context, "the wug is round.") == "UNKNOWN"
    assert forward_chain_label(context + " sent4: the wug is soft.", "the wug is round.") is None


# ---------------------------------------------------------------------------------------
# FLD generator (criterion 1)
# ---------------------------------------------------------------------------------------


def test_fld_same_seed_gives_identical_items_and_other_seeds_differ():
    a = generate_fld(60, seed=0)
    assert _dump(a) == _dump(generate_fld(60, seed=0))
    assert _dump(a) != _dump(generate_fld(60, seed=1))
    shots = generate_fld(60, seed=0, split="shots")
    assert {i.context for i in shots}.isdisjoint({i.context for i in a})


def test_fld_labels_are_balanced_over_3000_items(fld3000):
    counts = Counter(i.answer for i in fld3000)
    assert set(counts) == set(LABELS)
    for label in LABELS:
        assert abs(counts[label] / 3000 - 1 / 3) <= 0.02


def test_negation_in_the_hypothesis_is_no_cue_for_the_label(fld3000):
    for label in LABELS:
        negated = [" not " in i.hypothesis for i in fld3000 if i.answer == label]
        assert abs(sum(negated) / len(negated) - 0.5) < 0.05, label


def test_every_fld_label_agrees_with_forward_chaining(fld3000):
    wrong = [i.uid for i in fld3000 if forward_chain_label(i.context, i.hypothesis) != i.answer]
    assert wrong == []


def test_fld_proofs_have_depth_steps_and_cite_the_facts(fld3000):
    for item in fld3000:
        assert item.depth in (1, 2, 3) and 2 <= item.n_distractors <= 5
        n_sentences = len(re.findall(r"sent\d+:", item.context))
        if item.answer == "UNKNOWN":
            assert item.proof == ()
            continue
        assert len(item.proof) == item.depth
        assert item.proof[-1].endswith("-> hypothesis" if item.answer == "PROVED" else "-> \u00achypothesis")
        for ref in re.findall(r"sent(\d+)", " ".join(item.proof)):
            assert 1 <= int(ref) <= n_sentences


def test_every_proof_step_is_needed(fld3000):
    """Dropping any sentence the proof cites leaves the hypothesis UNKNOWN: no distractor short-cuts it."""
    for item in [i for i in fld3000 if i.answer != "UNKNOWN"][:300]:
        sentences = re.split(r"\s*sent\d+:\s*", item.context)[1:]
        for ref in {int(r) for r in re.findall(r"sent(\d+)", " ".join(item.proof))}:
            kept = " ".join(f"sent{k + 1}: {s}" for k, s in enumerate(sentences) if k + 1 != ref)
            assert forward_chain_label(kept, item.hypothesis) == "UNKNOWN", item.uid


def test_fld_depths_follow_the_option_and_bad_depths_are_refused():
    assert {i.depth for i in generate_fld(30, seed=3, depths=(2,))} == {2}
    assert {i.depth for i in generate_fld(30, seed=3, depths=(1, 3))} == {1, 3}
    with pytest.raises(UsageError, match="fld_depths"):
        generate_fld(3, depths=(4,))


# ---------------------------------------------------------------------------------------
# bAbI generators (criterion 2): a test-side story simulator re-derives every answer
# ---------------------------------------------------------------------------------------

_SINGULAR = {"mice": "mouse", "sheep": "sheep", "wolves": "wolf", "cats": "cat"}


def replay_answer(item: BabiItem):
    """Replay the story and answer the question from the resulting state."""
    at, holder, lying, trail = {}, {}, {}, {}

    def arrive(obj, place):
        if not trail.get(obj) or trail[obj][-1] != place:
            trail.setdefault(obj, []).append(place)

    fears, kind, colour = {}, {}, {}
    for line in item.story:
        if m := re.match(r"^(\w+) (?:went|moved|journeyed|travelled) to the (\w+)\.$", line):
            at[m[1]] = m[2]
            for obj in [o for o, who in holder.items() if who == m[1]]:
                arrive(obj, m[2])
        elif m := re.match(r"^(\w+) (?:picked up|got|grabbed) the (\w+)\.$", line):
            assert m[2] not in holder and lying.get(m[2], at[m[1]]) == at[m[1]], line
            holder[m[2]] = m[1]
            lying.pop(m[2], None)
            arrive(m[2], at[m[1]])
        elif m := re.match(r"^(\w+) (?:dropped|put down|discarded) the (\w+)\.$", line):
            assert holder.pop(m[2]) == m[1], line
            lying[m[2]] = at[m[1]]
        elif m := re.match(r"^(\w+) are afraid of (\w+)\.$", line):
            fears[_SINGULAR[m[1].lower()]] = _SINGULAR[m[2]]
        elif m := re.match(r"^(\w+) is an? (\w+)\.$", line):
            kind[m[1]] = m[2]
        elif m := re.match(r"^(\w+) is (\w+)\.$", line):
            colour[m[1]] = m[2]
        else:
            raise AssertionError(f"unparsed story line {line!r}")
    q = item.question
    if m := re.match(r"^Where is the (\w+)\?$", q):
        return at[holder[m[1]]] if m[1] in holder else lying[m[1]]
    if m := re.match(r"^Where is (\w+)\?$", q):
        return at[m[1]]
    if m := re.match(r"^Where was the (\w+) before the (\w+)\?$", q):
        places = trail[m[1]]
        assert places.count(m[2]) == 1, (places, q)
        return places[places.index(m[2]) - 1]
    if m := re.match(r"^What is (\w+) afraid of\?$", q):
        return fears[kind[m[1]]]
    if m := re.match(r"^What color is (\w+)\?$", q):
        seen = {colour[p] for p in colour if kind.get(p) == kind[m[1]]}
        assert len(seen) == 1, (seen, item.story)
        return seen.pop()
    raise AssertionError(f"unparsed question {q!r}")


@pytest.mark.parametrize("task", BABI_TASKS)
def test_babi_answers_are_rederived_by_replaying_the_story(task):
    items = generate_babi(task, 300, seed=0)
    assert all(replay_answer(i) == i.answer for i in items)
    assert all(4 <= len(i.story) <= 12 for i in items)
    assert all(i.answer in babi_candidates(task) for i in items)
    if task in (1, 2, 3):
        assert all(re.search(rf"\b{i.answer}\b", " ".join(i.story)) for i in items)
    assert len({i.answer for i in items}) > 1


@pytest.mark.parametrize("task", BABI_TASKS)
def test_babi_same_seed_gives_identical_items_and_other_seeds_differ(task):
    a = generate_babi(task, 40, seed=0)
    assert _dump(a) == _dump(generate_babi(task, 40, seed=0))
    assert _dump(a) != _dump(generate_babi(task, 40, seed=1))


def test_babi_task_without_a_generator_is_refused():
    with pytest.raises(UsageError, match="use one of 1, 2, 3, 15, 16"):
        generate_babi(4, 3)


# ---------------------------------------------------------------------------------------
# Prompts, shots, choices, parsing (criteria 2-4, data side)
# ---------------------------------------------------------------------------------------


def test_fld_prompt_layout():
    item = FLDItem("q", "sent1: the wug is red.", "the wug is red.", "PROVED", 0, 0, (), "t")
    shot = FLDItem("s", "sent1: the dax is blue.", "the dax is loud.", "UNKNOWN", 1, 2, (), "t")
    assert build_prompt(item, [shot]) == (
        f"{FLD_INSTRUCTION}\n\n"
        "Facts: sent1: the dax is blue.\nHypothesis: the dax is loud.\nAnswer: UNKNOWN\n\n"
        "Facts: sent1: the wug is red.\nHypothesis: the wug is red.\nAnswer:"
    )


def test_babi_prompt_layout():
    item = BabiItem("q", 1, ("Mary went to the kitchen.", "John went to the garden."), "Where is Mary?", "kitchen", "t")
    prompt = build_prompt(item, [])
    assert prompt == (
        f"{BABI_INSTRUCTION}\n\nStory: Mary went to the kitchen. John went to the garden.\nQuestion: Where is Mary?\nAnswer:"
    )


def test_fld_shots_are_fixed_per_seed_label_balanced_and_unlike_every_query():
    queries = generate_fld(30, seed=0)
    pool = generate_fld(30, seed=0, split="shots") + queries[:10]  # a pool that contains queries
    shots = pick_shots(pool, queries, 3, seed=0)
    assert sorted(s.answer for s in shots) == sorted(LABELS)
    assert {s.context for s in shots}.isdisjoint({q.context for q in queries})
    assert [s.uid for s in shots] == [s.uid for s in pick_shots(pool, queries, 3, seed=0)]
    assert any([s.uid for s in pick_shots(pool, queries, 3, seed=s)] != [s.uid for s in shots] for s in range(1, 6))
    for k in (1, 2, 5):
        assert len(pick_shots(pool, queries, k, seed=0)) == k


def test_babi_shots_never_equal_a_query_even_when_the_pool_holds_copies():
    queries = generate_babi(1, 50, seed=0)
    pool = queries + generate_babi(1, 5, seed=0, split="shots")
    for seed in range(10):
        shots = pick_shots(pool, queries, 3, seed=seed)
        assert len(shots) == 3
        assert not {(s.story, s.question) for s in shots} & {(q.story, q.question) for q in queries}
        prompt = build_prompt(queries[0], shots)
        assert prompt.count("Story:") == 4 and prompt.count("\n\n") == 4


def test_too_many_shots_for_the_pool_is_a_usage_error():
    queries = generate_babi(1, 5, seed=0)
    with pytest.raises(UsageError, match="fewer shots"):
        pick_shots(queries, queries, 1, seed=0)


def test_choices_are_spaced_continuations_with_the_gold_index():
    item = FLDItem("q", "sent1: the wug is red.", "the wug is loud.", "UNKNOWN", 1, 2, (), "t")
    c = choices(item, LABELS)
    assert c.continuations == (" PROVED", " DISPROVED", " UNKNOWN") and c.gold == 2
    babi = generate_babi(16, 5, seed=0)[0]
    c = choices(babi, babi_candidates(16))
    assert c.continuations[c.gold] == f" {babi.answer}" and len(c.continuations) == 4


def test_hub_candidates_are_every_gold_answer_of_the_split():
    items = [BabiItem(str(k), 1, (), "Where is Mary?", a, "t") for k, a in enumerate(["office", "garden", "office"])]
    assert hub_candidates(items) == ("garden", "office")


@pytest.mark.parametrize(
    "text, expected",
    [
        (" proved.", "PROVED"),
        ("DISPROVED\nFacts: ...", "DISPROVED"),
        (" Unknown, because", "UNKNOWN"),
        ("I think", None),
        (" PROVEDX", None),
        ("", None),
        ("\n", None),
    ],
)
def test_parse_fld_labels(text, expected):
    assert parse_answer(text, LABELS) == expected


def test_parse_babi_words_is_lower_case_first_word_only():
    places = babi_candidates(1)
    assert parse_answer(" Kitchen.", places) == "kitchen"
    assert parse_answer(" the kitchen", places) is None
    assert parse_answer(" office\nkitchen", places) == "office"


# ---------------------------------------------------------------------------------------
# Hub loaders on local files of each shape (criterion 5), no network
# ---------------------------------------------------------------------------------------


def _fld_row(context, hypothesis, label, depth):
    return {
        "context": context,
        "hypothesis": hypothesis,
        "world_assump_label": label,
        "proofs": ["sent1 -> hypothesis;"] if depth else [],
        "prompt_serial": "$hypothesis$ = ...",
        "proof_serial": "... __PROVED__",
        "depth": depth,
        "num_all_distractors": 3,
    }


FLD_ROWS = [
    _fld_row("sent1: the Napoleon is a Mongol. sent2: ...", "the Napoleon is a Mongol.", "PROVED", 1),
    _fld_row("sent1: the tongue is not red.", "the tongue is red.", "DISPROVED", 1),
    _fld_row("sent1: a compline holds.", "the Mongol is loud.", "UNKNOWN", None),
]


def test_fld_loader_maps_a_jsonl_file_keeping_label_meaning(tmp_path):
    path = tmp_path / "fld.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in FLD_ROWS))
    items = load_fld_hub("default", data_files=str(path))
    assert [i.answer for i in items] == ["PROVED", "DISPROVED", "UNKNOWN"]
    assert items[1].context == "sent1: the tongue is not red." and items[1].hypothesis == "the tongue is red."
    assert [i.depth for i in items] == [1, 1, None] and items[0].n_distractors == 3
    assert len(load_fld_hub("star", limit=2, data_files=str(path))) == 2


def test_fld_loader_reads_parquet_and_old_label_markers(tmp_path):
    rows = [dict(r, world_assump_label=f"__{r['world_assump_label']}__") for r in FLD_ROWS]
    path = tmp_path / "fld.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert [i.answer for i in load_fld_hub("star", data_files=str(path))] == ["PROVED", "DISPROVED", "UNKNOWN"]


def test_fld_loader_refuses_bad_labels_configs_and_missing_files(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_fld_row("sent1: x.", "y.", "MAYBE", 1)) + "\n")
    with pytest.raises(UsageError, match="MAYBE"):
        load_fld_hub(data_files=str(path))
    with pytest.raises(UsageError, match="default .* or star"):
        load_fld_hub("hard")
    with pytest.raises(UsageError, match="cannot load"):
        load_fld_hub(data_files=str(tmp_path / "missing.jsonl"))


STORY = [
    ("1", "context", "Mary moved to the bathroom.", [], ""),
    ("2", "context", "John went to the hallway.", [], ""),
    ("3", "question", "Where is Mary? ", ["1"], "bathroom"),
    ("4", "context", "Daniel went back to the hallway.", [], ""),
    ("5", "context", "Mary travelled to the office.", [], ""),
    ("6", "question", "Where is Mary?", ["5"], "office"),
]


def _check_babi_items(items):
    assert [i.answer for i in items] == ["bathroom", "office"]
    assert items[0].story == ("Mary moved to the bathroom.", "John went to the hallway.")
    assert items[1].story[-1] == "Mary travelled to the office." and len(items[1].story) == 4
    assert items[0].question == "Where is Mary?" and items[0].task == 1


def test_babi_qa_loader_reads_the_hub_parquet_shape(tmp_path):
    import datasets

    features = datasets.Features(
        {
            "story": datasets.Sequence(
                {
                    "id": datasets.Value("string"),
                    "type": datasets.ClassLabel(names=["context", "question"]),
                    "text": datasets.Value("string"),
                    "supporting_ids": datasets.Sequence(datasets.Value("string")),
                    "answer": datasets.Value("string"),
                }
            )
        }
    )
    story = {
        "id": [s[0] for s in STORY],
        "type": [0 if s[1] == "context" else 1 for s in STORY],
        "text": [s[2] for s in STORY],
        "supporting_ids": [s[3] for s in STORY],
        "answer": [s[4] for s in STORY],
    }
    path = tmp_path / "babi_qa.parquet"
    datasets.Dataset.from_dict({"story": [story]}, features=features).to_parquet(str(path))
    _check_babi_items(load_babi_hub(1, data_files=str(path)))


def test_babi_qa_loader_reads_a_json_file_of_story_lines(tmp_path):
    lines = [dict(zip(("id", "type", "text", "supporting_ids", "answer"), s)) for s in STORY]
    path = tmp_path / "babi_qa.jsonl"
    path.write_text(json.dumps({"story": lines}) + "\n")
    items = load_babi_hub(1, data_files=str(path))
    _check_babi_items(items)
    assert len(load_babi_hub(1, limit=1, data_files=str(path))) == 1


def test_flat_babi_loader_keeps_only_the_task(tmp_path):
    rows = [
        {
            "passage": "Mary moved to the bathroom.\nJohn went to the hallway.\n",
            "question": "Where is Mary?",
            "answer": "bathroom",
            "task": 1,
        },
        {"passage": "Mary got the milk.\n", "question": "Where is the milk?", "answer": "garden", "task": 2},
        {
            "passage": "Daniel went back to the hallway.\nMary moved to the bathroom.\nJohn went to the hallway.\n"
            "Mary travelled to the office.\n",
            "question": "Where is Mary?",
            "answer": "office",
            "task": 1,
        },
    ]
    path = tmp_path / "babi.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_babi_hub(1, repo="Muennighoff/babi", data_files=str(path))
    assert [i.answer for i in items] == ["bathroom", "office"]
    assert items[0].story == ("Mary moved to the bathroom.", "John went to the hallway.")
    assert [i.answer for i in load_babi_hub(2, repo="Muennighoff/babi", data_files=str(path))] == ["garden"]


def test_babi_loader_refuses_unknown_repo_and_task():
    with pytest.raises(UsageError, match="babi_repo"):
        load_babi_hub(1, repo="someone/babi")
    with pytest.raises(UsageError, match="tasks 1 to 20"):
        load_babi_hub(21)


def test_babi_questions_of_one_story_share_its_unit():
    """The unit an interval resamples is the story: its questions see the same lines."""
    from tasks.code_vs_language.loaders import babi_flat_items, babi_qa_items

    story = {
        "type": [0, 1, 0, 1],
        "text": ["Mary went to the kitchen.", "Where is Mary?", "Mary went to the garden.", "Where is Mary?"],
        "answer": ["", "kitchen", "", "garden"],
    }
    qa = babi_qa_items([{"story": story}, {"story": story}], task=1, source="hub")
    assert [i.unit for i in qa] == ["hub/story0", "hub/story0", "hub/story1", "hub/story1"]
    rows = [
        {"task": 1, "passage": "1 Mary went to the kitchen.", "question": "Where is Mary?", "answer": "kitchen"},
        {
            "task": 1,
            "passage": "1 Mary went to the kitchen.\n2 Mary went to the garden.",
            "question": "Where is Mary?",
            "answer": "garden",
        },
        {"task": 1, "passage": "1 Mary went to the kitchen.", "question": "Where is Mary?", "answer": "kitchen"},
    ]
    flat = babi_flat_items(rows, task=1, source="flat")
    assert [i.unit for i in flat] == ["flat/story1", "flat/story1", "flat/story2"]  # the third row starts a new story
