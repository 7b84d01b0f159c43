"""`espl-bench retriever index|serve` end to end, and the per-process local server."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from espl.cli import main
from envs.retrieval.corpus import Corpus, write_corpus
from envs.retrieval.local import ServerProcess


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    corpus = Corpus()
    for i, (title, text) in enumerate([
        ("Ed Wood", "Edward Davis Wood Jr. was an American filmmaker, actor and author."),
        ("Scott Derrickson", "Scott Derrickson is an American director, screenwriter and producer."),
        ("Paris", "Paris is the capital of France."),
        ("Berlin", "Berlin is the capital of Germany."),
    ]):
        corpus.append(f"doc-{i}", title, text)
    return write_corpus(corpus, tmp_path / "corpus.jsonl", style="contents")


def test_index_command_builds_and_refuses_to_overwrite(corpus_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "index"
    assert main(["retriever", "index", "--corpus", str(corpus_file), "--out", str(out)]) == 0
    assert (out / "manifest.json").is_file()
    assert "built bm25s index of 4 passages" in capsys.readouterr().err
    assert main(["retriever", "index", "--corpus", str(corpus_file), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["retriever", "index", "--corpus", str(corpus_file), "--out", str(out), "--force"]) == 0
    assert main(["retriever", "index", "--corpus", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "x")]) == 2
    assert "corpus file not found" in capsys.readouterr().err


def test_serve_command_answers_search_r1_requests(corpus_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "index"
    assert main(["retriever", "index", "--corpus", str(corpus_file), "--out", str(out)]) == 0
    server = ServerProcess.start(out, timeout_s=90)  # `espl-bench retriever serve` in a child process
    try:
        health = httpx.get(f"{server.url}/health").json()
        assert health["corpus_size"] == 4 and health["backend"] == "bm25s"
        reply = httpx.post(f"{server.url}/retrieve",
                           json={"queries": ["capital of Germany"], "topk": 1, "return_scores": True}).json()
        assert reply["result"][0][0]["document"] == {"id": "doc-3", "contents": '"Berlin"\nBerlin is the capital of Germany.'}
    finally:
        server.stop()
    assert server.process.returncode is not None
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/health", timeout=2)


def test_serve_command_fails_clearly_on_a_missing_index(tmp_path: Path, capsys) -> None:
    assert main(["retriever", "serve", "--index", str(tmp_path)]) == 2
    assert "not an index directory" in capsys.readouterr().err


@pytest.mark.slow
def test_local_server_is_started_once_on_the_builtin_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from envs.retrieval import local

    monkeypatch.setenv("ESPL_BENCH_CACHE", str(tmp_path / "cache"))
    local.stop_local_servers()  # an earlier test's server would be reused, skipping the index build
    url = local.ensure_local_server()
    try:
        assert url.startswith("http://127.0.0.1:")
        assert local.ensure_local_server() == url, "reused within the process"
        assert list((tmp_path / "cache" / "indexes").glob("builtin-bm25s-*/manifest.json"))
        health = httpx.get(f"{url}/health").json()
        assert health["corpus_size"] > 24_000 and health["corpus"] == "builtin"
        hits = httpx.post(f"{url}/retrieve", json={"queries": ["Van Hook Township county seat"], "topk": 5}).json()
        assert any("Van Hook" in doc["contents"] for doc in hits["result"][0]), "MuSiQue passages are searchable"
    finally:
        local.stop_local_servers()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)
