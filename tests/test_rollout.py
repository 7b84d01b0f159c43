"""Rollout driver: token-in/token-out trajectories, loss masks, batching, and per-episode errors."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from agents import chat
from agents.engine import Adapter, Completion, SamplingParams
from agents.engines.hf import HFEngine
from agents.rollout import Episode, RolloutConfig, RolloutDriver
from envs import registry
from envs.retrieval.local import ensure_local_server


class Recording:
    """Wraps an engine and keeps every batch of prompts and completions it served."""

    name = "recording"

    def __init__(self, engine):
        self.engine = engine
        self.calls: list[tuple[list[list[int]], list[list[Completion]]]] = []

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def generate(self, prompts, params, adapter=None):
        out = self.engine.generate(prompts, params, adapter)
        self.calls.append(([list(p) for p in prompts], out))
        return out

    def close(self) -> None:
        pass
    def release_turns(self) -> None:
        pass



class Scripted:
    """Replies with fixed texts per turn (tokenized), for multi-turn protocol tests."""

    name = "scripted"

    def __init__(self, tokenizer, turns: Sequence[str], fail_prompt: int | None = None):
        self._tokenizer, self.turns, self.fail_prompt = tokenizer, list(turns), fail_prompt
        self.turn = 0
        self.batch_sizes: list[int] = []

    @property
    def tokenizer(self):
        return self._tokenizer

    def generate(self, prompts, params, adapter=None):
        text = self.turns[min(self.turn, len(self.turns) - 1)]
        self.turn += 1
        self.batch_sizes.append(len(prompts))
        ids = self._tokenizer.encode(text, add_special_tokens=False)
        out = []
        for i, _ in enumerate(prompts):
            if self.fail_prompt == i:
                out.append([Completion.failed("injected failure")])
            else:
                out.append([Completion(list(ids), [-0.5] * len(ids), text, "stop")])
        return out

    def close(self) -> None:
        pass
    def release_turns(self) -> None:
        pass



@pytest.fixture(scope="module")
def engine():
    return HFEngine("tiny-random")


def test_math_rollout_ids_are_prompt_plus_exactly_the_sampled_ids(engine) -> None:
    recorder = Recording(engine)
    env_factory = lambda: registry.make("gsm8k", split="test")  # noqa: E731
    driver = RolloutDriver(recorder, env_factory, RolloutConfig(sampling=SamplingParams(max_tokens=24)))
    tasks = driver.envs(1)[0].tasks[:3]
    episodes = [Episode(t, "G0: be careful.", "p0", s) for t in tasks for s in range(2)]
    trajectories = driver.run(episodes, seed=7)
    assert len(recorder.calls) == 1  # single-turn env: one engine call for the whole batch
    prompts, outputs = recorder.calls[0]
    for trajectory, prompt, (completion,) in zip(trajectories, prompts, outputs):
        assert trajectory.token_ids == prompt + completion.token_ids
        assert trajectory.loss_mask == [0] * len(prompt) + [1] * len(completion.token_ids)
        assert trajectory.logprobs[len(prompt) :] == pytest.approx(completion.logprobs)
        assert trajectory.prompt_length == len(prompt) and trajectory.done
        assert trajectory.reward in (0.0, 1.0) and trajectory.messages[-1]["role"] == "assistant"
        assert prompt == chat.render_prompt_ids(engine.tokenizer, trajectory.messages[:1], "G0: be careful.")


def test_multi_turn_search_rollout_through_a_real_server(engine) -> None:
    url = ensure_local_server()
    env_factory = lambda: registry.make("hotpotqa", split="test", retriever_url=url, tokenizer=engine.tokenizer)  # noqa: E731
    task = env_factory().tasks[0]
    title = task.meta["supporting_titles"][0]
    scripted = Scripted(engine.tokenizer, [f"<think>look it up</think><search>{title}</search>", f"<answer>{task.answers[0]}</answer>"])
    driver = RolloutDriver(scripted, env_factory, RolloutConfig(sampling=SamplingParams(max_tokens=64)))
    (trajectory,) = driver.run([Episode(task, None, "p0", 0)])
    assert trajectory.reward == 1.0 and len(trajectory.turns) == 2
    first, second = trajectory.turns
    ids, mask = trajectory.token_ids, trajectory.loss_mask
    sampled_first = ids[first.start : first.start + first.n_sampled]
    assert engine.tokenizer.decode(sampled_first).endswith("</search>")
    env_ids = ids[first.start + first.n_sampled : second.start]
    assert len(env_ids) == first.n_env > 0 and not any(mask[first.start + first.n_sampled : second.start])
    information = engine.tokenizer.decode(env_ids)
    assert "<information>" in information and f"(Title: {title})" in information
    assert sum(mask) == first.n_sampled + second.n_sampled
    # The env reply ids are exactly what the chat template adds for that message, no re-tokenization.
    so_far = trajectory.messages[:2]
    expected = chat.continuation_ids(engine.tokenizer, so_far, [trajectory.messages[2]], sampled_ids=sampled_first)
    assert env_ids == expected


def test_all_searches_of_a_turn_go_in_one_engine_call_and_one_request(engine) -> None:
    url = ensure_local_server()
    env_factory = lambda: registry.make("hotpotqa", split="test", retriever_url=url)  # noqa: E731
    tasks = env_factory().tasks[:5]
    scripted = Scripted(engine.tokenizer, ["<search>capital city</search>", "<answer>x</answer>"])
    driver = RolloutDriver(scripted, env_factory, RolloutConfig(sampling=SamplingParams(max_tokens=32)))
    trajectories = driver.run([Episode(t) for t in tasks])
    assert scripted.batch_sizes == [5, 5]
    assert all(t.info["n_searches"] == 1 for t in trajectories)


def test_an_engine_error_ends_only_its_own_episode(engine) -> None:
    env_factory = lambda: registry.make("gsm8k", split="test")  # noqa: E731
    scripted = Scripted(engine.tokenizer, ["\\boxed{3}"], fail_prompt=1)
    driver = RolloutDriver(scripted, env_factory, RolloutConfig(sampling=SamplingParams(max_tokens=16)))
    trajectories = driver.run([Episode(t) for t in driver.envs(1)[0].tasks[:3]])
    assert trajectories[1].error == "injected failure" and trajectories[1].n_sampled == 0
    assert trajectories[0].error is None and trajectories[2].error is None
    assert trajectories[0].done and trajectories[0].n_sampled > 0


def test_adapter_is_passed_to_every_engine_call(engine) -> None:
    seen = []

    class Spy(Scripted):
        def generate(self, prompts, params, adapter=None):
            seen.append(adapter)
            return super().generate(prompts, params, adapter)

    env_factory = lambda: registry.make("gsm8k", split="test")  # noqa: E731
    driver = RolloutDriver(Spy(engine.tokenizer, ["\\boxed{1}"]), env_factory)
    adapter = Adapter(name="policy", version=3)
    driver.run([Episode(driver.envs(1)[0].tasks[0])], adapter)
    assert seen == [adapter]


def test_on_episode_reports_each_episode_once_as_it_ends(engine) -> None:
    url = ensure_local_server()
    env_factory = lambda: registry.make("hotpotqa", split="test", retriever_url=url)  # noqa: E731
    tasks = env_factory().tasks[:5]
    # Position 1 of each turn's batch fails: episode 1 ends in turn 0, episode 2 in turn 1 (with the answers).
    scripted = Scripted(engine.tokenizer, ["<search>capital city</search>", "<answer>x</answer>"], fail_prompt=1)
    driver = RolloutDriver(scripted, env_factory, RolloutConfig(sampling=SamplingParams(max_tokens=32)))
    ended = []
    trajectories = driver.run([Episode(t, sample_index=i) for i, t in enumerate(tasks)], on_episode=ended.append)
    assert [t.sample_index for t in ended] == [1, 0, 2, 3, 4]
    assert all(t.done for t in ended) and {id(t) for t in ended} == {id(t) for t in trajectories}


def test_on_episode_reports_episodes_cut_off_by_the_turn_cap(engine) -> None:
    url = ensure_local_server()
    env_factory = lambda: registry.make("hotpotqa", split="test", retriever_url=url)  # noqa: E731
    tasks = env_factory().tasks[:3]
    scripted = Scripted(engine.tokenizer, ["<search>capital city</search>"])
    config = RolloutConfig(sampling=SamplingParams(max_tokens=32), max_turns=1)
    ended = []
    trajectories = RolloutDriver(scripted, env_factory, config).run([Episode(t) for t in tasks], on_episode=ended.append)
    assert ended == trajectories and all(t.truncated for t in ended)
