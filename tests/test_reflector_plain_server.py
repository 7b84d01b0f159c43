"""Reflection through a plain OpenAI-compatible endpoint that is not vLLM.

The scripted server below behaves as OpenAI's API does: it refuses fields it does not know
(vLLM's `return_token_ids` and friends), serves no `/version`, returns no token ids, and cuts
a reply at a stop string without including the string. The `openai` engine must send it
only standard fields, and mutation must still read the edit lists whose closing `]` and fence
the stop string took away.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from test_operators_support import trajectory
from threaded_server import ThreadedServer

from agents.engine import SamplingParams
from agents.engines.openai import VLLM_FIELDS, OpenAIEngine
from espl.evolution.operators import MutationConfig, mutate
from espl.evolution.population import Population
from espl.evolution.reflector import Reflector

STANDARD_FIELDS = {"model", "messages", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "logprobs",
                   "response_format"}


def reply_for(text: str) -> str:
    if "say how the agent approached" in text:
        return "The agent answered without checking the units."
    if "Propose at most" in text:
        return 'Looking at both attempts.\n```json\n[{"op": "add", "principle": "Check the units before answering."}]\n```'
    if "revision plan" in text:
        return '```json\n[{"op": "add", "principle": "Check the units before answering."}]\n```\nDone.'
    return "I cannot help with that."


class PlainServer:
    """OpenAI's chat completions API, strictly: unknown fields are a 400, stop strings are cut."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.version_asked = 0
        app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"]),
                                Route("/version", self.version, methods=["GET"])])
        self.served = ThreadedServer(app)
        self.url = self.served.url

    async def version(self, request: Request) -> JSONResponse:
        self.version_asked += 1
        return JSONResponse({"error": {"message": "Not found"}}, status_code=404)

    async def chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.bodies.append(body)
        unknown = sorted(set(body) - STANDARD_FIELDS)
        if unknown:
            return JSONResponse({"error": {"message": f"Unrecognized request arguments: {unknown}"}}, status_code=400)
        text, finish = reply_for(body["messages"][-1]["content"]), "stop"
        cuts = [text.find(stop) for stop in body.get("stop") or [] if stop in text]
        if cuts:
            text = text[: min(cuts)]  # the stop string itself is not returned
        words = len(text.split())
        return JSONResponse({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 50, "completion_tokens": words, "total_tokens": 50 + words},
        })

    def stop(self) -> None:
        self.served.stop()


@pytest.fixture(scope="module")
def plain() -> Iterator[PlainServer]:
    server = PlainServer()
    yield server
    server.stop()


def test_mutation_reads_edits_from_a_plain_server_that_strips_stop_strings(plain: PlainServer) -> None:
    engine = OpenAIEngine("some-hosted-model", base_urls=[plain.url], mode="chat", tokenizer=None, backoff=0.01)
    reflector = Reflector(engine, SamplingParams(temperature=0.7, max_tokens=512, logprobs=False))
    parent = Population().create(["Read the question."], step=0)
    rollouts = [trajectory("t1", 1.0, parent.id), trajectory("t1", 0.0, parent.id, reply="It is 5.")]
    result = mutate(parent, rollouts, reflector, step=1, new_id="p0001", config=MutationConfig(verbatim_words=0))
    assert result.child is not None, (result.reason, result.notes)
    assert result.child.principles == ("Read the question.", "Check the units before answering.")
    assert plain.bodies and all(not set(body) & VLLM_FIELDS for body in plain.bodies)
    assert any(body.get("stop") == ["]\n```"] for body in plain.bodies)
    assert plain.version_asked == 1, "the engine asks once whether the server is vLLM"
    assert result.usage.completion_tokens > 0, "the server's own token counts are the budget"
    engine.close()


def test_a_list_cut_by_a_stop_string_is_read_only_when_the_reply_stopped_there() -> None:
    from espl.evolution.operators.jsonish import extract_json

    cut = '```json\n[{"op": "add", "principle": "Check units."}'
    assert extract_json(cut, stopped=True).value == [{"op": "add", "principle": "Check units."}]
    assert not extract_json(cut).found  # a reply cut by max_tokens is not salvaged
    assert not extract_json('```json\n[{"op": "add", "principle": "Check', stopped=True).found
    two = 'Example: ```json\n[{"op": "remove", "index": 0}]\n``` then my answer:\n```json\n' + json.dumps([{"op": "add"}]) + "\n```"
    assert extract_json(two).value == [{"op": "add"}], "the last valid list is the answer"
