"""The environment API: chat-message text environments on top of Gymnasium.

An environment holds no model client. It turns a `Task` into the opening chat, and each
agent reply (`action`, plain text) into a reward and, for multi-turn envs, the next
message. The same env is driven by training rollouts, evaluation, GEPA's adapter and tests.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
from gymnasium import spaces

Message = dict[str, str]
"""An OpenAI-style chat message: ``{"role": "user", "content": "..."}``."""

ROLES = ("system", "user", "assistant", "tool")
MAX_TEXT = 1_000_000


@dataclass(frozen=True)
class Task:
    """One dataset row: what the agent is asked and what counts as a right answer."""

    id: str
    question: str
    answers: tuple[str, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "answers": list(self.answers), "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> Task:
        return cls(str(row["id"]), str(row["question"]), tuple(row["answers"]), dict(row.get("meta") or {}))


class PrintableText(spaces.Text):
    """Gymnasium `Text` that samples from ASCII printable characters but contains any printable text.

    Real questions and model replies carry Unicode (accents, LaTeX, CJK); a fixed charset
    would reject them. Membership is "printable or whitespace" in the Unicode sense.
    """

    def __init__(self, max_length: int = MAX_TEXT, *, min_length: int = 0, seed: int | None = None):
        super().__init__(max_length, min_length=min_length, charset=string.printable, seed=seed)

    def contains(self, x: Any) -> bool:
        return (
            isinstance(x, str)
            and self.min_length <= len(x) <= self.max_length
            and (x.isprintable() or all(c.isprintable() or c.isspace() for c in x))
        )

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        # Cap sampled length: the default max_length is a bound, not a typical size.
        length = int(self.np_random.integers(self.min_length, min(self.max_length, 64) + 1))
        return "".join(self.np_random.choice(list(string.printable), size=length))


class ChatSpace(spaces.Space[list[Message]]):
    """A chat transcript: a list of ``{"role", "content"}`` messages with printable text."""

    def __init__(self, max_messages: int = 64, seed: int | None = None):
        super().__init__(None, None, seed)
        self.max_messages = max_messages
        self.text = PrintableText()

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def contains(self, x: Any) -> bool:
        return (
            isinstance(x, list)
            and 0 < len(x) <= self.max_messages
            and all(
                isinstance(m, dict)
                and set(m) == {"role", "content"}
                and m["role"] in ROLES
                and self.text.contains(m["content"])
                for m in x
            )
        )

    def sample(self, mask: Any = None, probability: Any = None) -> list[Message]:
        return [{"role": "user", "content": self.text.sample()}]

    def seed(self, seed: int | None = None) -> int | list[int] | dict[str, int]:
        seeds = super().seed(seed)
        self.text.seed(int(self.np_random.integers(2**31)))
        return seeds

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChatSpace) and other.max_messages == self.max_messages

    def __repr__(self) -> str:
        return f"ChatSpace(max_messages={self.max_messages})"


StepResult = tuple[list[Message], float, bool, bool, dict[str, Any]]


class TextEnv(gym.Env[list[Message], str]):
    """Base class: a Gymnasium env whose observation is the chat so far and whose action is text.

    Subclasses implement `initial_messages` and `respond`. `reset(options={"task": task})`
    pins the task; without it a task is drawn from the split with the env's seeded RNG.
    `step_batch` steps many envs of the same class at once, so an env that calls a service
    (a retrieval server) can send one request per turn for the whole batch.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 1}
    stop_strings: ClassVar[tuple[str, ...]] = ()
    """Strings that end an agent turn (e.g. ``</search>``); the rollout driver passes them to the engine."""
    max_turns: int = 1
    """Upper bound on agent turns in one episode; multi-turn envs raise it."""
    action_regex: ClassVar[str | None] = None
    """A regular expression every well-formed action matches, for engines that constrain
    decoding (`policy.constrain_actions`): small models then always emit an action the env
    can read. None: free text."""
    partial_credit: ClassVar[str | None] = None
    """What a partly right answer scores when the env is built with ``partial_credit=True``
    (`env.partial_credit`), in words for the run's summary; None: the env has only right or
    wrong, and takes no such argument."""

    def __init__(self, tasks: Sequence[Task], *, split: str = "test", render_mode: str | None = None):
        if not tasks:
            raise ValueError(f"{type(self).__name__}: the {split!r} split is empty")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"unsupported render_mode {render_mode!r}")
        self.tasks = list(tasks)
        self.split = split
        self.render_mode = render_mode
        self.observation_space = ChatSpace()
        self.action_space = PrintableText()
        self.task: Task | None = None
        self.messages: list[Message] = []
        self.turn = 0
        self.done = False

    # -- what subclasses define -------------------------------------------------------
    def initial_messages(self, task: Task) -> list[Message]:
        """The opening chat for `task` (without the system prompt, which the agent adds)."""
        raise NotImplementedError

    def respond(self, action: str) -> tuple[float, bool, Message | None, dict[str, Any]]:
        """Judge one agent reply: (reward, terminated, env reply message or None, info)."""
        raise NotImplementedError

    # -- Gymnasium API ------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = options or {}
        task = options.get("task")
        if task is None:
            index = options.get("index")
            index = int(self.np_random.integers(len(self.tasks))) if index is None else int(index)
            task = self.tasks[index]
        elif isinstance(task, Mapping):
            task = Task.from_dict(task)
        self.task = task
        self.messages = self.initial_messages(task)
        self.turn = 0
        self.done = False
        return self._observation(), {"task_id": task.id}

    def step(self, action: str) -> StepResult:
        return self._apply(action, self.respond(action))

    @classmethod
    def step_batch(cls, envs: Sequence[TextEnv], actions: Sequence[str]) -> list[StepResult]:
        """Step several envs together. The default steps them one by one."""
        return [env.step(action) for env, action in zip(envs, actions, strict=True)]

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in self.messages)

    # -- helpers ------------------------------------------------------------------------
    def _apply(self, action: str, outcome: tuple[float, bool, Message | None, dict[str, Any]]) -> StepResult:
        """Record the agent's reply and the env's judgement of it, in that order."""
        if self.task is None or self.done:
            raise RuntimeError("step() called before reset() or after the episode ended")
        reward, terminated, reply, info = outcome
        self.messages.append({"role": "assistant", "content": action})
        if reply is not None and not terminated:
            self.messages.append(reply)
        self.turn += 1
        self.done = terminated
        info = {"task_id": self.task.id, "turn": self.turn, **info}
        return self._observation(), float(reward), bool(terminated), False, info

    def _observation(self) -> list[Message]:
        return [dict(m) for m in self.messages]

    def __repr__(self) -> str:
        spec = self.spec.id if self.spec is not None else type(self).__name__
        return f"<{spec} split={self.split} tasks={len(self.tasks)}>"
