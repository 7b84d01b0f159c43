"""The rollout driver: many episodes at once with one engine, token-in/token-out.

Turns are scheduled one of two ways, with the same trajectories for the same seeds:

- per turn (in-process engines, `hf` and `vllm`): each turn, every active episode's token
  ids go to the engine in one `generate` call, and every env of a class is stepped together
  through `TextEnv.step_batch` (so a search env sends all of a turn's queries in one request);
- per episode (engines whose servers take each request on its own, `RequestEngine`: `openai`,
  `fleet`): an episode's next turn is sent as soon as its own reply is in and its env has
  stepped, so a fast episode runs on while a slow one is still generating. The envs of the
  replies that came in together are stepped together. Request `i` of the batch is seeded
  from the turn's seed and `i` (its episode's position), never from what else is in flight,
  so both schedules send every request with the same seed.

A trajectory is built by concatenation only: the prompt's ids, then per turn the ids the
engine sampled and the ids of the env's reply as the chat template renders it. The
transcript is never re-tokenized.
"""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, Future, wait
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agents import chat
from agents.engine import Adapter, Completion, Constraint, Engine, RequestEngine, SamplingParams
from agents.trajectory import Trajectory, TurnRecord
from envs.base import Task, TextEnv

EnvFactory = Callable[[], TextEnv]
EpisodeCallback = Callable[[Trajectory], None]


@dataclass(frozen=True)
class Episode:
    """One episode to run: a task, the system prompt to run it under, and which sample it is."""

    task: Task
    system_prompt: str | None = None
    prompt_id: str | None = None
    sample_index: int = 0


@dataclass
class RolloutConfig:
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(max_tokens=256))
    placement: chat.Placement = "system"
    max_turns: int | None = None
    """Cap on agent turns; None uses the env's own `max_turns`."""
    max_total_tokens: int = 4096
    """An episode whose ids would exceed this is stopped and marked truncated."""
    constrain_actions: bool = False
    """Decode each turn against the env's `action_regex` (on engines that enforce constraints)."""
    per_episode: bool = True
    """On a `RequestEngine`, send each episode's next turn as soon as its own reply is in;
    False waits for the whole turn (the same requests and seeds, so the same trajectories)."""


class RolloutDriver:
    """Runs batches of episodes of one environment with one engine."""

    def __init__(self, engine: Engine, env_factory: EnvFactory, config: RolloutConfig | None = None):
        self.engine = engine
        self.env_factory = env_factory
        self.config = config or RolloutConfig()
        self._pool: list[TextEnv] = []
        chat.check_prefix_stable(engine.tokenizer)

    def envs(self, n: int) -> list[TextEnv]:
        """Reusable env instances: building one per episode would repeat dataset loading."""
        while len(self._pool) < n:
            self._pool.append(self.env_factory())
        return self._pool[:n]

    def run(
        self,
        episodes: Sequence[Episode],
        adapter: Adapter | None = None,
        *,
        seed: int | None = None,
        on_episode: EpisodeCallback | None = None,
    ) -> list[Trajectory]:
        """Run every episode to its end and return the trajectories in episode order.

        `on_episode` is called once per episode with its finished trajectory, as it ends (a
        single-turn batch ends all at once; multi-turn episodes end turn by turn), so progress
        can be shown per episode rather than per batch.
        """
        ended = on_episode or (lambda trajectory: None)
        envs = self.envs(len(episodes))
        trajectories = [self._start(env, episode) for env, episode in zip(envs, episodes)]
        max_turns = self.config.max_turns or max(env.max_turns for env in envs) if envs else 0
        if max_turns > 0:
            if isinstance(self.engine, RequestEngine) and self.config.per_episode:
                self._run_per_episode(envs, trajectories, adapter, seed, max_turns, ended)
            else:
                self._run_per_turn(envs, trajectories, adapter, seed, max_turns, ended)
        cut_off = [trajectory for trajectory in trajectories if not trajectory.done]
        for trajectory in cut_off:  # out of turns without an ending
            trajectory.done = trajectory.truncated = True
        self.engine.release_turns()  # every conversation has ended: the engine need not keep them
        for trajectory in cut_off:
            ended(trajectory)
        return trajectories

    def _start(self, env: TextEnv, episode: Episode) -> Trajectory:
        observation, _ = env.reset(options={"task": episode.task})
        env_id = env.spec.id if env.spec is not None else type(env).__name__
        trajectory = Trajectory(
            env_id, episode.task.id, episode.prompt_id, episode.sample_index, system_prompt=episode.system_prompt
        )
        trajectory.append_prompt(
            chat.render_prompt_ids(
                self.engine.tokenizer, observation, system_prompt=episode.system_prompt, placement=self.config.placement
            )
        )
        trajectory.messages = observation
        return trajectory

    def _run_per_turn(
        self, envs: list[TextEnv], trajectories: list[Trajectory], adapter: Adapter | None, seed: int | None,
        max_turns: int, ended: EpisodeCallback,
    ) -> None:
        """Every active episode's turn in one batch; the next turn once all have stepped."""
        active = list(range(len(trajectories)))
        for turn in range(max_turns):
            if not active:
                break
            params = self._params_for(envs[active[0]], seed, turn)
            started = time.perf_counter()
            outputs = self._generate(active, [trajectories[i].token_ids for i in active], params, adapter)
            elapsed = time.perf_counter() - started
            sampled = [(i, completions[0], elapsed / len(active)) for i, completions in zip(active, outputs)]
            self._step(envs, trajectories, self._record_sampled(trajectories, sampled), max_turns)
            for i in active:
                if trajectories[i].done:
                    ended(trajectories[i])
            active = [i for i in active if not trajectories[i].done]

    def _run_per_episode(
        self, envs: list[TextEnv], trajectories: list[Trajectory], adapter: Adapter | None, seed: int | None,
        max_turns: int, ended: EpisodeCallback,
    ) -> None:
        """Each episode's next request goes out as soon as its own reply is in and its env has
        stepped (the replies that came in together step together, in episode order)."""
        engine = self.engine
        assert isinstance(engine, RequestEngine)
        in_flight: dict[Future[list[Completion]], tuple[int, float]] = {}

        def send(i: int) -> None:
            params = self._params_for(envs[i], seed, len(trajectories[i].turns))
            try:
                future = engine.submit(trajectories[i].token_ids, params, adapter, row=i)
            except Exception as exc:  # a request that cannot be sent ends its episode with a record
                future = Future()
                future.set_result([Completion.failed(f"{type(exc).__name__}: {exc}")])
            in_flight[future] = (i, time.perf_counter())

        for i in range(len(trajectories)):
            send(i)
        while in_flight:
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            sampled = []
            for future in done:
                i, sent = in_flight.pop(future)
                sampled.append((i, _first(future), time.perf_counter() - sent))
            sampled.sort(key=lambda item: item[0])
            self._step(envs, trajectories, self._record_sampled(trajectories, sampled), max_turns)
            for i, _, _ in sampled:
                if trajectories[i].done:
                    ended(trajectories[i])
                elif len(trajectories[i].turns) < max_turns:
                    send(i)

    # -- internals -----------------------------------------------------------------------
    def _params_for(self, env: TextEnv, seed: int | None, turn: int) -> SamplingParams:
        base = self.config.sampling
        stop = tuple(dict.fromkeys((*base.stop, *env.stop_strings)))
        turn_seed = None if seed is None and base.seed is None else (seed or base.seed or 0) * 1000 + turn
        constraint = base.constraint
        if self.config.constrain_actions and env.action_regex is not None:
            constraint = Constraint(regex=env.action_regex)
        return replace(base, stop=stop, n=1, seed=turn_seed, constraint=constraint)

    def _generate(self, rows: list[int], prompts: list[list[int]], params: SamplingParams, adapter: Adapter | None):
        """A turn's completions; a `RequestEngine` seeds each by its episode's row, as the
        per-episode schedule does, so the two schedules sample alike."""
        try:
            if isinstance(self.engine, RequestEngine):
                futures = [self.engine.submit(p, params, adapter, row=row) for row, p in zip(rows, prompts)]
                return [[_first(future)] for future in futures]
            outputs = self.engine.generate(prompts, params, adapter)
        except Exception as exc:  # an engine-wide failure still ends each episode with a record
            return [[Completion.failed(f"{type(exc).__name__}: {exc}")] for _ in prompts]
        if len(outputs) != len(prompts):
            raise RuntimeError(f"engine returned {len(outputs)} results for {len(prompts)} prompts")
        return outputs

    @staticmethod
    def _record_sampled(
        trajectories: list[Trajectory], sampled: list[tuple[int, Completion, float]]
    ) -> list[tuple[int, Completion]]:
        """Append each episode's sampled ids (an engine error ends its episode); returns the
        episodes whose env steps next. `sampled`: (episode, completion, seconds it took)."""
        stepping: list[tuple[int, Completion]] = []
        for i, completion, seconds in sampled:
            trajectory = trajectories[i]
            trajectory.timings["generate_s"] = trajectory.timings.get("generate_s", 0.0) + seconds
            if not completion.ok:
                trajectory.error = completion.error or "engine error"
                trajectory.done = True
                continue
            trajectory.append_sampled(completion.token_ids, completion.logprobs)
            stepping.append((i, completion))
        return stepping

    def _step(
        self,
        envs: list[TextEnv],
        trajectories: list[Trajectory],
        stepping: list[tuple[int, Completion]],
        max_turns: int,
    ) -> None:
        by_class: dict[type[TextEnv], list[tuple[int, Completion]]] = defaultdict(list)
        for item in stepping:
            by_class[type(envs[item[0]])].append(item)
        tokenizer = self.engine.tokenizer
        for env_class, items in by_class.items():
            started = time.perf_counter()
            results = env_class.step_batch([envs[i] for i, _ in items], [c.text for _, c in items])
            elapsed = time.perf_counter() - started
            for (i, completion), (observation, reward, terminated, truncated, info) in zip(items, results):
                trajectory = trajectories[i]
                turn = len(trajectory.turns)  # this turn's index: one record per turn so far
                trajectory.timings["env_s"] = trajectory.timings.get("env_s", 0.0) + elapsed / len(items)
                history = trajectory.messages
                new_messages = observation[len(history) + 1 :]
                env_ids: list[int] = []
                ended = terminated or truncated or turn + 1 >= max_turns
                if not ended:
                    so_far = chat.with_system_prompt(
                        observation[: len(history) + 1], trajectory.system_prompt, self.config.placement
                    )
                    env_ids = chat.continuation_ids(
                        tokenizer, so_far, new_messages, sampled_ids=completion.token_ids
                    )
                    if len(trajectory.token_ids) + len(env_ids) + 1 > self.config.max_total_tokens:
                        env_ids, truncated, ended = [], True, True
                trajectory.turns.append(
                    TurnRecord(
                        start=len(trajectory.token_ids) - len(completion.token_ids),
                        n_sampled=len(completion.token_ids),
                        n_env=len(env_ids),
                        finish_reason=completion.finish_reason,
                        reward=float(reward),
                        info=_jsonable(info),
                        constrained=bool(completion.extra.get("constrained", False)),
                        adapter=completion.extra.get("adapter"),
                    )
                )
                trajectory.append_env(env_ids)
                trajectory.messages = observation
                trajectory.reward += float(reward)
                trajectory.info = _jsonable(info)
                trajectory.done = ended
                trajectory.truncated = bool(truncated) or (ended and not terminated)


def _first(future: Future[list[Completion]]) -> Completion:
    """A request's (first) completion; a request that raised becomes a failed completion."""
    try:
        completions = future.result()
    except Exception as exc:
        return Completion.failed(f"{type(exc).__name__}: {exc}")
    return completions[0] if completions else Completion.failed("the engine returned no completion")


def _jsonable(value: Any) -> Any:
    """Env `info` may hold numpy scalars or tuples; keep run records plain JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)
