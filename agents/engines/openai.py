"""The `openai` engine: any OpenAI-compatible server (several at once), over httpx.

Two modes:

- ``"completions"`` (default): ``POST /v1/completions`` with the prompt as token ids
  (conversations are rendered locally with the model's chat template, so both prompt kinds
  give the same ids). With vLLM's server the reply carries the sampled token ids
  (``return_token_ids``) and each sampled token's logprob (``logprobs=0``), and keeps the
  matched stop string (``include_stop_str_in_output``): the token-in/token-out contract of
  the in-process engines, served remotely. Those fields are vLLM's own, so they are sent only
  to a server that is vLLM: `vllm_extras=None` (the default) asks each base URL once
  (``GET /version``, which vLLM serves and OpenAI's API does not); True or False says so.
  A plain server returns text without the stop string and without token ids.
- ``"chat"``: ``POST /v1/chat/completions`` with the messages, for endpoints that only speak
  chat (hosted APIs, reflector models). Token prompts are refused there.

A batch is one request per prompt (``n`` samples each), seeded from the call's seed and the
prompt's position (`agents.engines.seeds`: N copies of one prompt give N different samples,
reproducibly), sent from a thread pool of `max_concurrency` workers to the least-loaded base
URL (ties in turn); one pooled `httpx.Client` per URL. Connection errors, timeouts, 429 and
5xx are retried `retries` times with exponential backoff (on the then least-loaded URL);
anything still failing, or a 4xx, becomes `Completion.failed` for that prompt alone.
`submit` sends one prompt of such a call on its own, seeded by the row its caller names
(`agents.engine.RequestEngine`: a rollout advances each episode as soon as its reply is in).

Structured generation (`params.constraint`): a vLLM server gets it as ``structured_outputs``
(``guided_json`` / ``guided_regex`` / ``guided_grammar`` before vLLM 0.10.2, by its
``/version``), and its masked logprobs are replaced by the unmasked ones where a rescoring
request gives them exactly (`agents.engines.structured`). A plain server gets a JSON schema as
``response_format`` (``json_schema``, strict) and a regex or grammar not at all: such a
completion says ``extra["constrained"] = False`` and callers parse it defensively.

The completion text is the local decoding of the returned ids when a tokenizer is available
(so text and ids agree, as in the in-process engines), else the server's text.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx

from agents.chat import render_prompt_ids
from agents.engine import Adapter, AdapterSource, Completion, FinishReason, Prompt, SamplingParams
from agents.engines.openai_wire import (
    Mode,
    attach_usage,
    by_index,
    is_conversation,
    sampled_logprobs,
    token_prompt_ids,
)
from agents.engines.seeds import request_seed
from agents.engines.structured import (
    CONSTRAINED,
    LOGPROBS_MASKED,
    legacy_vllm_fields,
    prompt_logprob_values,
    rescores_exactly,
    response_format,
    takes_structured_outputs,
    vllm_fields,
)
from agents.models import load_tokenizer

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
VLLM_FIELDS = frozenset(
    {"return_token_ids", "include_stop_str_in_output", "skip_special_tokens", "structured_outputs", "prompt_logprobs"}
)
"""Request fields only vLLM's server knows (a strict OpenAI-compatible server may refuse them)."""


class RequestFailed(Exception):
    """A request that failed for good (after retries, or with a non-retryable status)."""


class OpenAIEngine:
    """Batched generation against OpenAI-compatible endpoints (see module doc)."""

    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_urls: Sequence[str] = ("http://127.0.0.1:8000",),
        api_key: str | None = None,
        mode: Mode = "completions",
        tokenizer: Any = None,
        max_concurrency: int = 16,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 0.5,
        vllm_extras: bool | None = None,
    ) -> None:
        if mode not in ("completions", "chat"):
            raise ValueError("mode must be 'completions' or 'chat'")
        if not base_urls:
            raise ValueError("give at least one base URL")
        if max_concurrency < 1 or retries < 0:
            raise ValueError("max_concurrency must be >= 1 and retries >= 0")
        self.model = model
        self.mode: Mode = mode
        self.base_urls = [self._api_root(url) for url in base_urls]
        self.max_concurrency = max_concurrency
        self.retries = retries
        self.backoff = backoff
        self.vllm_extras = vllm_extras
        """True / False: every server is / is not vLLM; None: ask each one (`is_vllm`)."""
        self._is_vllm: dict[str, bool] = {}
        self._vllm_version: dict[str, str | None] = {}
        self._detect_lock = threading.Lock()
        self._tokenizer_source = tokenizer if tokenizer is not None else model
        self._tokenizer: Any = None if isinstance(self._tokenizer_source, str) else self._tokenizer_source
        self._tokenizer_missing = False
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency)
        self._clients = {
            url: httpx.Client(base_url=url, headers=headers, timeout=timeout, limits=limits) for url in self.base_urls
        }
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="openai-engine")
        self._lock = threading.Lock()
        self._in_flight = dict.fromkeys(self.base_urls, 0)
        self._turn = 0
        self.requests_per_url: Counter[str] = Counter()
        """Requests sent to each base URL (retries included), for load checks."""

    @staticmethod
    def _api_root(url: str) -> str:
        url = url.rstrip("/")
        return url if url.endswith("/v1") else f"{url}/v1"

    # -- protocol surface ------------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer, loaded locally on first use (`agents.models.load_tokenizer`).

        In chat mode the server renders and tokenizes, so a hosted model with no local copy
        is fine: the tokenizer is then None (asked for once, not on every call)."""
        if self.mode == "chat":
            return self._local_tokenizer()
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self._tokenizer_source)
        return self._tokenizer

    def _local_tokenizer(self) -> Any:
        """The tokenizer if one can be had (None for a hosted model with no local copy)."""
        if self._tokenizer is None and not self._tokenizer_missing:
            try:
                self._tokenizer = load_tokenizer(self._tokenizer_source)
            except (OSError, ValueError):
                self._tokenizer_missing = True
        return self._tokenizer

    def adapter_from(self, source: AdapterSource) -> Adapter:
        raise NotImplementedError(
            "the openai engine samples from whatever its servers load; it cannot take a trained adapter"
        )

    def release_turns(self) -> None:
        """Nothing to release: the servers manage their own caches."""

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for client in self._clients.values():
            client.close()

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, adapter: Adapter | None = None
    ) -> list[list[Completion]]:
        """`params.n` completions per prompt, in prompt order; a failed prompt gets failed ones.

        `adapter`, when given, is served by name: the request's model becomes the adapter's
        name (how vLLM's server exposes a LoRA loaded with ``--lora-modules``)."""
        futures = [self.submit(prompt, params, adapter, row=row) for row, prompt in enumerate(prompts)]
        return [future.result() for future in futures]

    def submit(
        self, prompt: Prompt, params: SamplingParams, adapter: Adapter | None = None, *, row: int = 0
    ) -> Future[list[Completion]]:
        """Prompt `row` of a `generate` call, sent now (`agents.engine.RequestEngine`)."""
        _check(params)
        model = adapter.name if adapter is not None else self.model
        return self._pool.submit(self._one, prompt, params, model, row)

    # -- one prompt ------------------------------------------------------------------------

    def _one(self, prompt: Prompt, params: SamplingParams, model: str, row: int, key: str | None = None) -> list[Completion]:
        try:
            path, body = self.request(prompt, params, model, row)
            reply, url = self._post(path, body, key)
            completions = [self._completion(choice, params) for choice in by_index(reply.get("choices", []))]
            attach_usage(completions, reply.get("usage"))
            self._served(completions, url, reply)
        except (ValueError, TypeError, KeyError, RequestFailed) as error:
            return [Completion.failed(str(error)) for _ in range(params.n)]
        if params.greedy and len(completions) == 1 and params.n > 1:  # the n greedy samples are one
            completions += [self._completion(reply["choices"][0], params) for _ in range(params.n - 1)]
        if len(completions) != params.n:
            return [Completion.failed(f"expected {params.n} choices, got {len(completions)}") for _ in range(params.n)]
        if params.constraint is not None:
            prompt_ids = body.get("prompt") if self.mode == "completions" else reply.get("prompt_token_ids")
            self._constrained(completions, params, model, url, prompt_ids)
        return completions

    def _constrained(
        self, completions: list[Completion], params: SamplingParams, model: str, url: str, prompt_ids: Any
    ) -> None:
        """Say whether the server enforced the constraint and, for vLLM, put the unmasked logprobs
        in place of the masked ones it reported: one prompt-logprobs request per distinct
        completion (see `agents.engines.structured`); flagged where that cannot be done."""
        assert params.constraint is not None
        vllm = self.is_vllm(url)
        for completion in completions:
            completion.extra[CONSTRAINED] = vllm or params.constraint.json_schema is not None
        if not vllm or not params.logprobs:
            return
        exact = rescores_exactly(params) and isinstance(prompt_ids, list)
        for sequence in {tuple(c.token_ids) for c in completions if c.ok and c.logprobs}:
            values = self._prompt_logprobs(model, prompt_ids, list(sequence)) if exact else None
            for completion in completions:
                if tuple(completion.token_ids) != sequence:
                    continue
                if values is None:
                    completion.extra[LOGPROBS_MASKED] = True
                else:
                    completion.logprobs = list(values)

    def _prompt_logprobs(self, model: str, prompt_ids: list[int], token_ids: list[int]) -> list[float] | None:
        """The unmasked logprobs of `token_ids` after `prompt_ids`, from a vLLM server (None if
        the request or its reply fails)."""
        body = {"model": model, "prompt": prompt_ids + token_ids, "max_tokens": 1, "temperature": 0.0}
        body["prompt_logprobs"] = 0
        try:
            reply, _ = self._post("/completions", body)
            return prompt_logprob_values(reply["choices"][0]["prompt_logprobs"], token_ids, len(prompt_ids))
        except (RequestFailed, KeyError, IndexError, ValueError, TypeError):
            return None

    def request(self, prompt: Prompt, params: SamplingParams, model: str, row: int = 0) -> tuple[str, dict[str, Any]]:
        """The endpoint path and JSON body for the prompt at position `row` of a call."""
        is_chat = is_conversation(prompt)
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "n": 1 if params.greedy else params.n,  # vLLM refuses n > 1 with greedy decoding
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = request_seed(params.seed, row)
        if self.vllm_extras is not False:
            body.update(return_token_ids=True, include_stop_str_in_output=True, skip_special_tokens=True)
        if params.constraint is not None:  # vLLM's form; `_for_server` rewrites it for other servers
            body["structured_outputs"] = vllm_fields(params.constraint)
        if self.mode == "chat":
            if not is_chat:
                raise ValueError("chat mode takes conversations, not token ids")
            body["messages"] = [dict(message) for message in prompt]  # type: ignore[union-attr]
            if params.logprobs:
                body["logprobs"] = True
            return "/chat/completions", body
        body["prompt"] = render_prompt_ids(self.tokenizer, prompt) if is_chat else token_prompt_ids(prompt)  # type: ignore[arg-type]
        if params.logprobs:
            body["logprobs"] = 0
        return "/completions", body

    def _completion(self, choice: Mapping[str, Any], params: SamplingParams) -> Completion:
        finish = choice.get("finish_reason")
        if finish not in ("stop", "length"):
            return Completion.failed(f"server finished with {finish!r}")
        reason: FinishReason = finish
        token_ids = [int(t) for t in choice.get("token_ids") or []]
        logprobs = sampled_logprobs(choice.get("logprobs"), self.mode) if params.logprobs else []
        if self.mode == "chat":
            text = (choice.get("message") or {}).get("content") or ""
        else:
            text = choice.get("text") or ""
        tokenizer = self._local_tokenizer() if token_ids else None
        if tokenizer is not None:
            text = tokenizer.decode(token_ids, skip_special_tokens=True)
        stop = choice.get("stop_reason")
        stop_string = stop if isinstance(stop, str) and stop in params.stop else None
        return Completion(token_ids, logprobs, text, reason, stop_string=stop_string)

    # -- transport -------------------------------------------------------------------------

    def _pick_url(self, key: str | None = None, tried: Sequence[str] = ()) -> str:
        """The least-loaded base URL (`key`, `tried`: for engines that route otherwise)."""
        with self._lock:
            count = len(self.base_urls)
            order = [self.base_urls[(self._turn + i) % count] for i in range(count)]
            self._turn = (self._turn + 1) % count
            url = min(order, key=lambda u: self._in_flight[u])
            self._in_flight[url] += 1
            self.requests_per_url[url] += 1
            return url

    def is_vllm(self, url: str) -> bool:
        """Whether the server at base URL `url` is vLLM (asked once, then remembered)."""
        if self.vllm_extras is not None:
            return self.vllm_extras
        with self._detect_lock:  # one question per server, however many threads send at once
            if url not in self._is_vllm:
                root = url[: -len("/v1")] if url.endswith("/v1") else url
                try:
                    reply = self._clients[url].get(f"{root}/version", timeout=5.0)
                    version = reply.json().get("version") if reply.status_code == 200 else None
                    self._is_vllm[url] = version is not None
                    self._vllm_version[url] = str(version) if version is not None else None
                except (httpx.HTTPError, ValueError, TypeError, AttributeError):
                    self._is_vllm[url] = False
            return self._is_vllm[url]

    def _for_server(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """`body` for the server at `url`: as is for vLLM (a constraint as ``guided_*`` before
        0.10.2); without vLLM's own fields otherwise, a JSON schema as ``response_format``."""
        fields = body.get("structured_outputs")
        if self.is_vllm(url):
            if fields is None or takes_structured_outputs(self._vllm_version.get(url)):
                return body
            legacy = {key: value for key, value in body.items() if key != "structured_outputs"}
            return legacy | legacy_vllm_fields(fields)
        plain = {key: value for key, value in body.items() if key not in VLLM_FIELDS}
        if fields is not None and (form := response_format(fields)) is not None:
            plain["response_format"] = form
        return plain

    def _release(self, url: str) -> None:
        with self._lock:
            self._in_flight[url] -= 1

    # Hooks for engines that route by server (`agents.engines.fleet`): a reply's completions,
    # a server that could not be reached, an error reply that blames the server, not the request.
    def _served(self, completions: list[Completion], url: str, reply: Mapping[str, Any]) -> None: ...

    def _unreachable(self, url: str) -> None: ...

    def _retry_elsewhere(self, url: str, response: httpx.Response, body: Mapping[str, Any]) -> bool:
        return False

    def _post(self, path: str, body: dict[str, Any], key: str | None = None) -> tuple[dict[str, Any], str]:
        """POST with bounded retries; returns the JSON reply and the base URL that gave it, or
        raises `RequestFailed`. `key`: the request's routing key (see `_pick_url`)."""
        last = ""
        tried: list[str] = []
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1) * (1 + random.random() / 2))
            url = self._pick_url(key, tried)
            tried.append(url)
            try:
                response = self._clients[url].post(path, json=self._for_server(url, body))
            except httpx.TransportError as error:
                last = f"{url}{path}: {type(error).__name__}: {error}"
                self._unreachable(url)
                continue
            finally:
                self._release(url)
            if response.status_code in RETRY_STATUS or self._retry_elsewhere(url, response, body):
                last = f"{url}{path}: HTTP {response.status_code}: {response.text[:300]}"
                continue
            if response.status_code >= 400:
                raise RequestFailed(f"{url}{path}: HTTP {response.status_code}: {response.text[:300]}")
            try:
                return response.json(), url
            except ValueError:
                raise RequestFailed(f"{url}{path}: the reply is not JSON: {response.text[:300]}") from None
        raise RequestFailed(f"gave up after {self.retries + 1} attempts; last: {last}")


def _check(params: SamplingParams) -> None:
    if params.n < 1 or params.max_tokens < 1:
        raise ValueError("n and max_tokens must be at least 1")
