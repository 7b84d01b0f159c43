"""A scripted vLLM-like fleet member that serves a whole E-SPL run on GSM8K: the policy's
rollouts (with any adapter loaded at run time) and the reflector's questions (the base model).
It holds no tests itself; tests/test_reflector_overlap.py, tests/test_eval_pinned_adapter.py and
tests/test_resume_new_fleet.py run against it.

It keeps vLLM's request and reply shapes (token-id prompts, ``return_token_ids``, stop strings
kept in the text, ``/v1/load_lora_adapter``), and answers from the prompt and the request's
seed only, as a seeded server samples: a policy request (named by an adapter) gets the right
answer to the question it holds or a wrong one, by the seed's coin; a reflector request (the
base model's name) gets the scripted reflection of `test_reflector_plain_server.reply_for`.
"""

from __future__ import annotations

import random
import threading
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from test_reflector_plain_server import reply_for
from threaded_server import ThreadedServer

from envs import registry


class ScriptedFleetMember:
    """Serves `base` and the adapters loaded on it; logs (model, kind) of every completion, and
    every load and completion in the order they came (`requests`)."""

    def __init__(self, tokenizer: Any, base: str = "tiny-random") -> None:
        self.tokenizer = tokenizer
        self.base = base
        self.models = {base}
        self.answers = {task.question: task.answers[0] for task in registry.make("gsm8k", split="all").tasks}
        self.completions_log: list[tuple[str, str]] = []
        self.requests: list[tuple[str, str]] = []
        """("load", adapter name) and ("complete", model name), in arrival order."""
        self.loaded_from: dict[str, str] = {}
        """The folder each adapter name was loaded from."""
        self._lock = threading.Lock()
        app = Starlette(routes=[
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/load_lora_adapter", self.load, methods=["POST"]),
            Route("/v1/unload_lora_adapter", self.unload, methods=["POST"]),
            Route("/health", lambda request: PlainTextResponse(""), methods=["GET"]),
        ])  # fmt: skip
        self.served = ThreadedServer(app)
        self.url = self.served.url

    def stop(self) -> None:
        self.served.stop()

    def policy_reply(self, text: str, seed: int) -> str:
        answer = next((a for q, a in self.answers.items() if q in text), "0")
        right = random.Random(seed).random() < 0.5
        return f"So the answer is \\boxed{{{answer if right else 'no idea'}}}."

    async def completions(self, request: Request) -> JSONResponse:
        body = await request.json()
        model = body["model"]
        if model not in self.models:
            return JSONResponse({"error": {"message": f"The model `{model}` does not exist."}}, status_code=404)
        text = self.tokenizer.decode(body["prompt"])
        kind = "reflector" if model == self.base else "policy"
        with self._lock:
            self.completions_log.append((model, kind))
            self.requests.append(("complete", model))
        seed = int(body.get("seed", 0))
        reply = reply_for(text) if kind == "reflector" else self.policy_reply(text, seed)
        finish, stop_reason = "stop", None
        cuts = [(reply.find(stop) + len(stop), stop) for stop in body.get("stop") or [] if stop in reply]
        if cuts:
            end, stop_reason = min(cuts)
            reply = reply[:end]  # vLLM's include_stop_str_in_output keeps the stop string
        ids = self.tokenizer.encode(reply, add_special_tokens=False)
        if len(ids) > body["max_tokens"]:
            ids, finish, stop_reason = ids[: body["max_tokens"]], "length", None
        rng = random.Random(seed + 1)
        choice = {"index": 0, "text": "", "token_ids": ids, "finish_reason": finish, "stop_reason": stop_reason,
                  "logprobs": {"token_logprobs": [-0.1 - rng.random() for _ in ids]}}
        return JSONResponse({"model": model, "choices": [choice],
                             "usage": {"prompt_tokens": len(body["prompt"]), "completion_tokens": len(ids)}})

    async def list_models(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": name} for name in sorted(self.models)]})

    async def load(self, request: Request) -> PlainTextResponse:
        body = await request.json()
        with self._lock:
            self.requests.append(("load", body["lora_name"]))
        if body["lora_name"] in self.models:
            return PlainTextResponse("already loaded", status_code=400)
        self.models.add(body["lora_name"])
        self.loaded_from[body["lora_name"]] = body["lora_path"]
        return PlainTextResponse(f"Success: LoRA adapter '{body['lora_name']}' added successfully.")

    async def unload(self, request: Request) -> PlainTextResponse:
        body = await request.json()
        if body["lora_name"] not in self.models:
            return PlainTextResponse("not found", status_code=404)
        self.models.discard(body["lora_name"])
        return PlainTextResponse("removed")
