"""Corpus loading in both JSONL shapes, and the bundled multi-hop corpus."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from envs.datasets import DATA_DIR, iter_jsonl
from envs.retrieval.corpus import (
    BUILTIN,
    BUILTIN_CORPUS_FILE,
    Corpus,
    build_builtin_corpus,
    load_corpus,
    write_corpus,
)


def test_both_row_shapes_load_to_the_same_passages(tmp_path: Path) -> None:
    corpus = Corpus()
    corpus.append("a1", "Ed Wood", "An American filmmaker.\nSecond line stays in the text.")
    corpus.append("b2", 'Title "quoted"', "Text two.")
    for style in ("title_text", "contents"):
        loaded = load_corpus(write_corpus(corpus, tmp_path / f"{style}.jsonl.gz", style=style))
        assert loaded.ids == corpus.ids
        assert loaded.texts == corpus.texts
        assert loaded.titles[0] == "Ed Wood"
    assert corpus.contents(0) == '"Ed Wood"\nAn American filmmaker.\nSecond line stays in the text.'


def test_bad_corpora_are_refused_with_the_reason(tmp_path: Path) -> None:
    duplicate = tmp_path / "dup.jsonl"
    duplicate.write_text('{"id": "x", "contents": "\\"T\\"\\nA"}\n{"id": "x", "contents": "\\"T\\"\\nB"}\n')
    with pytest.raises(ValueError, match="duplicate passage id 'x'"):
        load_corpus(duplicate)
    shapeless = tmp_path / "shapeless.jsonl"
    shapeless.write_text('{"id": "x", "body": "no text field"}\n')
    with pytest.raises(ValueError, match="neither 'contents' nor 'text'"):
        load_corpus(shapeless)
    with pytest.raises(FileNotFoundError):
        load_corpus(tmp_path / "missing.jsonl")


@pytest.mark.slow
def test_builtin_corpus_is_reproducible_and_covers_every_source(tmp_path: Path) -> None:
    rebuilt = build_builtin_corpus(tmp_path / "corpus.jsonl.gz")
    assert rebuilt.read_bytes() == (DATA_DIR / BUILTIN_CORPUS_FILE).read_bytes()
    corpus = load_corpus(BUILTIN)
    prefixes = {doc_id[:2] for doc_id in corpus.ids}
    assert prefixes == {"hp", "2w", "mq"}
    pairs = list(zip(corpus.titles, corpus.texts))
    assert len(set(pairs)) == len(pairs), "passages are unique by (title, text)"
    # The HotpotQA passages keep their ids and order at the start.
    hotpot = list(iter_jsonl(DATA_DIR / "hotpotqa_corpus.jsonl.gz"))
    assert corpus.ids[: len(hotpot)] == [row["id"] for row in hotpot]


def test_builtin_corpus_holds_every_gold_paragraph_title() -> None:
    titles = set(load_corpus(BUILTIN).titles)
    with gzip.open(DATA_DIR / "2wikimultihopqa_dev.jsonl.gz", "rt") as handle:
        gold_2wiki = {title for line in handle for title, _ in json.loads(line)["supporting_facts"]}
    musique_gold = {
        p["title"] for row in iter_jsonl(DATA_DIR / "musique_ans_dev_paragraphs.jsonl.gz")
        for p in row["paragraphs"] if p["is_supporting"]
    }
    assert gold_2wiki <= titles
    assert musique_gold <= titles
