"""`espl-bench retriever index|serve` end to end, and the per-process local server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from espl.cli import main
from espl.commands.retriever import byte_size
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


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_force_refuses_a_folder_that_is_not_an_index_and_deletes_nothing(
    corpus_file: Path, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "thesis"
    (folder / "chapters").mkdir(parents=True)
    (folder / "chapters" / "one.tex").write_text("It was a dark and stormy night.")
    (folder / "notes.txt").write_text("do not lose")
    before = tree(folder)
    siblings = sorted(tmp_path.iterdir())
    for force in ([], ["--force"]):
        assert main(["retriever", "index", "--corpus", str(corpus_file), "--out", str(folder), *force]) == 2
        error = capsys.readouterr().err
        assert "is not an index" in error and "refusing to replace it" in error
        assert error.count("\n") == 1, "one line"
    assert tree(folder) == before
    assert sorted(tmp_path.iterdir()) == siblings, "no staging folder left behind"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("a file, not a folder")
    assert main(["retriever", "index", "--corpus", str(corpus_file), "--out", str(a_file), "--force"]) == 2
    assert "not a directory" in capsys.readouterr().err and a_file.read_text() == "a file, not a folder"


def test_force_replaces_an_existing_index(corpus_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "index"
    assert main(["retriever", "index", "--corpus", str(corpus_file), "--out", str(out)]) == 0
    old_version = json.loads((out / "manifest.json").read_text())["index_version"]
    bigger = Corpus()
    for i in range(6):
        bigger.append(f"new-{i}", f"Title {i}", f"passage number {i} about rivers")
    bigger_file = write_corpus(bigger, tmp_path / "bigger.jsonl")
    assert main(["retriever", "index", "--corpus", str(bigger_file), "--out", str(out), "--force"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["corpus"]["size"] == 6 and manifest["index_version"] != old_version
    assert sorted(entry.name for entry in out.iterdir()) == sorted(manifest["files"] + ["manifest.json"])
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["bigger.jsonl", "corpus.jsonl", "index"]
    capsys.readouterr()


def test_force_refuses_an_index_that_also_holds_other_files(corpus_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "index"
    assert main(["retriever", "index", "--corpus", str(corpus_file), "--out", str(out)]) == 0
    (out / "my-notes.md").write_text("why this index exists")
    before = tree(out)
    assert main(["retriever", "index", "--corpus", str(corpus_file), "--out", str(out), "--force"]) == 2
    assert "files its build did not write (my-notes.md)" in capsys.readouterr().err
    assert tree(out) == before


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("--header-timeout", "0", "must be positive"), ("--max-reply-bytes", "1G", "max_pending_bytes"),
     ("--max-body-bytes", "lots", "not a size")],
)
def test_serve_refuses_bad_limits(tmp_path: Path, option: str, value: str, message: str, capsys) -> None:
    try:
        code = main(["retriever", "serve", "--index", str(tmp_path), option, value])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    assert code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(("text", "size"), [("8388608", 8 << 20), ("64M", 64 << 20), ("64MiB", 64 << 20),
                                            ("1g", 1 << 30), ("512k", 512 << 10), ("10B", 10)])
def test_byte_sizes(text: str, size: int) -> None:
    assert byte_size(text) == size


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


@pytest.mark.slow
def test_serve_without_an_index_serves_the_builtin_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESPL_BENCH_CACHE", str(tmp_path / "cache"))  # the child builds the index on first use
    server = ServerProcess.start(None, timeout_s=600)  # `espl-bench retriever serve`, nothing else
    try:
        assert server.url.startswith("http://127.0.0.1:")
        health = httpx.get(f"{server.url}/health").json()
        assert health["corpus"] == "builtin" and health["backend"] == "bm25s" and health["corpus_size"] > 24_000
        reply = httpx.post(f"{server.url}/retrieve",
                           json={"queries": ["Van Hook Township county seat"], "topk": 3, "return_scores": True}).json()
        assert len(reply["result"][0]) == 3
        assert any("Van Hook" in hit["document"]["contents"] for hit in reply["result"][0])
    finally:
        server.stop()
    assert list((tmp_path / "cache" / "indexes").glob("builtin-bm25s-*/manifest.json"))


@pytest.mark.parametrize(("given", "message"), [
    (["--index", "somewhere", "--backend", "bm25s"], "has its own backend"),
    (["--corpus", "corpus.jsonl"], "--corpus goes with --index"),
])
def test_serve_refuses_options_that_do_not_go_together(given: list[str], message: str, capsys) -> None:
    assert main(["retriever", "serve", *given]) == 2
    assert message in capsys.readouterr().err
