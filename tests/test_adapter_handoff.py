"""An update with a real LoRA trainer on the tiny random model: an engine that sleeps gives its
memory up for exactly the trainer's step, and only the newest published adapter folders stay.

The engine here is scripted (it records calls and takes the trainer's published folders, as
vLLM does); the real vLLM side of sleep and of the settings is in test_vllm_settings.py and
test_engine_vllm.py."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest

from agents import models
from agents.engine import Adapter, AdapterSource, Sleeper
from agents.trajectory import Trajectory
from espl.rl.settings import LoraSettings, TrainerConfig
from espl.rl.trainer import LoRATrainer
from espl.run.context import Policy

SMALL_LORA = LoraSettings(rank=4, alpha=8)


@pytest.fixture(scope="module")
def base_model() -> Any:
    return models.load_model("tiny-random")


def batch(seed: int) -> tuple[list[Trajectory], list[tuple[str, str]]]:
    """Two groups of four synthetic episodes with mixed rewards (so every step trains)."""
    rng = random.Random(seed)
    trajectories, keys = [], []
    for i in range(8):
        t = Trajectory("synthetic", f"task{i // 4}", "p0", i % 4)
        t.append_prompt([rng.randrange(100, 5000) for _ in range(6)])
        sampled = [rng.randrange(100, 5000) for _ in range(5)]
        t.append_sampled(sampled, [-rng.random() * 3 for _ in sampled])
        t.reward = float(i % 2)
        trajectories.append(t)
        keys.append(("p0", t.task_id))
    return trajectories, keys


class ScriptedDiskEngine:
    """Loads adapters from the trainer's published folders and, if built to, sleeps: every call
    goes into `log`, which the trainer's steps write to as well."""

    name = "scripted"

    def __init__(self, log: list[str], *, can_sleep: bool) -> None:
        self.log = log
        self.can_sleep = can_sleep
        self.awake = True

    @property
    def tokenizer(self) -> Any:
        return None

    def sleep(self) -> None:
        self.log.append("sleep")
        self.awake = False

    def wake(self) -> None:
        self.log.append("wake")
        self.awake = True

    def adapter_from(self, source: AdapterSource) -> Adapter:
        assert self.awake, "the adapter was handed over to a sleeping engine"
        adapter = source.published_adapter()
        self.log.append(f"serve v{adapter.version}")
        return adapter

    def generate(self, prompts: Any, params: Any, adapter: Any = None) -> Any:
        raise AssertionError("not called here")

    def release_turns(self) -> None:
        pass

    def close(self) -> None:
        pass


def trainer_with_log(base_model: Any, folder: Path, log: list[str], keep: int, fail_at: int | None = None) -> LoRATrainer:
    trainer = LoRATrainer(copy.deepcopy(base_model), TrainerConfig(lora=SMALL_LORA, lr=1e-3, keep_adapters=keep),
                          publish_dir=str(folder))
    step = trainer.step

    def logged_step(trajectories: Any, keys: Any) -> Any:
        log.append("step")
        if fail_at is not None and trainer.step_count + 1 == fail_at:
            raise RuntimeError("out of memory")
        return step(trajectories, keys)

    trainer.step = logged_step  # type: ignore[method-assign]
    return trainer


def test_a_sleeping_engine_frees_its_memory_for_exactly_the_trainer_step(base_model: Any, tmp_path: Path) -> None:
    log: list[str] = []
    engine = ScriptedDiskEngine(log, can_sleep=True)
    assert isinstance(engine, Sleeper)
    policy = Policy(engine, trainer_with_log(base_model, tmp_path / "adapters", log, keep=3))
    policy.after_update()
    for seed in range(2):
        stats = policy.update(*batch(seed))
        assert stats["sequences"] > 0
    assert log == ["serve v0", "sleep", "step", "wake", "serve v1", "sleep", "step", "wake", "serve v2"]
    assert policy.adapter is not None and policy.adapter.version == 2


def test_a_failed_step_still_wakes_the_engine(base_model: Any, tmp_path: Path) -> None:
    log: list[str] = []
    engine = ScriptedDiskEngine(log, can_sleep=True)
    policy = Policy(engine, trainer_with_log(base_model, tmp_path / "adapters", log, keep=3, fail_at=1))
    with pytest.raises(RuntimeError, match="out of memory"):
        policy.update(*batch(0))
    assert log == ["sleep", "step", "wake"] and engine.awake


def test_an_engine_built_without_sleep_mode_is_not_asked_to_sleep(base_model: Any, tmp_path: Path) -> None:
    log: list[str] = []
    policy = Policy(ScriptedDiskEngine(log, can_sleep=False), trainer_with_log(base_model, tmp_path / "adapters", log, keep=3))
    policy.update(*batch(0))
    assert log == ["step", "serve v1"]


def versions(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_only_the_newest_published_adapters_stay_and_nothing_else_is_touched(base_model: Any, tmp_path: Path) -> None:
    folder = tmp_path / "adapters"
    folder.mkdir()
    (folder / "v999999").mkdir()  # a version folder this trainer did not write
    (folder / "v999999" / "adapter_config.json").write_text("{}")
    (folder / "notes.txt").write_text("kept")
    log: list[str] = []
    policy = Policy(ScriptedDiskEngine(log, can_sleep=False), trainer_with_log(base_model, folder, log, keep=2))
    policy.after_update()
    assert versions(folder) == ["notes.txt", "v000000", "v999999"]
    policy.update(*batch(0))
    assert versions(folder) == ["notes.txt", "v000000", "v000001", "v999999"]
    for seed in (1, 2, 3):
        policy.update(*batch(seed))
        served = Path(policy.adapter.path)  # type: ignore[union-attr, arg-type]
        assert served.name == f"v{policy.adapter.version:06d}" and (served / "adapter_config.json").exists()  # type: ignore[union-attr]
    assert versions(folder) == ["notes.txt", "v000003", "v000004", "v999999"]
    assert (folder / "notes.txt").read_text() == "kept"


def test_keep_zero_keeps_every_published_adapter(base_model: Any, tmp_path: Path) -> None:
    folder = tmp_path / "adapters"
    trainer = LoRATrainer(copy.deepcopy(base_model), TrainerConfig(lora=SMALL_LORA, keep_adapters=0), publish_dir=str(folder))
    for seed in range(3):
        trainer.step(*batch(seed))
        trainer.published_adapter()
    assert versions(folder) == ["v000001", "v000002", "v000003"]


def test_keep_one_removes_the_previous_version_once_the_new_one_is_written(base_model: Any, tmp_path: Path) -> None:
    folder = tmp_path / "adapters"
    trainer = LoRATrainer(copy.deepcopy(base_model), TrainerConfig(lora=SMALL_LORA, keep_adapters=1), publish_dir=str(folder))
    first = trainer.published_adapter()
    trainer.step(*batch(0))
    second = trainer.published_adapter()
    assert versions(folder) == ["v000001"] and second.path is not None and Path(second.path).is_dir()
    assert first.path is not None and not Path(first.path).exists()


def test_a_negative_keep_is_refused() -> None:
    with pytest.raises(ValueError, match="keep_adapters must be at least 0"):
        LoRATrainer(None, TrainerConfig(keep_adapters=-1))  # refused before the model is touched
