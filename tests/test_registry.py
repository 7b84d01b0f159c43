"""Every registered env passes Gymnasium's checker; plugins and the README example work."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

from envs import registry
from envs.base import ChatSpace, PrintableText, Task, TextEnv

ROOT = Path(__file__).resolve().parents[1]


def _all_ids() -> list[str]:
    return [info.id for info in registry.list_envs()]


@pytest.mark.parametrize("env_id", _all_ids())
def test_check_env_passes_for_every_registered_env(env_id: str) -> None:
    env = registry.make(env_id, split="test")
    with warnings.catch_warnings():
        # The checker warns rather than fails on an observation outside the space: make it fail.
        warnings.filterwarnings("error", message=".*(not within|not contained|observation space).*")
        check_env(env, skip_render_check=False)
    env.close()


@pytest.mark.parametrize("env_id", _all_ids())
def test_every_env_has_train_and_test_tasks(env_id: str) -> None:
    for split in ("train", "test"):
        env = registry.make(env_id, split=split)
        assert env.tasks, f"{env_id} {split} split is empty"
        assert len({t.id for t in env.tasks}) == len(env.tasks), "task ids must be unique within a split"


def test_aliases_resolve_case_insensitively() -> None:
    for info in registry.list_envs():
        assert registry.resolve(info.alias.upper()) == info.id
    with pytest.raises(KeyError, match="unknown environment"):
        registry.resolve("no-such-env")


def test_spaces_accept_unicode_and_reject_control_chars() -> None:
    text = PrintableText()
    assert text.contains("Zürich — \\frac{1}{2}\n\t日本")
    assert not text.contains("bad \x00 byte")
    chat = ChatSpace()
    assert chat.contains([{"role": "user", "content": "hi"}])
    assert not chat.contains([{"role": "robot", "content": "hi"}])
    assert not chat.contains([])
    assert chat.contains(chat.sample())


def test_readme_example_runs_as_written() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"### Adding a new environment.*?```python\n(.*?)```", readme, re.S)
    assert block, "README lost its 'Adding a new environment' example"
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    env = registry.make("reverse-word")
    assert isinstance(env, TextEnv) and len(env.tasks) == 2
    check_env(env)
    assert gym.make("mypackage/ReverseWord-v0").unwrapped.tasks[0].id == "verifier"


def test_entry_point_plugins_are_discovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "plugin_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "envs.py").write_text(
        textwrap.dedent(
            '''
            from envs import Task, TextEnv, register

            class EchoEnv(TextEnv):
                """Repeat the word."""
                def __init__(self, split="test", render_mode=None):
                    super().__init__([Task("a", "hello", ("hello",))], split=split, render_mode=render_mode)
                def initial_messages(self, task):
                    return [{"role": "user", "content": task.question}]
                def respond(self, action):
                    return float(action == "hello"), True, None, {}

            register("plugin/Echo-v0", EchoEnv, alias="echo-plugin", kind="toy")
            '''
        )
    )
    dist = tmp_path / "plugin_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\necho = plugin_pkg.envs\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_loaded", False)
    registry.load_all()
    env = registry.make("echo-plugin")
    assert env.step.__self__ is env
    env.reset()
    assert env.step("hello")[1] == 1.0
    sys.modules.pop("plugin_pkg.envs", None)


def test_step_before_reset_is_an_error() -> None:
    env = registry.make(_all_ids()[0])
    with pytest.raises(RuntimeError, match="before reset"):
        env.step("x")


def test_task_round_trips_through_dict() -> None:
    task = Task("t1", "q?", ("a", "b"), {"level": 3})
    assert Task.from_dict(task.to_dict()) == task


def _fresh_python(code: str, *paths: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, paths), str(ROOT)])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def test_gymnasium_make_works_right_after_import_envs() -> None:
    result = _fresh_python(
        "import sys, envs, gymnasium\n"
        "env = gymnasium.make('espl/GSM8K-v0', split='test').unwrapped\n"
        "print(type(env).__name__, len(env.tasks) > 0, 'torch' in sys.modules)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["MathEnv", "True", "False"]


def test_gymnasium_make_finds_plugin_envs_right_after_import_envs(tmp_path: Path) -> None:
    package = tmp_path / "fresh_plugin_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "envs.py").write_text(textwrap.dedent(
        '''
        from envs import Task, TextEnv, register

        class ShoutEnv(TextEnv):
            """Reply in capitals."""
            def __init__(self, split="test", render_mode=None):
                super().__init__([Task("a", "hi", ("HI",))], split=split, render_mode=render_mode)
            def initial_messages(self, task):
                return [{"role": "user", "content": task.question}]
            def respond(self, action):
                return float(action == "HI"), True, None, {}

        register("fresh/Shout-v0", ShoutEnv, alias="shout-plugin", kind="toy")
        '''
    ))
    dist = tmp_path / "fresh_plugin_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fresh-plugin-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\nshout = fresh_plugin_pkg.envs\n")
    result = _fresh_python(
        "import envs, gymnasium\n"
        "env = gymnasium.make('fresh/Shout-v0').unwrapped\n"
        "env.reset()\n"
        "print(env.step('HI')[1])",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1.0"
