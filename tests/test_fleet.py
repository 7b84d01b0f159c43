"""The `fleet` engine against two real vLLM CPU servers started by `serve-vllm` (slow).

What is compared: greedy ids from the fleet under a version with those of a cold server
started with that version preloaded (`--lora-modules`): the same vLLM build, dtype and core
count, so the same numeric path; never with another engine. Both servers are started once for
the module and stopped at teardown; a comparison's cold server stands in for one of them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fleet_servers import MODEL, AdapterVersions, TwoServers, ids, token_prompts, two_servers
from vllm_servers import kill

from agents.engine import SamplingParams
from agents.engines.fleet import ADAPTER, SERVER, FleetEngine
from agents.engines.openai import OpenAIEngine
from agents.models import load_tokenizer

pytestmark = [pytest.mark.vllm, pytest.mark.extended]
"""Extended tier: four vLLM servers of the 135M model come and go (two, a killed one's restart, a
cold one), too long for `make test` on 2 cores; the routing, the adapter sync and the fault
handling run in `make test` against scripted servers (`test_fleet_routing.py`,
`test_fleet_engine.py`)."""
GREEDY = SamplingParams(temperature=0.0, max_tokens=8)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoServers]:
    pytest.importorskip("vllm")
    with two_servers(tmp_path_factory.mktemp("fleet-servers")) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer(MODEL)


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> AdapterVersions:
    return AdapterVersions(tmp_path_factory.mktemp("published"))


def models_on(url: str) -> set[str]:
    return {card["id"] for card in httpx.get(f"{url}/v1/models", timeout=30).json()["data"]}


def test_each_version_is_served_on_every_server_as_a_cold_server_serves_it(
    servers: TwoServers, versions: AdapterVersions, tokenizer: Any
) -> None:
    fleet = FleetEngine(MODEL, base_urls=servers.urls, per_server_concurrency=4, tokenizer=tokenizer)
    prompts = token_prompts(tokenizer, 32)
    base = fleet.generate(prompts, GREEDY)
    under: dict[str, list[list[int]]] = {}
    adapters = []
    for _ in range(2):  # v, then v+1 over a prefix cache that holds these prompts under v
        adapter = fleet.adapter_from(versions)
        adapters.append(adapter)
        assert all(adapter.name in models_on(url) for url in servers.urls)
        before = Counter(fleet.served_by)
        results = fleet.generate(prompts, GREEDY, adapter)
        assert all(c.ok for completions in results for c in completions)
        served = Counter(fleet.served_by)
        served.subtract(before)
        by_server = {url: {name for (u, name), n in served.items() if u == url and n} for url in fleet.base_urls}
        assert by_server == {url: {adapter.name} for url in fleet.base_urls}, "every request, on both servers, names it"
        assert sum(served.values()) == 32 and {c[0].extra[ADAPTER] for c in results} == {adapter.name}
        under[adapter.name] = ids(results)
    v, w = adapters
    assert v.name != w.name and fleet.sync.loaded(fleet.base_urls[0]) == [v.name, w.name]
    differ = lambda a, b: sum(x != y for x, y in zip(a, b))  # noqa: E731
    assert differ(ids(base), under[v.name]) >= 16 and differ(under[v.name], under[w.name]) >= 16, "the adapters matter"
    fleet.close()

    servers.stop(1)  # a cold server with both versions preloaded takes its place (and stays a member)
    servers.launch(1, "--lora-modules", f"{v.name}={v.path}", f"{w.name}={w.path}")
    servers.wait(1)
    cold = OpenAIEngine(MODEL, base_urls=[servers.url(1)], tokenizer=tokenizer, max_concurrency=4)
    for adapter in (v, w):
        assert ids(cold.generate(prompts, GREEDY, adapter)) == under[adapter.name], adapter.name
    cold.close()


def test_a_group_stays_on_one_server_and_its_samples_differ(
    servers: TwoServers, versions: AdapterVersions, tokenizer: Any
) -> None:
    fleet = FleetEngine(MODEL, base_urls=servers.urls, per_server_concurrency=16, tokenizer=tokenizer)
    adapter = fleet.adapter_from(versions)
    prompt = token_prompts(tokenizer, 1, seed=1)[0]
    group = fleet.generate([prompt] * 16, SamplingParams(temperature=1.0, max_tokens=12, seed=3), adapter)
    samples = [tuple(c[0].token_ids) for c in group]
    assert all(c[0].ok for c in group) and len(set(samples)) >= 15, f"{len(set(samples))} distinct of 16"
    (server,) = {c[0].extra[SERVER] for c in group}
    # Turn 2 of each episode: its prompt, its answer, an env reply; the same server again.
    turns = [prompt + list(sample) + [198, 4093, 198] for sample in samples]
    second = fleet.generate(turns, SamplingParams(temperature=1.0, max_tokens=4, seed=4), adapter)
    assert {c[0].extra[SERVER] for c in second} == {server}
    assert {c[0].extra[ADAPTER] for c in group + second} == {adapter.name}
    fleet.close()


def test_a_server_killed_mid_iteration_loses_nothing_and_is_reloaded_before_use(
    servers: TwoServers, versions: AdapterVersions, tokenizer: Any
) -> None:
    fleet = FleetEngine(MODEL, base_urls=servers.urls, per_server_concurrency=4, tokenizer=tokenizer,
                        health_interval=0.5, backoff=0.2)
    first, _, live = (fleet.adapter_from(versions) for _ in range(3))
    victim = fleet.base_urls[1]
    assert fleet.sync.loaded(victim)[-2:] == fleet.sync.loaded(fleet.base_urls[0]) and live.name in models_on(servers.url(1))
    assert all(first.name not in models_on(url) for url in servers.urls), "older than the newest 2: unloaded"

    prompts = token_prompts(tokenizer, 48, seed=2)
    params = SamplingParams(temperature=1.0, max_tokens=48, seed=5)
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.extend(fleet.generate(prompts, params, live)))
    worker.start()
    deadline = time.monotonic() + 120
    while fleet.router.sent[victim] < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    kill(servers.processes[1])  # a crash, mid-iteration
    worker.join(timeout=600)
    assert len(results) == 48 and all(c[0].ok for c in results), [c[0].error for c in results if not c[0].ok][:3]
    assert {c[0].extra[ADAPTER] for c in results} == {live.name}
    assert fleet.router.is_down(victim) and any(e[1:3] == ("down", victim) for e in fleet.events)
    assert sum(fleet.router.sent.values()) > 48, "the killed server's requests were sent again"

    servers.launch(1)
    healthy_after = servers.wait(1)
    healthy_at = time.monotonic()
    while not any(e[1:3] == ("up", victim) for e in fleet.events) and time.monotonic() < healthy_at + 60:
        time.sleep(0.1)
    up = [e for e in fleet.events if e[1:3] == ("up", victim)]
    assert up, f"not back 60 s after its health check passed ({healthy_after:.0f} s to start): {fleet.last_revive_error}"
    assert up[0][3] == live.name and live.name in models_on(servers.url(1)), "reloaded with the live version"
    assert up[0][0] - healthy_at < 30
    again = fleet.generate(token_prompts(tokenizer, 32, seed=3), params, live)
    assert all(c[0].ok for c in again) and {c[0].extra[ADAPTER] for c in again} == {live.name}
    assert any(c[0].extra[SERVER] == victim for c in again), "it takes requests again"
    assert sum(e[1:3] == ("down", victim) for e in fleet.events) == 1, "it never answered without the adapter"
    fleet.close()


def test_a_sync_that_a_server_does_not_confirm_raises(servers: TwoServers, tmp_path: Path, tokenizer: Any) -> None:
    """A folder the servers cannot load is an error naming the server, not a quiet base-model run."""
    from agents.engine import Adapter
    from agents.engines.fleet_adapters import AdapterSyncError

    class Broken:
        def published_adapter(self) -> Adapter:
            (tmp_path / "broken").mkdir(exist_ok=True)
            return Adapter(path=str(tmp_path / "broken"), version=1)

    fleet = FleetEngine(MODEL, base_urls=servers.urls, tokenizer=tokenizer)
    with pytest.raises(AdapterSyncError, match=servers.url(0)):
        fleet.adapter_from(Broken())  # type: ignore[arg-type]
    fleet.close()
