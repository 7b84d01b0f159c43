"""A vLLM-like completions server whose replies take as long as the test says, for the rollout
driver's per-episode schedule (tests/test_rollout_per_episode.py and
benchmarks/test_rollout_overlap.py). It holds no tests itself.

It plays a search agent: it decodes the prompt (token ids, as the rollout driver sends them),
counts the searches already in it, and answers with another search or with an answer, drawn
from the request's seed. So a reply depends only on the prompt and the seed, as a real server's
sampled reply does, and two schedules that send the same requests get the same trajectories.
How long a reply takes is `latency(prompt_text, turn, seed)`; every request is logged with
when it came and when it was answered.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from threaded_server import ThreadedServer

SEARCH = "<search>seek "
WORDS = ("river", "castle", "author", "election", "album", "mountain", "novel", "bridge")
Latency = Callable[[str, int, int], float]


@dataclass(frozen=True)
class Served:
    """One request: the prompt's text, its turn (searches already made), and when it came and went."""

    text: str
    turn: int
    arrived: float
    answered: float


class PacedServer:
    """Serves ``/v1/completions`` (vLLM's token-id fields), ``/version`` and ``/health``."""

    def __init__(self, tokenizer: Any, latency: Latency, *, max_searches: int = 3, search_share: float = 0.75) -> None:
        self.tokenizer = tokenizer
        self.latency = latency
        self.max_searches = max_searches
        self.search_share = search_share
        """The chance that a reply searches while searches are left (1.0: every episode searches
        `max_searches` times, then answers)."""
        self.log: list[Served] = []
        self._lock = threading.Lock()
        app = Starlette(routes=[
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/version", lambda request: JSONResponse({"version": "0.0.test"}), methods=["GET"]),
            Route("/health", lambda request: PlainTextResponse(""), methods=["GET"]),
        ])  # fmt: skip
        self.served = ThreadedServer(app)
        self.url = self.served.url

    def stop(self) -> None:
        self.served.stop()

    def reply_text(self, turn: int, seed: int) -> str:
        """A search while searches are left (and the seed's coin says so), else an answer."""
        rng = random.Random(seed)
        if turn < self.max_searches and rng.random() < self.search_share:
            return f"{SEARCH}{rng.choice(WORDS)} {rng.choice(WORDS)}</search>"
        return f"<answer>{rng.choice(WORDS)}</answer>"

    async def completions(self, request: Request) -> JSONResponse:
        arrived = time.monotonic()
        body = await request.json()
        text = self.tokenizer.decode(body["prompt"])
        turn = text.count(SEARCH)
        seed = int(body.get("seed", 0))
        await asyncio.sleep(self.latency(text, turn, seed))
        ids = self.tokenizer.encode(self.reply_text(turn, seed), add_special_tokens=False)[: body["max_tokens"]]
        rng = random.Random(seed + 1)
        choice = {
            "index": 0, "text": "", "token_ids": ids, "finish_reason": "stop", "stop_reason": None,
            "logprobs": {"token_logprobs": [-rng.random() for _ in ids]},
        }  # fmt: skip
        with self._lock:
            self.log.append(Served(text, turn, arrived, time.monotonic()))
        return JSONResponse({"model": body["model"], "choices": [choice]})

    def requests_of(self, marker: str) -> list[Served]:
        """The logged requests whose prompt holds `marker`, in the order they arrived."""
        with self._lock:
            return sorted((s for s in self.log if marker in s.text), key=lambda s: s.arrived)
