"""Multi-hop search QA with the Search-R1 protocol.

The agent reasons in ``<think>``, searches with ``<search>query</search>``, gets the top-k
passages back inside ``<information>``, and ends with ``<answer>...</answer>``. Reward is the
SQuAD-normalised exact match (Search-R1's); F1 and whether retrieval ever surfaced the answer
go to `info`. With ``partial_credit=True`` the reward is the answer's F1 instead (1 for an
exact match, a share for a near miss such as a surname without the first name): training
signal for a model too small to be exactly right often.

Turn rules:

- Every agent reply (generation) is one turn. At most `max_searches` searches are executed
  (4 by default).
- The reply after the last allowed search (or the reply at the turn cap) is the *final turn*:
  the env's preceding message says so, and a search on it is not executed. Whatever the
  final reply holds, the episode ends there; without an answer it scores 0.
- A reply with no complete action gets a short corrective message and the episode goes on.
  Such replies count toward `max_turns`, like every reply.
- `max_turns` defaults to ``max_searches + 1``: Search-R1's loop of at most 4 turns in which
  a search runs, then one final generation with search off, so at most 5 generations per
  episode whatever the replies are (an invalid reply spends one of the search turns, as it
  does in Search-R1's loop). A larger `max_turns` gives invalid replies room without
  allowing more searches.

The env's messages use the ``user`` role by default: this protocol feeds results back as
plain text the model reads, and chat templates differ in whether (and how) they render a
``tool`` message without a matching tool call. ``reply_role="tool"`` is available.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from envs.base import Message, StepResult, Task, TextEnv
from envs.retrieval.types import Passage, Retriever
from envs.search.datasets import load_tasks
from envs.search.protocol import Action, parse_action, render_observation, token_counter
from envs.search.reward import answer_in_text, exact_match, f1_score

INSTRUCTIONS = (
    "Answer the question below. Think it through inside <think> and </think> whenever you like. "
    "If you are missing a fact, look it up by writing a query between <search> and </search>; "
    "the results come back to you between <information> and </information>. "
    "You may search up to {max_searches} times. Once you know the answer, write only the answer "
    "between <answer> and </answer>, with no explanation, for example <answer> Paris </answer>.\n\n"
    "Question: {question}"
)
CORRECTION = (
    "That reply had no action I can carry out ({reason}). Write <search>your query</search> to "
    "look something up, or give your final answer as <answer>...</answer>."
)
ANSWER_NOW = "No searches are left. Reply now with your final answer inside <answer> and </answer>."


def local_server_url() -> str:
    """The URL of this process's local retrieval server over the built-in corpus (started once)."""
    from envs.retrieval.local import ensure_local_server

    return ensure_local_server()


_CLIENTS: dict[str, Retriever] = {}


def client_for(url: str) -> Retriever:
    """One shared HTTP client per server URL, so a batch of envs sends one request per turn."""
    if url not in _CLIENTS:
        from envs.retrieval.client import RetrievalClient

        _CLIENTS[url] = RetrievalClient(url)
    return _CLIENTS[url]


class SearchEnv(TextEnv):
    """Search-R1-style multi-turn QA over a retriever (see the module docstring for the rules)."""

    action_regex = r"<think>[^<>]{0,160}</think>\n?(<search>[^<>]{1,120}</search>|<answer>[^<>\n]{1,40}</answer>)"
    """Search-R1's turn: reasoning in <think>, then one search or the answer."""
    partial_credit = "the answer's token F1 against the best gold answer"

    def __init__(
        self,
        dataset: str = "hotpotqa",
        split: str = "test",
        *,
        retriever_url: str | None = None,
        retriever: Retriever | None = None,
        topk: int = 3,
        max_searches: int = 4,
        max_turns: int | None = None,
        max_obs_tokens: int = 500,
        tokenizer: Any | None = None,
        reply_role: str = "user",
        render_mode: str | None = None,
        tasks: Sequence[Task] | None = None,
        partial_credit: bool = False,
    ):
        super().__init__(load_tasks(dataset, split) if tasks is None else tasks, split=split, render_mode=render_mode)
        if topk < 1 or max_searches < 0 or max_obs_tokens < 1:
            raise ValueError("topk and max_obs_tokens must be positive and max_searches non-negative")
        if reply_role not in ("user", "tool"):
            raise ValueError(f"reply_role must be 'user' or 'tool', not {reply_role!r}")
        self.dataset = dataset
        self.retriever_url = retriever_url
        self._retriever = retriever
        self.topk = topk
        self.max_searches = max_searches
        self.max_turns = max_searches + 1 if max_turns is None else max_turns
        if self.max_turns < 1:
            raise ValueError("max_turns must be at least 1")
        self.max_obs_tokens = max_obs_tokens
        self.counter = token_counter(tokenizer)
        self.reply_role = reply_role
        self.n_searches = 0
        self.retrieved: list[Passage] = []
        self.graded = partial_credit

    # -- retriever -----------------------------------------------------------------------
    @property
    def retriever(self) -> Retriever:
        """The injected retriever, else a client of `retriever_url`, else of the local server.

        Resolved at the first search, so building an env never starts a server.
        """
        if self._retriever is None:
            self._retriever = client_for(self.retriever_url or local_server_url())
        return self._retriever

    # -- TextEnv -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self.n_searches = 0
        self.retrieved = []
        return super().reset(seed=seed, options=options)

    def initial_messages(self, task: Task) -> list[Message]:
        text = INSTRUCTIONS.format(max_searches=self.max_searches, question=task.question)
        return [{"role": "user", "content": text}]

    def respond(self, action: str) -> tuple[float, bool, Message | None, dict[str, Any]]:
        self._check_running()  # before any retrieval, so a finished episode costs no request
        parsed = parse_action(action)
        passages = None
        if self._will_search(parsed):
            passages = self.retriever.retrieve([parsed.content], self.topk)[0]
        return self._judge(parsed, passages)

    @classmethod
    def step_batch(cls, envs: Sequence[TextEnv], actions: Sequence[str]) -> list[StepResult]:
        """Step many envs, sending every search of the batch to its retriever in one call.

        Envs are grouped by retriever instance (envs of one server URL share a client), so
        a batch over one server makes exactly one `retrieve` call; envs that do not search
        make none. Envs of other classes are stepped on their own.
        """
        if len(envs) != len(actions):
            raise ValueError(f"{len(envs)} envs but {len(actions)} actions")
        parsed: dict[int, Action] = {}
        groups: dict[int, tuple[Retriever, list[int]]] = {}
        for i, (env, action) in enumerate(zip(envs, actions)):
            if not isinstance(env, SearchEnv):
                continue
            env._check_running()
            parsed[i] = parse_action(action)
            if env._will_search(parsed[i]):
                retriever = env.retriever
                groups.setdefault(id(retriever), (retriever, []))[1].append(i)
        fetched: dict[int, list[Passage]] = defaultdict(list)
        for retriever, members in groups.values():
            by_topk: dict[int, list[int]] = defaultdict(list)
            for i in members:
                by_topk[envs[i].topk].append(i)  # type: ignore[attr-defined]
            for topk, same_k in by_topk.items():
                results = retriever.retrieve([parsed[i].content for i in same_k], topk)
                fetched.update(zip(same_k, results, strict=True))
        results: list[StepResult] = []
        for i, (env, action) in enumerate(zip(envs, actions)):
            if i not in parsed:
                results.append(env.step(action))
                continue
            search_env: SearchEnv = env  # type: ignore[assignment]
            passages = fetched.get(i) if search_env._will_search(parsed[i]) else None
            results.append(search_env._apply(action, search_env._judge(parsed[i], passages)))
        return results

    # -- rules ---------------------------------------------------------------------------
    def _check_running(self) -> None:
        if self.task is None or self.done:
            raise RuntimeError("step() called before reset() or after the episode ended")

    def _is_final_turn(self, turns_ahead: int = 0) -> bool:
        """Whether the reply being judged (or the one `turns_ahead` after it) is the last one allowed."""
        return self.n_searches >= self.max_searches or self.turn + 1 + turns_ahead >= self.max_turns

    def _will_search(self, action: Action) -> bool:
        return action.kind == "search" and not self._is_final_turn()

    def _judge(self, action: Action, passages: Sequence[Passage] | None) -> tuple[float, bool, Message | None, dict]:
        """Apply the turn rules to a parsed reply; `passages` are the results of its search, if run."""
        info: dict[str, Any] = {"action": action.kind}
        if action.kind == "answer" or self._is_final_turn():
            return self._finish(action, info)
        if action.kind == "search":
            assert passages is not None, "a search turn needs its retrieval results"
            passages = list(passages)[: self.topk]
            self.n_searches += 1
            self.retrieved.extend(passages)
            info.update(query=action.content, n_searches=self.n_searches)
            text = render_observation(passages, self.counter, self.max_obs_tokens)
        else:
            info.update(error=action.error, n_searches=self.n_searches)
            text = CORRECTION.format(reason=action.error)
        if self._is_final_turn(turns_ahead=1):  # warn the agent before its last reply
            text = f"{text}\n\n{ANSWER_NOW}"
        return 0.0, False, {"role": self.reply_role, "content": text}, info

    def _finish(self, action: Action, info: dict[str, Any]) -> tuple[float, bool, None, dict[str, Any]]:
        assert self.task is not None
        golds = list(self.task.answers)
        prediction = action.content if action.kind == "answer" else ""
        answered = action.kind == "answer"
        em = exact_match(prediction, golds) if answered else 0.0
        f1 = f1_score(prediction, golds) if answered else 0.0
        info.update(
            em=em,
            f1=f1,
            answered=answered,
            prediction=prediction,
            golds=golds,
            n_searches=self.n_searches,
            answer_in_retrieved=answer_in_text(golds, (f"{p.title} {p.text}" for p in self.retrieved)),
            retrieved=[{"id": p.id, "title": p.title} for p in self.retrieved],
        )
        return (f1 if self.graded else em), True, None, info
