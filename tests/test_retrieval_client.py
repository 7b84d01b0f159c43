"""RetrievalClient: one request per batch, bounded retries with backoff, clear errors."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from envs.retrieval import client as client_module
from envs.retrieval.client import RetrievalClient, RetrievalError, RetrievalUnavailable, chunk_sizes
from envs.retrieval.corpus import Corpus, write_corpus
from envs.retrieval.index import build_index
from envs.retrieval.local import BackgroundServer
from envs.retrieval.searcher import LocalRetriever
from envs.retrieval.types import Retriever


def reply(documents: list[list[tuple[str, str, float]]]) -> dict:
    return {"result": [[{"document": {"id": i, "contents": c}, "score": s} for i, c, s in hits] for hits in documents]}


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []
    monkeypatch.setattr(client_module, "_sleep", recorded.append)
    return recorded


def test_one_request_carries_every_query_and_parses_passages() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=reply([[("d1", '"Ed Wood"\nA filmmaker.', 2.5)], []]))

    client = RetrievalClient("http://retrieval.test/retrieve", transport=httpx.MockTransport(handler))
    assert isinstance(client, Retriever)
    passages = client.retrieve(["who is ed wood", "x" * 5000], topk=1)
    assert len(seen) == 1
    assert seen[0]["topk"] == 1 and seen[0]["return_scores"] is True
    assert len(seen[0]["queries"][1]) == 4096, "over-long queries are cut to the server's limit"
    assert passages[0][0].title == "Ed Wood" and passages[0][0].text == "A filmmaker." and passages[0][0].score == 2.5
    assert passages[1] == []
    assert client.retrieve([], 3) == [] and len(seen) == 1


def test_5xx_is_retried_with_exponential_backoff(sleeps: list[float]) -> None:
    statuses = iter([503, 500, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(statuses)
        return httpx.Response(status, json=reply([[("d", '"T"\nx', 1.0)]]) if status == 200 else {"error": "busy"})

    client = RetrievalClient("http://r.test", retries=3, backoff=0.1, transport=httpx.MockTransport(handler))
    assert client.retrieve(["q"])[0][0].id == "d"
    assert sleeps == [0.1, 0.2]


def test_4xx_is_not_retried_and_carries_the_server_message(sleeps: list[float]) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(400, json={"error": "'topk' must be between 1 and 100, got 500"})

    client = RetrievalClient("http://r.test", transport=httpx.MockTransport(handler))
    with pytest.raises(RetrievalError, match="HTTP 400.*'topk' must be between") as caught:
        client.retrieve(["q"], topk=500)
    assert caught.value.status == 400 and len(calls) == 1 and sleeps == []


def test_persistent_5xx_gives_up_after_the_retry_budget(sleeps: list[float]) -> None:
    client = RetrievalClient(
        "http://r.test", retries=2, backoff=1.0, max_backoff=1.5,
        transport=httpx.MockTransport(lambda request: httpx.Response(502, text="bad gateway")),
    )
    with pytest.raises(RetrievalError, match="failed 3 times; last: HTTP 502"):
        client.retrieve(["q"])
    assert sleeps == [1.0, 1.5], "backoff doubles, capped at max_backoff"


def test_malformed_replies_are_errors_not_crashes() -> None:
    for body in ({"result": []}, {"nope": 1}, {"result": [[{"doc": {}}]]}):
        client = RetrievalClient("http://r.test", transport=httpx.MockTransport(lambda r, b=body: httpx.Response(200, json=b)))
        with pytest.raises(RetrievalError, match="malformed"):
            client.retrieve(["q"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_down_server_gives_a_clear_unavailable_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = RetrievalClient(url, retries=2, backoff=0.01)
    started = time.monotonic()
    with pytest.raises(RetrievalUnavailable) as caught:
        client.retrieve(["q"])
    message = str(caught.value)
    assert url in message and "3 attempts" in message and "espl-bench retriever serve" in message
    assert time.monotonic() - started < 5


@pytest.fixture(scope="module")
def tiny_retriever(tmp_path_factory: pytest.TempPathFactory) -> LocalRetriever:
    tmp = tmp_path_factory.mktemp("tiny")
    corpus = Corpus()
    for i, (title, text) in enumerate([
        ("Ed Wood", "Edward Davis Wood Jr. was an American filmmaker."),
        ("Scott Derrickson", "Scott Derrickson is an American director of Doctor Strange."),
        ("Paris", "Paris is the capital of France."),
    ]):
        corpus.append(f"d{i}", title, text)
    index = build_index(write_corpus(corpus, Path(tmp) / "c.jsonl"), Path(tmp) / "idx", "bm25s")
    return LocalRetriever(index)


def test_client_retries_until_a_late_server_comes_up(tiny_retriever: LocalRetriever) -> None:
    """Connection refused at first; the server starts during the backoff; the call succeeds."""
    import uvicorn

    from envs.retrieval.server import create_app, uvicorn_config

    port = free_port()
    server = uvicorn.Server(uvicorn_config(create_app(tiny_retriever), "127.0.0.1", port))
    thread = threading.Thread(target=server.run, daemon=True)
    threading.Timer(0.4, thread.start).start()
    try:
        client = RetrievalClient(f"http://127.0.0.1:{port}", retries=6, backoff=0.2)
        started = time.monotonic()
        passages = client.retrieve(["capital of France"], topk=1)
        assert passages[0][0].title == "Paris"
        assert time.monotonic() - started >= 0.35, "the first attempts failed and were retried"
        assert client.health()["corpus_size"] == 3
    finally:
        server.should_exit = True
        thread.join(10)


def test_client_and_local_retriever_agree(tiny_retriever: LocalRetriever) -> None:
    running = BackgroundServer.start(tiny_retriever)
    try:
        with RetrievalClient(running.url) as client:
            queries = ["American filmmaker", "Doctor Strange director", "capital of France"]
            over_http = client.retrieve(queries, topk=2)
        assert over_http == tiny_retriever.retrieve(queries, topk=2)
        assert [hits[0].title for hits in over_http] == ["Ed Wood", "Scott Derrickson", "Paris"]
    finally:
        running.stop()


def test_a_large_batch_is_split_into_chunks_answered_in_order() -> None:
    seen: list[list[str]] = []
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        queries = json.loads(request.content)["queries"]
        with lock:
            seen.append(queries)
        return httpx.Response(200, json=reply([[(q, f'"{q}"\ntext of {q}', 1.0)] for q in queries]))

    client = RetrievalClient("http://r.test", chunk_size=3, pipeline=2, transport=httpx.MockTransport(handler))
    queries = [f"q{i}" for i in range(10)]
    passages = client.retrieve(queries, topk=1)
    assert [hits[0].id for hits in passages] == queries
    assert sorted(len(chunk) for chunk in seen) == [1, 3, 3, 3]
    assert sorted(q for chunk in seen for q in chunk) == sorted(queries)
    client.retrieve(queries[:3], topk=1)
    assert len(seen) == 5, "a batch of chunk_size queries is one request"
    client.close()


@pytest.mark.parametrize(
    ("total", "sizes"),
    [
        (1702, [256] * 6 + [134, 32]),  # the benchmark's batch: the last reply is a small one
        (512, [256, 224, 32]),
        (300, [256, 44]),  # a remainder of up to twice the last size stays whole
        (256, [256]),  # one request: nothing to overlap, so nothing to split
        (100, [100]),
        (1, [1]),
        (0, []),
    ],
)
def test_chunk_sizes_keep_the_last_reply_small(total: int, sizes: list[int]) -> None:
    assert chunk_sizes(total, 256) == sizes
    assert sum(sizes) == total


def test_a_failing_chunk_fails_the_whole_batch(sleeps: list[float]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        queries = json.loads(request.content)["queries"]
        if "bad" in queries:
            return httpx.Response(400, json={"error": "no"})
        return httpx.Response(200, json=reply([[(q, f'"{q}"\nx', 1.0)] for q in queries]))

    client = RetrievalClient("http://r.test", chunk_size=2, transport=httpx.MockTransport(handler))
    with client, pytest.raises(RetrievalError, match="HTTP 400"):
        client.retrieve(["a", "b", "c", "bad", "d"], topk=1)


def test_chunked_client_and_local_retriever_agree(tiny_retriever: LocalRetriever) -> None:
    running = BackgroundServer.start(tiny_retriever)
    try:
        queries = ["American filmmaker", "Doctor Strange director", "capital of France", "Ed Wood", "Paris"] * 3
        with RetrievalClient(running.url, chunk_size=2, pipeline=3) as client:
            assert client.retrieve(queries, topk=2) == tiny_retriever.retrieve(queries, topk=2)
    finally:
        running.stop()


def test_a_413_splits_the_batch_until_each_request_fits(sleeps: list[float]) -> None:
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        queries = json.loads(request.content)["queries"]
        sizes.append(len(queries))
        if len(queries) > 2:
            return httpx.Response(413, json={"error": "a reply to these queries could take too many bytes"})
        return httpx.Response(200, json=reply([[(q, f'"{q}"\nx', 1.0)] for q in queries]))

    client = RetrievalClient("http://r.test", transport=httpx.MockTransport(handler))
    queries = [f"q{i}" for i in range(5)]
    assert [hits[0].id for hits in client.retrieve(queries, topk=100)] == queries
    assert sizes == [5, 2, 3, 1, 2] and sleeps == []


def test_a_413_on_one_query_is_raised(sleeps: list[float]) -> None:
    client = RetrievalClient("http://r.test", transport=httpx.MockTransport(
        lambda request: httpx.Response(413, json={"error": "queries[0] has 9000 characters"})))
    with pytest.raises(RetrievalError, match="HTTP 413.*9000 characters") as caught:
        client.retrieve(["q"])
    assert caught.value.status == 413


@pytest.mark.parametrize(("retry_after", "slept"), [("2", 2.0), ("600", 4.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.1)])
def test_retry_after_is_honoured_up_to_max_backoff(sleeps: list[float], retry_after: str, slept: float) -> None:
    statuses = iter([503, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        if next(statuses) == 503:
            return httpx.Response(503, json={"error": "server busy"}, headers={"retry-after": retry_after})
        return httpx.Response(200, json=reply([[("d", '"T"\nx', 1.0)]]))

    client = RetrievalClient("http://r.test", backoff=0.1, max_backoff=4.0, transport=httpx.MockTransport(handler))
    assert client.retrieve(["q"])[0][0].id == "d"
    assert sleeps == [slept]
