"""Single-turn math environment: one problem, one reply, reward 1 if the final answer is right."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envs.base import Message, StepResult, Task, TextEnv
from envs.math.datasets import load_tasks
from envs.math.verify import AnswerVerifier, Reason, Verdict, default_verifier

DEFAULT_INSTRUCTION = (
    "Work through the problem step by step, then give your final answer inside \\boxed{}, "
    "for example \\boxed{42}."
)


class MathEnv(TextEnv):
    """A math problem as the user turn; the reply is judged by an `AnswerVerifier`.

    The verifier defaults to the process-wide shared `MathVerifier`, created on the first
    step so that building envs never starts processes. `step_batch` judges a whole batch in
    one `score_many` call, so a rollout over 64 envs makes one parallel verification pass.
    """

    action_regex = r"[\s\S]{0,1500}\\boxed\{[^{}]{1,40}\}"
    """Working, then the final answer in \\boxed{} (the reply ends there)."""

    def __init__(
        self,
        dataset: str = "math500",
        split: str = "test",
        render_mode: str | None = None,
        *,
        tasks: Sequence[Task] | None = None,
        verifier: AnswerVerifier | None = None,
        instruction: str = DEFAULT_INSTRUCTION,
    ):
        super().__init__(load_tasks(dataset, split) if tasks is None else tasks, split=split, render_mode=render_mode)
        self.dataset = dataset
        self.instruction = instruction
        self._verifier = verifier

    @property
    def verifier(self) -> AnswerVerifier:
        if self._verifier is None:
            self._verifier = default_verifier()
        return self._verifier

    def initial_messages(self, task: Task) -> list[Message]:
        content = f"{task.question.strip()}\n\n{self.instruction}" if self.instruction else task.question.strip()
        return [{"role": "user", "content": content}]

    def gold_pairs(self, action: str) -> list[tuple[str, str]]:
        """(reply, gold) for every accepted answer of the current task."""
        if self.task is None:
            raise RuntimeError("step() called before reset()")
        return [(action, gold) for gold in self.task.answers]

    @staticmethod
    def outcome(
        pairs: Sequence[tuple[str, str]], verdicts: Sequence[Verdict]
    ) -> tuple[float, bool, Message | None, dict[str, Any]]:
        """The judgement from the verdicts against each gold answer: the best one counts."""
        if not verdicts:
            info = {"parsed_prediction": None, "gold": None, "reason": Reason.NO_ANSWER, "correct": False}
            return 0.0, True, None, info
        best = max(range(len(verdicts)), key=lambda i: verdicts[i].reward)
        verdict = verdicts[best]
        info = {
            "parsed_prediction": verdict.parsed_prediction,
            "gold": pairs[best][1],
            "reason": verdict.reason,
            "correct": verdict.correct,
        }
        return verdict.reward, True, None, info

    def respond(self, action: str) -> tuple[float, bool, Message | None, dict[str, Any]]:
        pairs = self.gold_pairs(action)
        return self.outcome(pairs, self.verifier.score_many(pairs))

    @classmethod
    def step_batch(cls, envs: Sequence[TextEnv], actions: Sequence[str]) -> list[StepResult]:
        """Step many math envs with one verification pass per verifier (usually one in all)."""
        if len(envs) != len(actions):
            raise ValueError("envs and actions differ in length")
        if not all(isinstance(env, MathEnv) for env in envs):
            return super().step_batch(envs, actions)
        for env in envs:
            if env.task is None or env.done:
                raise RuntimeError("step() called before reset() or after the episode ended")
        groups: dict[int, list[int]] = {}
        for i, env in enumerate(envs):
            groups.setdefault(id(env.verifier), []).append(i)
        outcomes: list[Any] = [None] * len(envs)
        for members in groups.values():
            verifier = envs[members[0]].verifier
            pairs_per_env = [envs[i].gold_pairs(actions[i]) for i in members]
            flat = [pair for pairs in pairs_per_env for pair in pairs]
            verdicts = verifier.score_many(flat)
            start = 0
            for i, pairs in zip(members, pairs_per_env, strict=True):
                outcomes[i] = cls.outcome(pairs, verdicts[start : start + len(pairs)])
                start += len(pairs)
        return [env._apply(action, outcome) for env, action, outcome in zip(envs, actions, outcomes, strict=True)]
