"""Retrieval quality on the bundled HotpotQA dev questions, per backend, and bm25s/Lucene agreement.

Gold titles are each question's ``supporting_facts`` titles. Recall@k "any" counts a question
when at least one gold title is in the top k; "both" when every gold title is. Figures go to
each row's ``extra_info``; the timed part is the whole evaluation pass.

- full: all 1,702 questions over the bundled corpus (24,924 passages), bm25s and pyserini.
- subset: the first 100 questions over only their own 10 context paragraphs each (1,000
  passages, the distractor setting), for all three backends, because encoding the full
  corpus with the dense encoder takes about an hour on 2 CPU cores.

    .venv/bin/python -m pytest benchmarks/test_retrieval_quality.py --benchmark-only -q -s
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.peers import require
from envs.datasets import load_rows
from envs.retrieval.corpus import BUILTIN, load_corpus, write_corpus
from envs.retrieval.index import build_index
from envs.retrieval.searcher import LocalRetriever

SUBSET_QUESTIONS = 100
BACKEND_MARKS = {"pyserini": [pytest.mark.pyserini], "dense": [pytest.mark.dense, pytest.mark.slow]}


def recall(rows, hits, k: int) -> tuple[float, float]:
    any_hit = both_hit = 0
    for row, passages in zip(rows, hits):
        gold = {title for title, _ in row["supporting_facts"]}
        top = {p.title for p in passages[:k]}
        any_hit += bool(gold & top)
        both_hit += gold <= top
    return any_hit / len(rows), both_hit / len(rows)


def evaluate(benchmark, retriever: LocalRetriever, rows) -> dict[str, float]:
    questions = [row["question"] for row in rows]
    hits = benchmark.pedantic(retriever.retrieve, args=(questions, 10), rounds=1, iterations=1, warmup_rounds=0)
    figures = {}
    for k in (3, 10):
        figures[f"recall@{k}_any"], figures[f"recall@{k}_both"] = recall(rows, hits, k)
    benchmark.extra_info.update({key: round(value, 4) for key, value in figures.items()})
    benchmark.extra_info["questions"] = len(rows)
    benchmark.extra_info["passages"] = len(retriever.corpus)
    print(f"\n{benchmark.name}: " + ", ".join(f"{k}={v:.3f}" for k, v in figures.items()))
    return figures


def backend_params(*names: str):
    return [pytest.param(name, marks=BACKEND_MARKS.get(name, []), id=name) for name in names]


@pytest.mark.slow
@pytest.mark.parametrize("backend", backend_params("bm25s", "pyserini"))
def test_recall_full_corpus(benchmark, backend: str) -> None:
    if backend == "pyserini":
        require("pyserini")
    retriever = LocalRetriever.builtin(backend)
    retriever.warm_up()
    figures = evaluate(benchmark, retriever, load_rows("hotpotqa_dev_distractor"))
    assert figures["recall@10_any"] >= 0.9 and figures["recall@10_both"] >= 0.5


@pytest.fixture(scope="module")
def subset_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = load_rows("hotpotqa_dev_distractor")[:SUBSET_QUESTIONS]
    wanted = {(p["title"], " ".join(s.strip() for s in p["sentences"] if s.strip())) for r in rows for p in r["context"]}
    corpus = load_corpus(BUILTIN)
    keep = [i for i in range(len(corpus)) if (corpus.titles[i], corpus.texts[i]) in wanted]
    return write_corpus(corpus.subset(keep), tmp_path_factory.mktemp("subset") / "corpus.jsonl")


@pytest.mark.slow
@pytest.mark.parametrize("backend", backend_params("bm25s", "pyserini", "dense"))
def test_recall_distractor_subset(benchmark, backend: str, subset_corpus: Path, tmp_path: Path) -> None:
    if backend == "pyserini":
        require("pyserini")
    if backend == "dense":
        require("faiss")
    retriever = LocalRetriever(build_index(subset_corpus, tmp_path / backend, backend))
    retriever.warm_up()
    figures = evaluate(benchmark, retriever, load_rows("hotpotqa_dev_distractor")[:SUBSET_QUESTIONS])
    assert figures["recall@10_any"] >= 0.9


@pytest.mark.slow
@pytest.mark.pyserini
def test_top10_overlap_pyserini_vs_bm25s(benchmark) -> None:
    require("pyserini")
    questions = [row["question"] for row in load_rows("hotpotqa_dev_distractor")]
    ours, lucene = LocalRetriever.builtin("bm25s"), LocalRetriever.builtin("pyserini")
    ours.warm_up()

    def compare() -> tuple[float, float]:
        a, b = ours.search(questions, 10), lucene.search(questions, 10)
        overlap = sum(len(set(x) & set(y)) / 10 for x, y in zip(a.rows, b.rows)) / len(questions)
        top1 = sum(bool(x and y and x[0] == y[0]) for x, y in zip(a.rows, b.rows)) / len(questions)
        return overlap, top1

    overlap, top1 = benchmark.pedantic(compare, rounds=1, iterations=1)
    benchmark.extra_info.update({"mean_top10_overlap": round(overlap, 4), "top1_agreement": round(top1, 4)})
    print(f"\ntop-10 overlap {overlap:.3f}, top-1 agreement {top1:.3f}")
    assert overlap >= 0.8
