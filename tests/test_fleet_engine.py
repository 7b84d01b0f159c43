"""The `fleet` engine's adapter sync and fault handling against scripted vLLM-like servers
(fast; the real servers are in `test_fleet.py`). A scripted server keeps vLLM's LoRA
endpoints' request and reply shapes, and logs what it was asked, in order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from threaded_server import ThreadedServer

from agents.engine import Adapter, SamplingParams
from agents.engines.fleet import ADAPTER, SERVER, FleetEngine
from agents.engines.fleet_adapters import AdapterSyncError
from agents.models import load_tokenizer

BASE = "tiny-random"


class VLLMLike:
    """Serves `BASE` plus the adapters loaded at run time; `lies`: answers a load without loading."""

    def __init__(self, port: int = 0) -> None:
        self.models = {BASE}
        self.log: list[tuple[str, str]] = []
        self.lies = False
        app = Starlette(routes=[
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/load_lora_adapter", self.load, methods=["POST"]),
            Route("/v1/unload_lora_adapter", self.unload, methods=["POST"]),
            Route("/health", lambda request: PlainTextResponse(""), methods=["GET"]),
        ])  # fmt: skip
        self.served = ThreadedServer(app, port)
        self.url = self.served.url
        self.port = int(self.url.rsplit(":", 1)[1])

    async def completions(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.log.append(("complete", body["model"]))
        if body["model"] not in self.models:
            return JSONResponse({"error": {"message": f"The model `{body['model']}` does not exist."}}, status_code=404)
        choice = {"index": 0, "text": "", "token_ids": [5, 6], "logprobs": {"token_logprobs": [-0.1, -0.2]},
                  "finish_reason": "length", "stop_reason": None}
        return JSONResponse({"model": body["model"], "choices": [choice]})

    async def list_models(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": name} for name in sorted(self.models)]})

    async def load(self, request: Request) -> PlainTextResponse:
        body = await request.json()
        self.log.append(("load", body["lora_name"]))
        if body["lora_name"] in self.models:
            return PlainTextResponse("already loaded", status_code=400)
        if not self.lies:
            self.models.add(body["lora_name"])
        return PlainTextResponse(f"Success: LoRA adapter '{body['lora_name']}' added successfully.")

    async def unload(self, request: Request) -> PlainTextResponse:
        body = await request.json()
        self.log.append(("unload", body["lora_name"]))
        if body["lora_name"] not in self.models:
            return PlainTextResponse("not found", status_code=404)
        self.models.discard(body["lora_name"])
        return PlainTextResponse("removed")


class Published:
    """An adapter source whose every update is a new folder (what the fleet is given to load)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.version = 0

    def published_adapter(self) -> Adapter:
        self.version += 1
        folder = self.directory / f"v{self.version:06d}"
        folder.mkdir()
        return Adapter(path=str(folder), version=self.version)


@pytest.fixture()
def pair() -> Iterator[list[VLLMLike]]:
    servers = [VLLMLike(), VLLMLike()]
    yield servers
    for server in servers:
        server.served.stop()


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer(BASE)


def fleet_for(servers: list[VLLMLike], tokenizer: Any, **kwargs: Any) -> FleetEngine:
    kwargs = {"backoff": 0.01, "health_interval": 0.05, "run_name": "run", **kwargs}
    return FleetEngine(BASE, base_urls=[s.url for s in servers], tokenizer=tokenizer, **kwargs)


def test_each_update_is_loaded_everywhere_under_a_new_name_and_old_ones_unloaded(
    pair: list[VLLMLike], tokenizer: Any, tmp_path: Path
) -> None:
    fleet = fleet_for(pair, tokenizer, keep_versions=2)
    source = Published(tmp_path)
    names = [fleet.adapter_from(source).name for _ in range(3)]  # type: ignore[arg-type]
    assert names == ["run-v1", "run-v2", "run-v3"]
    for server in pair:
        assert [entry for entry in server.log if entry[0] == "load"] == [("load", name) for name in names]
        assert server.log[-1] == ("unload", "run-v1") and server.models == {BASE, "run-v2", "run-v3"}
    results = fleet.generate([[1, 2, i] for i in range(16)], SamplingParams(max_tokens=2), Adapter(name="run-v3"))
    assert {c[0].extra[ADAPTER] for c in results} == {"run-v3"}
    assert {c[0].extra[SERVER] for c in results} == set(fleet.base_urls), "16 keys reach both servers"
    fleet.close()


def test_a_load_a_server_does_not_confirm_raises(pair: list[VLLMLike], tokenizer: Any, tmp_path: Path) -> None:
    pair[1].lies = True
    fleet = fleet_for(pair, tokenizer)
    with pytest.raises(AdapterSyncError, match=f"{pair[1].url}/v1: answered the load of run-v1 but does not list it"):
        fleet.adapter_from(Published(tmp_path))  # type: ignore[arg-type]
    fleet.close()


def test_a_down_server_is_skipped_then_loaded_before_it_takes_requests(
    pair: list[VLLMLike], tokenizer: Any, tmp_path: Path
) -> None:
    fleet = fleet_for(pair, tokenizer)
    live = fleet.adapter_from(Published(tmp_path))  # type: ignore[arg-type]
    victim = pair[1]
    victim.served.stop()
    prompts = [[3, 4, i] for i in range(16)]
    results = fleet.generate(prompts, SamplingParams(max_tokens=2), live)
    assert all(c[0].ok and c[0].extra[SERVER] == fleet.base_urls[0] for c in results), "retried on the live one"
    assert fleet.router.is_down(fleet.base_urls[1])

    restarted = VLLMLike(victim.port)  # comes back empty, as a restarted vLLM does
    pair[1] = restarted
    wait_for(lambda: not fleet.router.is_down(fleet.base_urls[1]))
    assert restarted.log[0] == ("load", live.name) and live.name in restarted.models
    results = fleet.generate(prompts, SamplingParams(max_tokens=2), live)
    assert all(c[0].ok for c in results) and any(c[0].extra[SERVER] == fleet.base_urls[1] for c in results)
    assert ("complete", live.name) in restarted.log[1:]
    fleet.close()


def test_a_server_that_lost_the_adapter_between_polls_is_reloaded(pair: list[VLLMLike], tokenizer: Any, tmp_path: Path) -> None:
    fleet = fleet_for(pair, tokenizer)
    live = fleet.adapter_from(Published(tmp_path))  # type: ignore[arg-type]
    pair[1].served.stop()
    pair[1] = VLLMLike(pair[1].port)  # restarted before any request noticed
    results = fleet.generate([[7, 8, i] for i in range(16)], SamplingParams(max_tokens=2), live)
    assert all(c[0].ok and c[0].extra[ADAPTER] == live.name for c in results), "its 404s were retried elsewhere"
    wait_for(lambda: live.name in pair[1].models and not fleet.router.is_down(fleet.base_urls[1]))
    assert [e[1] for e in fleet.events] == ["down", "up"] and fleet.events[1][3] == live.name
    fleet.close()


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.02)


# -- the run plan and the on-policy check ---------------------------------------------------------


def test_the_fleet_trains_where_the_openai_engine_may_not() -> None:
    from espl.config import ConfigError, load_config
    from espl.run.plan import plan_run

    urls = '["http://127.0.0.1:8001", "http://127.0.0.1:8002"]'
    sets = ["env.name=gsm8k", f"policy.base_urls={urls}", "policy.per_server_concurrency=3", "rl.keep_adapters=4"]
    plan = plan_run(load_config("smoke", [*sets, "method=rl", "policy.engine=fleet"]))
    assert plan.engine.name == "fleet" and plan.trainer is not None and plan.precision is not None
    assert plan.engine.kwargs == {"base_urls": ["http://127.0.0.1:8001", "http://127.0.0.1:8002"],
                                  "per_server_concurrency": 3, "keep_versions": 4}
    with pytest.raises(ConfigError, match="openai engine cannot train"):
        plan_run(load_config("smoke", [*sets[:2], "method=rl", "policy.engine=openai"]))
    with pytest.raises(ConfigError, match="only read by the fleet engine"):
        plan_run(load_config("smoke", [*sets[:3], "method=evolution", "policy.engine=openai"]))
    with pytest.raises(ConfigError, match="needs at least one vLLM server"):
        plan_run(load_config("smoke", ["env.name=gsm8k", "method=rl", "policy.engine=fleet"]))


def test_a_step_refuses_turns_of_another_version_and_counts_the_current_share() -> None:
    from agents.trajectory import Trajectory, TurnRecord
    from espl.run.on_policy import StaleSamples, current_adapter_share

    def sampled_with(*names: str | None) -> Trajectory:
        trajectory = Trajectory("env", "task")
        trajectory.turns = [TurnRecord(0, 1, 0, "stop", 0.0, adapter=name) for name in names]
        return trajectory

    live = Adapter(name="run-v2")
    assert current_adapter_share([sampled_with("run-v2", "run-v2"), sampled_with("run-v2")], live) == 1.0
    assert current_adapter_share([sampled_with(None)], live) is None, "an engine that does not say is not checked"
    with pytest.raises(StaleSamples, match=r"1 of 3 turns were sampled with \['run-v1'\], not the current 'run-v2'"):
        current_adapter_share([sampled_with("run-v2", "run-v1"), sampled_with("run-v2")], live)


@pytest.mark.slow
def test_the_runs_of_a_suite_on_one_fleet_load_and_unload_only_their_own_names(tmp_path: Path) -> None:
    """Each run's versions are `<run directory>-<tag>-v<k>` (`adapter_prefix`): the runs of a
    suite sharing servers, and a run started again in the same directory, never share a name."""
    from espl.run.builder import adapter_prefix, build_policy
    from espl.run.plan import plan_run
    from espl.run.run_dir import RunDir
    from espl.suite import expand, on_fleet, parse_suite

    server = VLLMLike()
    suite = parse_suite({"name": "shared", "preset": "smoke", "envs": ["gsm8k"], "methods": ["rl"], "seeds": [0, 1],
                         "overrides": {"policy.engine": "fleet", "policy.model": BASE, "rl.keep_adapters": 1}})
    specs = expand(on_fleet(suite, [server.url]), tmp_path)
    policies = []
    try:
        def start(spec):
            policy = build_policy(plan_run(spec.config), adapter_dir=str(spec.run_dir / "adapters"),
                                  run_name=adapter_prefix(RunDir(spec.run_dir)))  # loads its v1
            policies.append(policy)
            return policy

        first, second = start(specs[0]), start(specs[1])
        first.after_update(), second.after_update()  # each loads its v2 and unloads its v1
        again = start(specs[0])  # the first run's directory, started again: its count restarts
        loads = [name for kind, name in server.log if kind == "load"]
        unloads = [name for kind, name in server.log if kind == "unload"]
        assert len(loads) == len(set(loads)) == 5, loads
        by_run = [[name for name in loads if name.startswith(spec.label + "-")] for spec in specs]
        assert [len(names) for names in by_run] == [3, 2], loads
        assert by_run[0][0].endswith("-v1") and by_run[0][2].endswith("-v1"), "a fresh count, under a new tag"
        assert sorted(unloads) == sorted([by_run[0][0], by_run[1][0]]), "each run unloads only its own old version"
        assert {again.adapter.name, second.adapter.name} <= server.models, "the live versions stay loaded"
    finally:
        for policy in policies:
            policy.engine.close()
        server.served.stop()
