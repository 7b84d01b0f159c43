"""The `fleet` engine: rollouts on several `vllm serve` endpoints that serve the trained adapter.

It speaks to each server as the `openai` engine does (completions of token ids, vLLM's token
ids and logprobs, per-request seeds from the call's seed and the prompt's row), and adds what
training on a fleet needs:

- adapter sync (`agents.engines.fleet_adapters`): `adapter_from` publishes the trainer's
  update and loads it on every live server under a new name, confirmed on each, older ones
  unloaded; the returned `Adapter` carries that name, so every request names its version;
- routing (`agents.engines.fleet_routing`, `agents.engines.fleet_keys`): a group's samples and
  an episode's turns go to one server (its prefix cache), spilling to the next-ranked server
  above `per_server_concurrency`;
- faults: a server that cannot be reached (refused, reset, timed out), or that no longer knows
  the live adapter (it restarted), is marked down and the request retried on the next server;
  a background poll of ``GET /health`` loads the live adapter on a returning server, confirms
  it, and only then lets it take requests again.

Each completion says which server answered (``extra["server"]``) and the model name that
server says it sampled with (``extra["adapter"]``, the reply's ``model``), which the rollout
driver records in each turn.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import httpx

from agents.engine import Adapter, AdapterSource, Completion, Prompt, SamplingParams
from agents.engines.fleet_adapters import AdapterSync, AdapterSyncError
from agents.engines.fleet_keys import ConversationKeys
from agents.engines.fleet_routing import FleetRouter, NoServerAvailable
from agents.engines.openai import OpenAIEngine, RequestFailed

SERVER = "server"
ADAPTER = "adapter"
"""`Completion.extra` keys: the server's API root, and the model name it served the request with."""


class FleetEngine(OpenAIEngine):
    """Generation on a fleet of vLLM servers that take the trainer's adapters (see module doc)."""

    name = "fleet"

    def __init__(
        self,
        model: str,
        *,
        base_urls: Sequence[str],
        per_server_concurrency: int = 8,
        keep_versions: int = 2,
        run_name: str | None = None,
        health_interval: float = 1.0,
        tokenizer: Any = None,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        if per_server_concurrency < 1:
            raise ValueError(f"per_server_concurrency must be at least 1, got {per_server_concurrency}")
        super().__init__(
            model, base_urls=base_urls, tokenizer=tokenizer, max_concurrency=per_server_concurrency * len(base_urls),
            timeout=timeout, retries=retries, backoff=backoff, vllm_extras=True,
        )  # fmt: skip
        self.router = FleetRouter(self.base_urls, per_server_concurrency)
        self.keys = ConversationKeys()
        self.sync = AdapterSync(self._clients, run_name or f"policy-{secrets.token_hex(4)}", keep=keep_versions)
        """`run_name` prefixes every version's name; a random one keeps two runs on long-lived
        servers from ever sharing a name."""
        self.served_by: Counter[tuple[str, str]] = Counter()
        """Completions per (server, model name it was served with)."""
        self.events: list[tuple[float, str, str, str | None]] = []
        """(monotonic time, "down" | "up", server, live adapter name when it came up)."""
        self.health_interval = health_interval
        self.last_revive_error: str | None = None
        """Why the latest attempt to bring a down server back failed (it is tried again)."""
        self._stop = threading.Event()
        self._monitor = threading.Thread(target=self._watch_health, name="fleet-health", daemon=True)
        self._monitor.start()

    # -- protocol surface ------------------------------------------------------------------

    def adapter_from(self, source: AdapterSource) -> Adapter:
        """Publish the trainer's update and load it on every live server under a new name."""
        published = source.published_adapter()
        report = self.sync.publish(published, self.router.live)
        for url in report.unreachable:
            self._unreachable(url)
        return Adapter(name=report.name, path=published.path, version=published.version)

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, adapter: Adapter | None = None
    ) -> list[list[Completion]]:
        """As `OpenAIEngine.generate`, each prompt routed by its conversation's key (all keys
        taken before any request is sent, so no reply of this call moves another's key)."""
        keys = [self.keys.key_for(prompt) for prompt in prompts]
        futures = [self._submit(prompt, params, adapter, row, key) for row, (prompt, key) in enumerate(zip(prompts, keys))]
        return [future.result() for future in futures]

    def submit(
        self, prompt: Prompt, params: SamplingParams, adapter: Adapter | None = None, *, row: int = 0
    ) -> Future[list[Completion]]:
        """Prompt `row` of a call, sent now, to the server of its conversation's key."""
        return self._submit(prompt, params, adapter, row, self.keys.key_for(prompt))

    def _submit(
        self, prompt: Prompt, params: SamplingParams, adapter: Adapter | None, row: int, key: str
    ) -> Future[list[Completion]]:
        if params.n < 1 or params.max_tokens < 1:
            raise ValueError("n and max_tokens must be at least 1")
        model = adapter.name if adapter is not None else self.model
        return self._pool.submit(self._one_remembered, prompt, params, model, row, key)

    def _one_remembered(self, prompt: Prompt, params: SamplingParams, model: str, row: int, key: str) -> list[Completion]:
        """One request; each sampled continuation is remembered under `key` before the reply is
        handed back, so the episode's next turn, sent after it, finds the same server."""
        completions = self._one(prompt, params, model, row, key)
        if prompt and all(isinstance(t, int) for t in prompt):
            for completion in completions:
                if completion.ok:
                    self.keys.remember([*prompt, *completion.token_ids], key)  # type: ignore[list-item]
        return completions

    def release_turns(self) -> None:
        """Every episode has ended: its sequences no longer need to find their server."""
        self.keys.forget()

    def close(self) -> None:
        self._stop.set()
        self._monitor.join(timeout=10)
        super().close()

    # -- routing and faults ----------------------------------------------------------------

    def _pick_url(self, key: str | None = None, tried: Sequence[str] = ()) -> str:
        key = key if key is not None else secrets.token_hex(8)  # no conversation: any server
        try:
            return self.router.acquire(key, exclude=tried)
        except NoServerAvailable:
            pass
        try:  # every live server already failed this request once: try them again
            return self.router.acquire(key)
        except NoServerAvailable as error:
            raise RequestFailed(str(error)) from None

    def _release(self, url: str) -> None:
        self.router.release(url)

    def _served(self, completions: list[Completion], url: str, reply: Mapping[str, Any]) -> None:
        served = str(reply.get("model", ""))
        for completion in completions:
            completion.extra[SERVER] = url
            completion.extra[ADAPTER] = served
        self.served_by[(url, served)] += len(completions)

    def _unreachable(self, url: str) -> None:
        if self.router.mark_down(url):
            self.events.append((time.monotonic(), "down", url, None))

    def _retry_elsewhere(self, url: str, response: httpx.Response, body: Mapping[str, Any]) -> bool:
        """A 404 for the live adapter: the server lost it (it restarted between two polls)."""
        live = self.sync.live
        if response.status_code == 404 and live is not None and body.get("model") == live[0]:
            self._unreachable(url)
            return True
        return False

    def _watch_health(self) -> None:
        while not self._stop.wait(self.health_interval):
            for url in self.router.down:
                self.revive(url)

    def revive(self, url: str) -> bool:
        """If the down server `url` is healthy: load the live adapter on it, confirm it, and
        only then mark it up (all under the sync lock, so no version is published between)."""
        root = url[: -len("/v1")]
        try:
            if self._clients[url].get(f"{root}/health", timeout=5.0).status_code != 200:
                return False
            with self.sync.lock:
                name = self.sync.bring_up(url)
                self.router.mark_up(url)
        except (httpx.HTTPError, AdapterSyncError, ValueError, KeyError) as error:  # not ready yet: next poll
            self.last_revive_error = f"{url}: {type(error).__name__}: {error}"
            return False
        self.events.append((time.monotonic(), "up", url, name))
        return True
