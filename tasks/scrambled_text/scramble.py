"""The scrambler: letters of words moved (or substituted) at a rate, deterministically for a seed.

Every scramble type of the paper: random_20/50/100 (a share of each word's letters is
permuted, rates nested so a 50% scramble contains the 20% one), keepfirst and
keepfirstlast (the first, or first and last, letters stay), and substituted (letters
replaced by others, a QA baseline). Punctuation, digits and spacing are kept.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

RATES = {"random_20": 0.2, "random_50": 0.5, "random_100": 1.0}
TYPES = ("random_20", "random_50", "random_100", "keepfirst", "keepfirstlast", "substituted")
PROBE_VARIANTS = ("keepfirstlast", "random_100")

_SALT = {"random": 1, "keepfirst": 2, "keepfirstlast": 3, "substituted": 4}
_LOWER = "abcdefghijklmnopqrstuvwxyz"


def split_pieces(text: str) -> list[str]:
    """The authors' split: re.split(r"(\\W)") keeps every separator as its own piece."""
    return re.split(r"(\W)", text)


def letter_positions(piece: str) -> list[int]:
    return [i for i, c in enumerate(piece) if c.isalpha()]


def is_word(piece: str) -> bool:
    """A word is a piece with at least two letters."""
    return len(letter_positions(piece)) >= 2


def collapse_spaces(text: str) -> str:
    """Collapse runs of spaces on each line (applied after scrambling, and to the originals)."""
    return "\n".join(re.sub(" +", " ", line) for line in text.split("\n"))


def forced_permutation(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of n items that moves at least one of them (n >= 2)."""
    perm = rng.permutation(n)
    if n >= 2 and np.array_equal(perm, np.arange(n)):
        i, j = rng.choice(n, size=2, replace=False)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def movable_letters(piece: str, kind: str) -> list[int]:
    """Indices of the letters a scramble type may move in this piece (empty: left alone)."""
    pos = letter_positions(piece)
    if kind in ("random", "substituted"):
        return pos if len(pos) >= 2 else []
    if kind == "keepfirst":
        return pos[1:] if len(pos) >= 3 else []
    if kind == "keepfirstlast":
        return pos[1:-1] if len(pos) >= 4 else []
    raise ValueError(f"unknown scramble kind {kind}")


def permute_letters(piece: str, movable: list[int], perm: np.ndarray) -> str:
    chars = list(piece)
    for dst, src in zip(movable, perm):
        chars[dst] = piece[movable[src]]
    return "".join(chars)


def substitute_letters(piece: str, rng: np.random.Generator) -> str:
    """Replace every letter by a random ASCII letter different from it, keeping its case."""
    chars = list(piece)
    for i in letter_positions(piece):
        c = piece[i]
        pool = [x for x in _LOWER if x != c.lower()]
        new = pool[int(rng.integers(len(pool)))]
        chars[i] = new.upper() if c.isupper() else new
    return "".join(chars)


def scramble_word(word: str, kind: str, rng: np.random.Generator) -> str:
    """One piece under `random` (all letters), `keepfirst`, `keepfirstlast` or `substituted`."""
    if kind == "substituted":
        return substitute_letters(word, rng) if is_word(word) else word
    movable = movable_letters(word, kind)
    if len(movable) < 2:
        return word
    return permute_letters(word, movable, forced_permutation(len(movable), rng))


def _family(scramble_type: str) -> str:
    if scramble_type in RATES:
        return "random"
    if scramble_type in ("keepfirst", "keepfirstlast", "substituted"):
        return scramble_type
    raise ValueError(f"unknown scramble type '{scramble_type}': use one of {', '.join(TYPES)}")


def scramble_with_words(text: str, scramble_type: str, seed: int = 10) -> tuple[str, list[int]]:
    """Scrambled text and the indices (among its words) of the words the type touched.

    Random rates are nested: one random word order per text, and every word's permutation
    is drawn up front in word order, so rate r takes the first round(r x #words) words of
    that order with the same permutations at every rate.
    """
    family = _family(scramble_type)
    pieces = split_pieces(text)
    words = [i for i, p in enumerate(pieces) if is_word(p)]
    rng = np.random.default_rng([seed, _SALT[family], zlib.crc32(text.encode("utf-8"))])
    chosen: list[int] = []
    if family == "random":
        order = rng.permutation(len(words))
        perms = [forced_permutation(len(movable_letters(pieces[i], "random")), rng) for i in words]
        chosen = sorted(int(k) for k in order[: round(RATES[scramble_type] * len(words))])
        for k in chosen:
            i = words[k]
            pieces[i] = permute_letters(pieces[i], movable_letters(pieces[i], "random"), perms[k])
    else:
        for k, i in enumerate(words):
            new = scramble_word(pieces[i], family, rng)
            if family == "substituted" or len(movable_letters(pieces[i], family)) >= 2:
                chosen.append(k)
            pieces[i] = new
    return collapse_spaces("".join(pieces)), chosen


def scramble(text: str, scramble_type: str, seed: int = 10) -> str:
    return scramble_with_words(text, scramble_type, seed)[0]


def scrambled_variant(word: str, variant: str, seed: int, frame: int) -> str:
    """The word scrambled by `variant`, one draw per (word, context); redrawn until it differs when it can."""
    kind = "random" if variant == "random_100" else variant
    rng = np.random.default_rng([seed, _SALT[kind], zlib.crc32(word.encode()), frame])
    for _ in range(50):
        new = scramble_word(word, kind, rng)
        if new != word:
            return new
    return new
