"""PS-Eval data: the shipped pairs and corpus, the Hub loaders on local files, prompts and target positions."""

from __future__ import annotations

import collections
import functools
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from harness import UsageError
from harness.engine.models import cache_root
from tasks.polysemy_sae.data import (
    CORPUS_PATH,
    PAIRS_PATH,
    SKIP_MISMATCH,
    SKIP_MULTI_TOKEN,
    Pair,
    Span,
    corpus_texts,
    load_pairs,
    locate,
    locate_pairs,
    prompt,
)
from tests.tiny_models import tiny_tokenizer


def whole_word_at(text: str, span: Span, word: str) -> bool:
    before = text[span.char_start - 1] if span.char_start > 0 else " "
    after = text[span.char_end] if span.char_end < len(text) else " "
    return text[span.char_start : span.char_end] == word and not before.isalnum() and not after.isalnum()


@functools.cache
def byte_level_bpe(vocab_size: int = 3000) -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE (no prefix space, offsets keep the leading space, no BOS),
    trained on the shipped corpus only: whether a target word is one token is up to the merges,
    not put there by training on the prompts, so some pairs split and some do not."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus_texts()), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def single_token_words(tokenizer) -> set[str]:
    """The target words the tokenizer keeps whole after a space, found without `locate`."""
    return {
        p.target_word for p in load_pairs() if len(tokenizer(" " + p.target_word, add_special_tokens=False)["input_ids"]) == 1
    }


def check_skips_exactly_the_split_words(tokenizer) -> None:
    """locate keeps a pair exactly when its word is one token, and then the token is that word."""
    pairs = load_pairs()
    whole = single_token_words(tokenizer)
    reasons = check_located_token(tokenizer, pairs)
    kept = {x.pair.id for x in locate_pairs(pairs, tokenizer) if not x.skip}
    assert kept == {p.id for p in pairs if p.target_word in whole}
    assert reasons[None] == len(kept) and reasons[SKIP_MULTI_TOKEN] == len(pairs) - len(kept)
    assert check_located_token(tokenizer, pairs, multi_token="last") == {None: len(pairs)}


# --- shipped pairs -------------------------------------------------------------------------------


def test_shipped_pairs_are_balanced_over_words_that_have_both_senses():
    pairs = load_pairs()
    assert len(pairs) == 100
    assert len({p.id for p in pairs}) == 100
    assert collections.Counter(p.label for p in pairs) == {0: 50, 1: 50}
    labels_per_word = collections.defaultdict(set)
    for p in pairs:
        labels_per_word[p.target_word].add(p.label)
    assert len(labels_per_word) >= 35
    assert all(labels == {0, 1} for labels in labels_per_word.values())
    assert {p.pos for p in pairs} == {"N", "V"}
    assert {p.language for p in pairs} == {"EN"}
    for p in pairs:
        for context in (p.context_1, p.context_2):
            assert 8 <= len(context.split()) <= 20, context
        assert p.context_1 != p.context_2


def test_shipped_offsets_point_at_the_target_as_a_whole_word():
    for p in load_pairs():
        assert whole_word_at(p.context_1, p.location_1, p.target_word), p.id
        assert whole_word_at(p.context_2, p.location_2, p.target_word), p.id
        # the one occurrence in each context, so the offsets are not ambiguous
        for context in (p.context_1, p.context_2):
            assert len(re.findall(rf"(?<![A-Za-z]){p.target_word}(?![A-Za-z])", context)) == 1, p.id


def test_shipped_file_is_the_ps_eval_row_shape():
    lines = PAIRS_PATH.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [p.to_json() for p in load_pairs()]


def test_file_source_reads_a_local_jsonl(tmp_path):
    path = tmp_path / "mine.jsonl"
    shipped = load_pairs()[:3]
    path.write_text("\n".join(json.dumps(p.to_json()) for p in shipped) + "\n\n", encoding="utf-8")
    assert load_pairs(f"file:{path}") == shipped
    with pytest.raises(UsageError, match="no pairs file"):
        load_pairs(f"file:{tmp_path / 'absent.jsonl'}")


# --- Hub loaders, offline on local files of the same shapes --------------------------------------

PS_EVAL_ROWS = [
    {
        "id": "0",
        "context_1": "He sat on the bank of the river.",
        "context_2": "The bank lent them money.",
        "target_word": "bank",
        "pos": "N",
        "target_word_location_1": {"char_start": 14, "char_end": 18},
        "target_word_location_2": {"char_start": 4, "char_end": 8},
        "language": "EN",
        "label": 0,
    },
    {
        "id": "1",
        "context_1": "She hit the ball with a bat.",
        "context_2": "His bat was made of willow.",
        "target_word": "bat",
        "pos": "N",
        "target_word_location_1": {"char_start": 24, "char_end": 27},
        "target_word_location_2": {"char_start": 4, "char_end": 7},
        "language": "EN",
        "label": 1,
    },
]

WIC_ROWS = {
    "train": [
        {
            "word": "bank",
            "sentence1": "Herons stood on the banks.",
            "sentence2": "Two banks merged last year.",
            "start1": 20,
            "end1": 25,
            "start2": 4,
            "end2": 9,
            "idx": 0,
            "label": 0,
        },
        {
            "word": "run",
            "sentence1": "They run a shop.",
            "sentence2": "She will run the company.",
            "start1": 5,
            "end1": 8,
            "start2": 9,
            "end2": 12,
            "idx": 1,
            "label": 1,
        },
    ],
    "validation": [
        {
            "word": "key",
            "sentence1": "The key opens the door.",
            "sentence2": "A key to the safe.",
            "start1": 4,
            "end1": 7,
            "start2": 2,
            "end2": 5,
            "idx": 0,
            "label": 1,
        },
    ],
}


def write_rows(path: Path, rows: list[dict]) -> str:
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_ps_eval_hub_loader_keeps_fields_and_label_meaning(tmp_path, suffix):
    path = write_rows(tmp_path / f"test{suffix}", PS_EVAL_ROWS)
    pairs = load_pairs("hub", local={"test": path})
    assert [p.to_json() for p in pairs] == PS_EVAL_ROWS
    same = {p.target_word: p.label for p in pairs}
    assert same == {"bank": 0, "bat": 1}  # 1 = same meaning, as in the paper's set


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_wic_loader_maps_spans_to_the_ps_eval_record(tmp_path, suffix):
    local = {split: write_rows(tmp_path / f"{split}{suffix}", rows) for split, rows in WIC_ROWS.items()}
    pairs = load_pairs("wic", local=local)
    assert [p.id for p in pairs] == ["wic-train-0", "wic-train-1", "wic-validation-0"]
    bank, run, key = pairs
    assert bank.target_word == "banks"  # the surface form at the span, not the lemma
    assert bank.label == 0 and run.label == 1 and key.label == 1  # WiC's 1 = same sense, kept
    assert bank.location_1 == Span(20, 25) and bank.location_2 == Span(4, 9)
    for p in pairs:
        assert p.context_1[p.location_1.char_start : p.location_1.char_end] == p.target_word
        assert p.pos is None


def test_wic_rows_without_a_label_are_refused(tmp_path):
    unlabelled = [dict(WIC_ROWS["train"][0], label=-1)]
    local = {
        "train": write_rows(tmp_path / "train.jsonl", unlabelled),
        "validation": write_rows(tmp_path / "validation.jsonl", WIC_ROWS["validation"]),
    }
    with pytest.raises(UsageError, match="not 0 or 1"):
        load_pairs("wic", local=local)


def test_bad_sources_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="unknown pairs source"):
        load_pairs("paper")
    row = dict(PS_EVAL_ROWS[0])
    del row["context_2"]
    with pytest.raises(UsageError, match="context_2"):
        load_pairs("hub", local={"test": write_rows(tmp_path / "t.jsonl", [row])})
    with pytest.raises(UsageError, match="cannot read"):
        load_pairs("hub", local={"test": str(tmp_path / "t.xml")})


# --- prompts and target positions -----------------------------------------------------------------


def test_prompt_is_the_authors_template():
    assert prompt("We sat on the bank.", "bank") == "We sat on the bank. The bank means"


def check_located_token(tokenizer, pairs, multi_token="skip") -> collections.Counter:
    """Every kept pair's chosen token is the target word inside the appended phrase."""
    reasons = collections.Counter()
    for located in locate_pairs(pairs, tokenizer, multi_token):
        reasons[located.skip] += 1
        if located.skip:
            assert located.positions is None
            continue
        for context, text, position in zip((located.pair.context_1, located.pair.context_2), located.prompts, located.positions):
            enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
            assert position < 0
            token = tokenizer.decode([enc["input_ids"][position]]).strip()
            start, _ = enc["offset_mapping"][position]
            assert start >= len(context)  # the last occurrence, inside "The X means"
            if multi_token == "skip":
                assert token == located.pair.target_word
            else:
                assert token and located.pair.target_word.endswith(token)
    return reasons


def test_a_byte_level_bpe_keeps_exactly_the_pairs_whose_word_is_one_token():
    tok = byte_level_bpe(vocab_size=700)  # small enough that some target words split
    whole = single_token_words(tok)
    assert whole and len(whole) < len({p.target_word for p in load_pairs()})  # both cases occur
    check_skips_exactly_the_split_words(tok)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["gemma3-270m", "smollm2-135m"])
def test_the_bundled_tokenizers_locate_every_pair_they_keep_whole(spec):
    """The real tokenizers (SentencePiece with its prefix space; GPT-2-style byte-level), read from the GGUF alone."""
    from transformers import AutoTokenizer

    from harness.engine.bundled import BUNDLED

    path = BUNDLED[spec]()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    assert single_token_words(tok)
    check_skips_exactly_the_split_words(tok)


def test_split_words_are_skipped_unless_the_last_sub_token_is_asked_for():
    tok = tiny_tokenizer()  # 512 tokens: most target words split; it prepends BOS and trims offsets
    pairs = load_pairs()
    multi = {p.id for p in pairs if len(tok(" " + p.target_word, add_special_tokens=False)["input_ids"]) > 1}
    assert multi, "the tiny vocabulary should split some target words"
    skipped = check_located_token(tok, pairs)
    assert skipped[SKIP_MULTI_TOKEN] == len(multi)
    assert {x.pair.id for x in locate_pairs(pairs, tok) if x.skip} == multi
    assert check_located_token(tok, pairs, multi_token="last") == {None: 100}


def test_bos_does_not_move_the_position_counted_from_the_end():
    pair = load_pairs()[0]
    tok = tiny_tokenizer()
    located = locate(pair, tok, multi_token="last")
    ids = tok(located.prompts[0], add_special_tokens=True)["input_ids"]
    bare = tok(located.prompts[0], add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == len(bare) + 1
    assert ids[located.positions[0]] == bare[located.positions[0]]


class ContextSensitiveTokenizer:
    """Offsets like a fast tokenizer, but the target's id depends on the context's length,
    as can happen when a tokenizer merges across a word boundary."""

    def __call__(self, text, add_special_tokens=True, return_offsets_mapping=False):
        spans = [m.span() for m in re.finditer(r"\S+", text)]
        ids = [len(text) if text[s:e] == "bank" and e == len(text) - len(" means") else hash(text[s:e]) % 1000 for s, e in spans]
        return {"input_ids": ids, "offset_mapping": spans}


class SlowTokenizer:
    def __call__(self, text, add_special_tokens=True, return_offsets_mapping=False):
        raise NotImplementedError("return_offset_mapping is not available when using Python tokenizers")


def test_different_ids_in_the_two_prompts_skip_the_pair():
    pair = Pair("x", "bank", "We sat on the grassy bank.", "The bank lent them money today.", Span(21, 25), Span(4, 8), 0)
    located = locate(pair, ContextSensitiveTokenizer())
    assert located.skip == SKIP_MISMATCH and located.positions is None


def test_options_and_tokenizers_that_cannot_locate_are_usage_errors():
    pair = load_pairs()[0]
    with pytest.raises(UsageError, match="multi_token"):
        locate(pair, tiny_tokenizer(), multi_token="first")
    with pytest.raises(UsageError, match="fast tokenizer"):
        locate(pair, SlowTokenizer())


def cached_gguf_tokenizers() -> list[Path]:
    """Tokenizers of bundled models someone has already converted (nothing is converted here)."""
    return sorted((cache_root() / "gguf").glob("*/tokenizer.json"))


@pytest.mark.parametrize("path", cached_gguf_tokenizers() or [None])
def test_shipped_targets_decode_with_a_cached_bundled_tokenizer(path):
    if path is None:
        pytest.skip("no converted bundled model in the cache")
    tok = PreTrainedTokenizerFast(tokenizer_file=str(path))
    reasons = check_located_token(tok, load_pairs())
    assert reasons[None] > 0


# --- corpus -----------------------------------------------------------------------------------------


def test_shipped_corpus_is_plain_prose_of_a_useful_size():
    size = CORPUS_PATH.stat().st_size
    assert 60_000 <= size <= 110_000
    texts = list(corpus_texts())
    assert len(texts) >= 100
    assert all(t == t.strip() and "\n" not in t for t in texts)
    joined = " ".join(texts)
    assert joined.isascii()
    missing = {p.target_word for p in load_pairs()} - set(re.findall(r"[a-z]+", joined.lower()))
    assert not missing, f"target words absent from the corpus: {missing}"


def test_hf_corpus_streams_the_text_column_from_a_local_file(tmp_path):
    rows = [{"text": "First text."}, {"text": ""}, {"text": "  "}, {"text": "Second text."}]
    path = write_rows(tmp_path / "corpus.jsonl", rows)
    assert list(corpus_texts("hf:json", local=path)) == ["First text.", "Second text."]
    lines = tmp_path / "corpus.txt"
    lines.write_text("one line\n\nanother line\n", encoding="utf-8")
    assert list(corpus_texts("hf:wikitext:wikitext-2-raw-v1:train", local=str(lines))) == ["one line", "another line"]


def test_bad_corpus_sources_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="unknown corpus"):
        corpus_texts("wikipedia")
    with pytest.raises(UsageError, match="hf:NAME"):
        corpus_texts("hf:a:b:c:d")
    path = write_rows(tmp_path / "rows.jsonl", [{"content": "no text column"}])
    with pytest.raises(UsageError, match="no 'text' column"):
        list(corpus_texts("hf:json", local=path))
