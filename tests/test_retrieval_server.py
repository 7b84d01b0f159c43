"""The retrieval server over real HTTP on 127.0.0.1: Search-R1 compatibility, recall, bad input."""

from __future__ import annotations

import itertools
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from envs.datasets import load_rows
from envs.retrieval.corpus import BUILTIN, load_corpus, write_corpus
from envs.retrieval.index import build_index
from envs.retrieval.local import BackgroundServer
from envs.retrieval.searcher import LocalRetriever
from envs.retrieval.wire import Limits

QUESTIONS = 120


def hotpot_subset_corpus(tmp_dir: Path, questions: int) -> Path:
    """The bundled corpus cut to the context paragraphs of the first HotpotQA dev questions."""
    rows = load_rows("hotpotqa_dev_distractor")[:questions]
    titles = {paragraph["title"] for row in rows for paragraph in row["context"]}
    corpus = load_corpus(BUILTIN)
    keep = [i for i, title in enumerate(corpus.titles) if title in titles and corpus.ids[i].startswith("hp")]
    return write_corpus(corpus.subset(keep), tmp_dir / "subset.jsonl", style="contents")


@pytest.fixture(scope="module")
def retriever(tmp_path_factory: pytest.TempPathFactory) -> LocalRetriever:
    tmp = tmp_path_factory.mktemp("retrieval")
    index = build_index(hotpot_subset_corpus(tmp, QUESTIONS), tmp / "index", "bm25s")
    found = LocalRetriever(index)
    found.warm_up()
    return found


@pytest.fixture(scope="module")
def server(retriever: LocalRetriever):
    running = BackgroundServer.start(retriever, limits=Limits(max_topk=50, max_queries=64, max_query_chars=500,
                                                               max_body_bytes=64 * 1024))
    yield running
    running.stop()
    assert not running.thread.is_alive(), "the server thread stops cleanly"


def test_search_r1_client_request_works_unchanged(server: BackgroundServer) -> None:
    requests = pytest.importorskip("requests")
    queries = ["Were Scott Derrickson and Ed Wood of the same nationality?", "Doctor Strange director"]
    payload = {"queries": queries, "topk": 3, "return_scores": True}
    results = requests.post(f"{server.url}/retrieve", json=payload).json()["result"]
    assert len(results) == 2
    for retrieval_result in results:
        assert len(retrieval_result) == 3
        # Search-R1's _passages2string, step by step.
        rendered = ""
        for idx, doc_item in enumerate(retrieval_result):
            content = doc_item["document"]["contents"]
            title = content.split("\n")[0]
            text = "\n".join(content.split("\n")[1:])
            rendered += f"Doc {idx + 1}(Title: {title}) {text}\n"
            assert title.startswith('"') and title.endswith('"') and text
            assert isinstance(doc_item["score"], float) and set(doc_item["document"]) == {"id", "contents"}
        scores = [item["score"] for item in retrieval_result]
        assert scores == sorted(scores, reverse=True)
    assert '"Scott Derrickson"' in rendered or "Scott Derrickson" in json.dumps(results[0])


def test_without_scores_the_result_holds_bare_documents(server: BackgroundServer) -> None:
    reply = httpx.post(f"{server.url}/retrieve", json={"queries": ["Ed Wood"], "topk": 2, "return_scores": False})
    assert reply.status_code == 200
    documents = reply.json()["result"][0]
    assert len(documents) == 2 and all(set(doc) == {"id", "contents"} for doc in documents)
    default_k = httpx.post(f"{server.url}/retrieve", json={"queries": ["Ed Wood"]}).json()["result"][0]
    assert len(default_k) == 3, "Search-R1's default topk"


def test_health_reports_backend_size_and_version(server: BackgroundServer, retriever: LocalRetriever) -> None:
    health = httpx.get(f"{server.url}/health").json()
    assert health["backend"] == "bm25s"
    assert health["corpus_size"] == len(retriever.corpus) > 1000
    assert health["index_version"] == retriever.index.version and len(health["index_version"]) == 16


def test_gold_titles_are_recalled(server: BackgroundServer) -> None:
    rows = load_rows("hotpotqa_dev_distractor")[:QUESTIONS]
    reply = httpx.post(
        f"{server.url}/retrieve", json={"queries": [r["question"] for r in rows[:60]], "topk": 10, "return_scores": True}
    ).json()["result"]
    hits_any = 0
    for row, hits in zip(rows, reply):
        gold = {title for title, _ in row["supporting_facts"]}
        titles = {item["document"]["contents"].split("\n")[0].strip('"') for item in hits}
        hits_any += bool(gold & titles)
    assert hits_any / 60 >= 0.9


BAD_REQUESTS = [
    ("not json", b"{queries: [", 400, "not valid JSON"),
    ("array body", b'["q"]', 400, "JSON object"),
    ("missing queries", b'{"topk": 3}', 400, "missing field 'queries'"),
    ("queries not a list", b'{"queries": "q"}', 400, "list of strings"),
    ("empty queries", b'{"queries": []}', 400, "empty"),
    ("blank query", b'{"queries": ["ok", "  "]}', 400, "queries[1] is empty"),
    ("non-string query", b'{"queries": ["ok", 7]}', 400, "queries[1] must be a string"),
    ("null query", b'{"queries": [null]}', 400, "not null"),
    ("topk string", b'{"queries": ["q"], "topk": "3"}', 400, "'topk' must be an integer"),
    ("topk bool", b'{"queries": ["q"], "topk": true}', 400, "'topk' must be an integer"),
    ("topk float", b'{"queries": ["q"], "topk": 2.5}', 400, "'topk' must be an integer"),
    ("topk zero", b'{"queries": ["q"], "topk": 0}', 400, "between 1 and 50"),
    ("topk too big", b'{"queries": ["q"], "topk": 51}', 400, "between 1 and 50"),
    ("return_scores string", b'{"queries": ["q"], "return_scores": "yes"}', 400, "true or false"),
    ("unknown field", b'{"queries": ["q"], "k": 3}', 400, "unknown field"),
    ("too many queries", json.dumps({"queries": ["q"] * 65}).encode(), 413, "limit is 64"),
    ("query too long", json.dumps({"queries": ["word " * 101]}).encode(), 413, "limit is 500"),
    ("body too large", json.dumps({"queries": ["q" * 70_000]}).encode(), 413, "limit is 65536"),
    ("deep nesting", b"[" * 20_000 + b"]" * 20_000, 400, "not valid JSON"),
    ("invalid utf-8", b'{"queries": ["\xff\xfe"]}', 400, "not valid JSON"),
    ("topk of 10,000 digits", b'{"queries": ["q"], "topk": 1' + b"0" * 9_999 + b"}", 400, "number that is too long"),
]


@pytest.mark.parametrize("body,status,message", [case[1:] for case in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_get_a_clear_4xx(server: BackgroundServer, body: bytes, status: int, message: str) -> None:
    reply = httpx.post(f"{server.url}/retrieve", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == status
    assert message in reply.json()["error"]


def test_a_topk_of_100001_digits_is_a_400(retriever: LocalRetriever) -> None:
    running = BackgroundServer.start(retriever)  # the default limits admit a body this size
    try:
        body = b'{"queries": ["q"], "topk": ' + b"9" * 100_001 + b"}"
        reply = httpx.post(f"{running.url}/retrieve", content=body, headers={"content-type": "application/json"})
    finally:
        running.stop()
    assert reply.status_code == 400 and "number that is too long" in reply.json()["error"]
    assert len(reply.json()["error"]) < 300


def test_a_reply_that_could_pass_the_limit_is_refused_before_searching(
    retriever: LocalRetriever, monkeypatch: pytest.MonkeyPatch
) -> None:
    searched: list[int] = []
    search = retriever.search
    monkeypatch.setattr(retriever, "search", lambda queries, topk: searched.append(len(queries)) or search(queries, topk))
    limits = Limits(max_reply_bytes=1 << 20, max_pending_bytes=16 << 20)
    running = BackgroundServer.start(retriever, limits=limits)
    try:
        per_hit = retriever.reply_bound(1, 1)
        fits = (1 << 20) // per_hit  # queries at topk 1 whose worst-case reply fits in 1 MiB
        too_many = httpx.post(f"{running.url}/retrieve", json={"queries": ["Ed Wood"] * 64, "topk": 50})
        just_fits = httpx.post(f"{running.url}/retrieve", json={"queries": ["Ed Wood"] * fits, "topk": 1})
    finally:
        running.stop()
    assert too_many.status_code == 413
    assert "a reply to 64 queries at topk 50 could take" in too_many.json()["error"]
    assert just_fits.status_code == 200 and len(just_fits.json()["result"]) == fits
    assert searched == [fits], "the refused request was never searched"


def test_wrong_routes_methods_and_content_types_are_4xx_json(server: BackgroundServer) -> None:
    assert httpx.get(f"{server.url}/retrieve").status_code == 405
    assert httpx.get(f"{server.url}/nowhere").json()["error"].startswith("GET /nowhere")
    reply = httpx.post(f"{server.url}/retrieve", content=b"queries=q", headers={"content-type": "text/plain"})
    assert reply.status_code == 415


def test_server_survives_abuse_and_keeps_serving(server: BackgroundServer) -> None:
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as raw:
        raw.sendall(b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"queries\"")  # then hang up
    for body, *_ in [case[1:] for case in BAD_REQUESTS]:
        httpx.post(f"{server.url}/retrieve", content=body, headers={"content-type": "application/json"})
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(
            lambda q: httpx.post(f"{server.url}/retrieve", json={"queries": [q], "topk": 5}),
            [f"film director {i}" for i in range(32)],
        ))
    assert all(r.status_code == 200 and len(r.json()["result"][0]) == 5 for r in replies)
    assert server.thread.is_alive()


def test_query_without_any_indexed_term_gets_no_passages(server: BackgroundServer) -> None:
    reply = httpx.post(f"{server.url}/retrieve", json={"queries": ["the of and", "Ed Wood"], "topk": 3}).json()
    assert reply["result"][0] == [] and len(reply["result"][1]) == 3


class SlowRetriever:
    """Takes `seconds` per search and `encode_seconds` per reply, and records when each ran."""

    def __init__(self, seconds: float, encode_seconds: float = 0.0) -> None:
        self.seconds, self.encode_seconds = seconds, encode_seconds
        self.ran, self.encoded = [], []
        self.sized = 0  # reply_bound calls: the server sizes a request just before it queues it

    def search(self, queries, topk: int) -> list[str]:
        started = time.monotonic()
        time.sleep(self.seconds)
        self.ran.append((queries[0], started, time.monotonic()))
        return list(queries)

    def encode_reply(self, hits: list[str], return_scores: bool) -> bytes:
        started = time.monotonic()
        time.sleep(self.encode_seconds)
        self.encoded.append((hits[0], started, time.monotonic()))
        return json.dumps({"result": [[] for _ in hits]}).encode()

    def reply_bound(self, queries: int, topk: int) -> int:
        self.sized += 1
        return 100 * queries

    def health(self) -> dict:
        return {"status": "ok"}


def submit_in_arrival_order(pool: ThreadPoolExecutor, post, names: tuple[str, ...], slow: SlowRetriever) -> list:
    """Submits one request per name, each only once the server has queued the one before.

    The server sizes a request and queues its search in one step of its event loop, so once
    `reply_bound` has run for a request, the next request cannot overtake it. A fixed sleep
    between submissions is not enough on a loaded machine: a client thread can take longer
    to send than the sleep.
    """
    futures = []
    for name in names:
        sized = slow.sized
        futures.append(pool.submit(post, name))
        deadline = time.monotonic() + 30
        while slow.sized == sized and time.monotonic() < deadline:
            time.sleep(0.002)
    return futures


def test_searches_run_one_at_a_time_in_arrival_order_and_health_stays_prompt() -> None:
    slow = SlowRetriever(0.3)
    running = BackgroundServer.start(slow)
    try:
        def post(name: str) -> int:
            return httpx.post(f"{running.url}/retrieve", json={"queries": [name]}, timeout=30).status_code

        with ThreadPoolExecutor(3) as pool:
            futures = submit_in_arrival_order(pool, post, ("first", "second", "third"), slow)
            started = time.monotonic()
            assert httpx.get(f"{running.url}/health", timeout=30).status_code == 200
            health_s = time.monotonic() - started
            assert [future.result() for future in futures] == [200, 200, 200]
    finally:
        running.stop()
    assert [name for name, _, _ in slow.ran] == ["first", "second", "third"]
    for (_, _, ended), (_, started_next, _) in itertools.pairwise(slow.ran):
        assert started_next >= ended  # never two at once
    assert health_s < 0.25  # answered while the searches (0.9 s in all) were still running


def test_a_reply_is_encoded_while_the_next_search_runs() -> None:
    slow = SlowRetriever(0.3, encode_seconds=0.25)
    running = BackgroundServer.start(slow)
    try:
        def post(name: str) -> httpx.Response:
            return httpx.post(f"{running.url}/retrieve", json={"queries": [name]}, timeout=30)

        with ThreadPoolExecutor(3) as pool:
            futures = submit_in_arrival_order(pool, post, ("first", "second", "third"), slow)
            replies = [future.result() for future in futures]
    finally:
        running.stop()
    assert [reply.status_code for reply in replies] == [200, 200, 200]
    assert [reply.json() for reply in replies] == [{"result": [[]]}] * 3
    assert [name for name, _, _ in slow.ran] == [name for name, _, _ in slow.encoded] == ["first", "second", "third"]
    for (_, _, ended), (_, started_next, _) in itertools.pairwise(slow.ran):
        assert started_next - ended < 0.1  # the next search did not wait for this reply's encoding
    for (name, _, search_ended), (_, encode_started, _) in zip(slow.ran, slow.encoded):
        assert encode_started >= search_ended, name
    # three searches back to back, then the last encoding: not search + encoding three times
    assert slow.encoded[-1][2] - slow.ran[0][1] < 3 * 0.3 + 0.25 + 0.2
