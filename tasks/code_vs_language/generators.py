"""Generated FLD-style deductions and bAbI-style stories, deterministic for a seed.

The labels are never taken from a template. An FLD-style item is built around an intended
proof, but its label is what a truth-table entailment check over the item's own sentences
says (first-order rules grounded over the item's names); an item whose check disagrees with
the intention, or whose facts contradict each other, is thrown away and drawn again. A
bAbI-style answer is read off a small world simulator that the story's events were played
on (who is where, who holds what, where each object has been).

Each generator draws from its own random stream named by (sub-task, split, seed), so the
few-shot pool (split "shots") and the test items (split "test") never share a stream.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np

from harness import UsageError

LABELS = ("PROVED", "DISPROVED", "UNKNOWN")
FLD_DEPTHS = (1, 2, 3)
BABI_TASKS = (1, 2, 3, 15, 16)
MAX_ATOMS = 10  # truth tables of at most 2**10 rows

NAMES = ("wug", "blicket", "dax", "fep", "toma", "zorp", "gazzer", "tulver")
PROPERTIES = ("red", "blue", "green", "loud", "soft", "round", "shiny", "heavy", "small", "warm", "tall", "quiet")

PEOPLE = ("Mary", "John", "Sandra", "Daniel", "Gertrude", "Bernhard")
PLACES = ("kitchen", "garden", "hallway", "bathroom", "office", "bedroom")
OBJECTS = ("apple", "football", "milk", "book")
SPECIES = {"mouse": "mice", "sheep": "sheep", "wolf": "wolves", "cat": "cats"}  # singular -> plural
COLOURS = ("white", "yellow", "green", "gray")
MOVE_VERBS = ("went to", "moved to", "journeyed to", "travelled to")
TAKE_VERBS = ("picked up", "got", "grabbed")
DROP_VERBS = ("dropped", "put down", "discarded")


@dataclass(frozen=True)
class FLDItem:
    """One deduction problem: `context` fills the prompt's Facts line (FLD's `sent1: ...` form).

    `proof` has one step per rule application in FLD's notation (`sent2 & sent5 -> int1: ...`),
    so its length is `depth`; it is empty for UNKNOWN items, whose `depth` is that of the
    proof they were cut from. Hub items carry FLD.v2's own depth and distractor count.
    """

    uid: str
    context: str
    hypothesis: str
    answer: str
    depth: int | None
    n_distractors: int | None
    proof: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class BabiItem:
    """One bAbI question: the story lines before it, the question, a one-word answer.

    story_id: the story the question belongs to, shared by its questions (a bAbI story asks
    several): the unit an interval resamples. Empty: the question has a story of its own."""

    uid: str
    task: int
    story: tuple[str, ...]
    question: str
    answer: str
    source: str
    story_id: str = ""

    @property
    def unit(self) -> str:
        return self.story_id or self.uid


# ---------------------------------------------------------------------------------------
# FLD-style deductions
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Formula:
    """`premises -> (not) conclusion` about `name`; no premises: a fact; no name: every thing."""

    premises: tuple[str, ...]
    conclusion: str
    positive: bool
    name: str | None


def _is(name: str, prop: str, positive: bool) -> str:
    return f"the {name} is {'' if positive else 'not '}{prop}"


def _render(f: _Formula) -> str:
    if not f.premises:
        return _is(f.name, f.conclusion, f.positive)
    if f.name is None:
        kind = " and ".join(f.premises)
        return f"{'every' if f.positive else 'no'} {kind} thing is {f.conclusion}"
    condition = " and ".join(_is(f.name, p, True) for p in f.premises)
    return f"if {condition}, then {_is(f.name, f.conclusion, f.positive)}"


def _clauses(formulas: Sequence[_Formula]) -> list[list[tuple[str, str, bool]]]:
    """Each formula as disjunctions of literals (prop, name, sign); universals grounded over the names."""
    names = sorted({f.name for f in formulas if f.name is not None})
    clauses = []
    for f in formulas:
        for name in [f.name] if f.name is not None else names:
            clauses.append([(p, name, False) for p in f.premises] + [(f.conclusion, name, f.positive)])
    return clauses


@lru_cache(maxsize=None)
def _assignments(n: int) -> np.ndarray:
    return ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(bool)


def _entailment(formulas: Sequence[_Formula], hypothesis: _Formula) -> str | None:
    """PROVED iff the facts entail the hypothesis, DISPROVED iff they entail its negation,
    else UNKNOWN; None when the facts are unsatisfiable or have more than MAX_ATOMS atoms."""
    clauses = _clauses([*formulas, hypothesis])
    *clauses, (goal,) = clauses
    atoms = sorted({(p, n) for clause in [*clauses, [goal]] for p, n, _ in clause})
    if len(atoms) > MAX_ATOMS:
        return None
    index = {a: i for i, a in enumerate(atoms)}
    table = _assignments(len(atoms))
    models = np.ones(len(table), dtype=bool)
    for clause in clauses:
        satisfied = np.zeros(len(table), dtype=bool)
        for p, n, sign in clause:
            column = table[:, index[p, n]]
            satisfied |= column if sign else ~column
        models &= satisfied
    if not models.any():
        return None
    holds = table[models, index[goal[0], goal[1]]]
    holds = holds if goal[2] else ~holds
    return "PROVED" if holds.all() else "DISPROVED" if not holds.any() else "UNKNOWN"


def _distractor(rng: random.Random, names: Sequence[str], props: Sequence[str]) -> _Formula:
    kind = rng.choice(("fact", "rule", "every"))
    name = rng.choice(names)
    if kind == "fact":
        return _Formula((), rng.choice(props), rng.random() < 0.5, name)
    chosen = rng.sample(props, rng.choice((1, 1, 2)) + 1)
    return _Formula(tuple(chosen[:-1]), chosen[-1], rng.random() < 0.5, None if kind == "every" else name)


def _fld_attempt(rng: random.Random, label: str, depth: int, h_positive: bool, proved: bool, uid: str) -> FLDItem | None:
    """Draw one item meant to have `label`, its hypothesis of the given polarity and its proof
    ending in h (`proved`) or not-h; None when the entailment check disagrees."""
    x, y = rng.sample(NAMES, 2)
    props = rng.sample(PROPERTIES, depth + 4)
    chain, spare = props[: depth + 1], props[depth + 1 :]
    hypothesis = _Formula((), chain[-1], h_positive, x)

    needed = [_Formula((), chain[0], True, x)]
    sides: dict[int, _Formula] = {}
    rules = []
    free_sides = list(spare)
    for i in range(1, depth + 1):
        premises = [chain[i - 1]]
        if rng.random() < 0.3:
            side = free_sides.pop(rng.randrange(len(free_sides)))
            premises.append(side)
            sides[i] = _Formula((), side, True, x)
            needed.append(sides[i])
        positive = (h_positive if proved else not h_positive) if i == depth else True
        rules.append(_Formula(tuple(premises), chain[i], positive, None if rng.random() < 0.5 else x))

    if label == "UNKNOWN":
        needed.pop(rng.randrange(len(needed)))
    distractors = [_distractor(rng, (x, y), props) for _ in range(rng.randint(2, 5))]
    formulas = needed + rules + distractors
    rng.shuffle(formulas)
    texts = [_render(f) for f in formulas]
    if len(set(texts)) < len(texts) or _entailment(formulas, hypothesis) != label:
        return None
    if label != "UNKNOWN" and any(
        _entailment([f for f in formulas if f is not used], hypothesis) != "UNKNOWN" for used in needed + rules
    ):
        return None  # a distractor short-cuts the proof: its depth would not be the item's depth

    sent = {id(f): f"sent{k + 1}" for k, f in enumerate(formulas)}
    proof: tuple[str, ...] = ()
    if label != "UNKNOWN":
        steps = []
        for i, rule in enumerate(rules, start=1):
            refs = [sent[id(needed[0])] if i == 1 else f"int{i - 1}"]
            if i in sides:
                refs.append(sent[id(sides[i])])
            refs.append(sent[id(rule)])
            end = ("hypothesis" if proved else "\u00achypothesis") if i == depth else f"int{i}: {_is(x, chain[i], True)}"
            steps.append(f"{' & '.join(refs)} -> {end}")
        proof = tuple(steps)
    context = " ".join(f"sent{k + 1}: {t}." for k, t in enumerate(texts))
    return FLDItem(uid, context, _render(hypothesis) + ".", label, depth, len(distractors), proof, "gen")


def generate_fld(n: int, seed: int = 0, depths: Iterable[int] = FLD_DEPTHS, split: str = "test") -> list[FLDItem]:
    """`n` FLD-style items, labels in turn PROVED, DISPROVED, UNKNOWN (balanced to 1/3), proof
    depths cycling over `depths`, each with 2-5 distractor sentences.

    The hypothesis' polarity is drawn once per item, before the retries, so that rejected
    draws cannot make "not" in a hypothesis a cue for the label.
    """
    depths = tuple(depths)
    if not depths or any(d not in FLD_DEPTHS for d in depths):
        raise UsageError(f"fld_depths={','.join(map(str, depths))}: use depths from 1 to 3, e.g. fld_depths=1,2,3")
    rng = random.Random(f"fld/{split}/{seed}")
    items = []
    for i in range(n):
        label, depth = LABELS[i % 3], depths[(i // 3) % len(depths)]
        h_positive = rng.random() < 0.5
        proved = label == "PROVED" or (label == "UNKNOWN" and rng.random() < 0.5)
        item = None
        while item is None:
            item = _fld_attempt(rng, label, depth, h_positive, proved, f"fld_gen/{split}/{seed}/{i}")
        items.append(item)
    return items


# ---------------------------------------------------------------------------------------
# bAbI-style stories
# ---------------------------------------------------------------------------------------


@dataclass
class World:
    """The state a bAbI story describes: where actors are, who holds what, where objects lie,
    and each object's trail of places (consecutive duplicates merged)."""

    actor_at: dict[str, str] = field(default_factory=dict)
    holder: dict[str, str] = field(default_factory=dict)
    lying_at: dict[str, str] = field(default_factory=dict)
    trail: dict[str, list[str]] = field(default_factory=dict)

    def _arrive(self, obj: str, place: str) -> None:
        trail = self.trail.setdefault(obj, [])
        if not trail or trail[-1] != place:
            trail.append(place)

    def move(self, actor: str, place: str) -> None:
        self.actor_at[actor] = place
        for obj, who in self.holder.items():
            if who == actor:
                self._arrive(obj, place)

    def can_take(self, actor: str, obj: str) -> bool:
        here = self.actor_at.get(actor)
        return here is not None and obj not in self.holder and self.lying_at.get(obj, here) == here

    def take(self, actor: str, obj: str) -> None:
        self.holder[obj] = actor
        self.lying_at.pop(obj, None)
        self._arrive(obj, self.actor_at[actor])

    def drop(self, actor: str, obj: str) -> None:
        del self.holder[obj]
        self.lying_at[obj] = self.actor_at[actor]

    def where(self, obj: str) -> str | None:
        return self.actor_at[self.holder[obj]] if obj in self.holder else self.lying_at.get(obj)


def babi_candidates(task: int) -> tuple[str, ...]:
    """Every answer a generated story of this bAbI task can have (the choice-scoring candidates)."""
    _check_task(task)
    return {1: PLACES, 2: PLACES, 3: PLACES, 15: tuple(SPECIES), 16: COLOURS}[task]


def _check_task(task: int) -> None:
    if task not in BABI_TASKS:
        raise UsageError(f"bAbI task {task} has no generator: use one of {', '.join(map(str, BABI_TASKS))}")


def _story_where_person(rng: random.Random) -> tuple[list[str], str, str] | None:
    world, lines = World(), []
    actors = rng.sample(PEOPLE, rng.randint(2, 4))
    for _ in range(rng.randint(4, 12)):
        actor = rng.choice(actors)
        place = rng.choice([p for p in PLACES if p != world.actor_at.get(actor)])
        world.move(actor, place)
        lines.append(f"{actor} {rng.choice(MOVE_VERBS)} the {place}.")
    actor = rng.choice(sorted(world.actor_at))
    return lines, f"Where is {actor}?", world.actor_at[actor]


def _play_objects(rng: random.Random) -> tuple[World, list[str], list[str]]:
    """A random story of moves, pick-ups and drops (4-12 lines), played on a World."""
    world, lines = World(), []
    actors = rng.sample(PEOPLE, rng.randint(2, 3))
    objects = rng.sample(OBJECTS, rng.randint(1, 2))
    for _ in range(rng.randint(4, 12)):
        actor, r = rng.choice(actors), rng.random()
        takeable = [o for o in objects if world.can_take(actor, o)]
        held = [o for o in objects if world.holder.get(o) == actor]
        if r < 0.35 and takeable:
            obj = rng.choice(takeable)
            world.take(actor, obj)
            lines.append(f"{actor} {rng.choice(TAKE_VERBS)} the {obj}.")
        elif r < 0.5 and held:
            obj = rng.choice(held)
            world.drop(actor, obj)
            lines.append(f"{actor} {rng.choice(DROP_VERBS)} the {obj}.")
        else:
            place = rng.choice([p for p in PLACES if p != world.actor_at.get(actor)])
            world.move(actor, place)
            lines.append(f"{actor} {rng.choice(MOVE_VERBS)} the {place}.")
    return world, lines, objects


def _story_where_object(rng: random.Random) -> tuple[list[str], str, str] | None:
    world, lines, objects = _play_objects(rng)
    known = [o for o in objects if world.where(o) is not None]
    if not known:
        return None
    obj = rng.choice(known)
    return lines, f"Where is the {obj}?", world.where(obj)


def _story_where_before(rng: random.Random) -> tuple[list[str], str, str] | None:
    world, lines, objects = _play_objects(rng)
    # only places an object visited once, so "before the garden" has one answer
    askable = [(o, i) for o in objects for i, p in enumerate(world.trail.get(o, [])) if i > 0 and world.trail[o].count(p) == 1]
    if not askable:
        return None
    obj, i = rng.choice(askable)
    return lines, f"Where was the {obj} before the {world.trail[obj][i]}?", world.trail[obj][i - 1]


def _story_deduction(rng: random.Random) -> tuple[list[str], str, str] | None:
    species = list(SPECIES)
    fears = {s: rng.choice([t for t in species if t != s]) for s in species}
    members = rng.sample(PEOPLE, rng.randint(2, 4))
    kind = {m: rng.choice(species) for m in members}
    lines = [f"{SPECIES[s].capitalize()} are afraid of {SPECIES[fears[s]]}." for s in species]
    lines += [f"{m} is a {kind[m]}." for m in members]
    rng.shuffle(lines)
    who = rng.choice(members)
    return lines, f"What is {who} afraid of?", fears[kind[who]]


def _story_induction(rng: random.Random) -> tuple[list[str], str, str] | None:
    people = rng.sample(PEOPLE, rng.randint(3, 6))
    *others, who = people
    colour_of = {s: rng.choice(COLOURS) for s in SPECIES}  # one colour per species, so induction is sound
    kind = {p: rng.choice(list(SPECIES)) for p in people}
    if all(kind[p] != kind[who] for p in others):
        kind[rng.choice(others)] = kind[who]
    blocks = [[f"{p} is a {kind[p]}.", f"{p} is {colour_of[kind[p]]}."] for p in others] + [[f"{who} is a {kind[who]}."]]
    rng.shuffle(blocks)
    seen = {kind[p]: colour_of[kind[p]] for p in others}  # what the story shows of each species
    return [line for block in blocks for line in block], f"What color is {who}?", seen[kind[who]]


_STORIES = {1: _story_where_person, 2: _story_where_object, 3: _story_where_before, 15: _story_deduction, 16: _story_induction}


def generate_babi(task: int, n: int, seed: int = 0, split: str = "test") -> list[BabiItem]:
    """`n` stories of bAbI task 1, 2, 3, 15 or 16 (4-12 lines each), answers from the simulated state."""
    _check_task(task)
    rng = random.Random(f"babi{task}/{split}/{seed}")
    items = []
    for i in range(n):
        drawn = None
        while drawn is None:
            drawn = _STORIES[task](rng)
        lines, question, answer = drawn
        items.append(BabiItem(f"babi_gen_{task}/{split}/{seed}/{i}", task, tuple(lines), question, answer, "gen"))
    return items
