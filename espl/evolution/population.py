"""The population of system prompts: FIFO-capped members plus the full lineage archive.

Members are kept in arrival order; once the cap is reached the oldest member is evicted. An
evicted prompt leaves the population but stays in the archive, because the lineage of later
prompts (and the plots drawn from it) still runs through it. Selection only looks at the
newest K members (the window).

Its log, `prompts.jsonl`, is written and replayed by `espl.evolution.prompt_log`.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from espl.evolution.system_prompt import SEED_OPERATOR, RatingPoint, SystemPrompt
from espl.evolution.rating import RatingLike

DEFAULT_CAPACITY = 200
DEFAULT_WINDOW = 10


class Population:
    """Rated system prompts, newest last; ids are `p0000`, `p0001`, ... unless given."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, window_size: int = DEFAULT_WINDOW) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if window_size < 1:
            raise ValueError("window_size must be at least 1")
        self.capacity = capacity
        self.window_size = window_size
        self._archive: dict[str, SystemPrompt] = {}
        self._members: deque[str] = deque()
        self._next_index = 0

    # -- membership -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self._members

    def __iter__(self) -> Iterator[SystemPrompt]:
        return (self._archive[i] for i in self._members)

    @property
    def member_ids(self) -> list[str]:
        """Current members, oldest first."""
        return list(self._members)

    @property
    def newest(self) -> SystemPrompt:
        if not self._members:
            raise LookupError("the population is empty")
        return self._archive[self._members[-1]]

    def window(self, size: int | None = None) -> list[str]:
        """Ids of the newest `size` members (default: the window size), oldest first."""
        size = self.window_size if size is None else size
        return list(self._members)[-size:] if size > 0 else []

    def get(self, prompt_id: str) -> SystemPrompt:
        """Any prompt ever added, including evicted ones."""
        try:
            return self._archive[prompt_id]
        except KeyError:
            raise KeyError(f"unknown prompt id {prompt_id!r}") from None

    def archive(self) -> list[SystemPrompt]:
        """Every prompt ever added, in creation order."""
        return list(self._archive.values())

    @property
    def next_index(self) -> int:
        """The number the next generated id will carry."""
        return self._next_index

    def new_id(self) -> str:
        return f"p{self._next_index:04d}"

    def add(self, prompt: SystemPrompt) -> list[str]:
        """Add a prompt as the newest member; returns the ids evicted to respect the cap."""
        if prompt.id in self._archive:
            raise ValueError(f"prompt id {prompt.id!r} is already in the population's lineage")
        unknown = [p for p in prompt.parents if p not in self._archive]
        if unknown:
            raise ValueError(f"prompt {prompt.id!r} has unknown parent(s) {unknown}")
        self._archive[prompt.id] = prompt
        self._members.append(prompt.id)
        self._advance_counter(prompt.id)
        evicted: list[str] = []
        while len(self._members) > self.capacity:
            old_id = self._members.popleft()
            self._archive[old_id].evicted_step = prompt.created_step
            evicted.append(old_id)
        return evicted

    def create(
        self,
        principles: Sequence[str],
        *,
        step: int,
        operator: str = SEED_OPERATOR,
        parents: Sequence[str] = (),
        header: str | None = None,
        rating: RatingLike | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SystemPrompt:
        """Build a prompt with a fresh id, record its initial rating, and add it."""
        prompt = SystemPrompt(
            id=self.new_id(),
            principles=tuple(principles),
            parents=tuple(parents),
            operator=operator,
            created_step=step,
            header=header,
            metadata=dict(metadata or {}),
        )
        if rating is not None:
            prompt.rating_history.append(
                RatingPoint(step=step, mu=float(rating.mu), sigma=float(rating.sigma), event=operator)
            )
        self.add(prompt)
        return prompt

    def _advance_counter(self, prompt_id: str) -> None:
        if prompt_id.startswith("p") and prompt_id[1:].isdigit():
            self._next_index = max(self._next_index, int(prompt_id[1:]) + 1)
        else:
            self._next_index = max(self._next_index, len(self._archive))

    # -- ratings ------------------------------------------------------------------------------

    def record_rating(self, prompt_id: str, step: int, rating: RatingLike, event: str = "match") -> None:
        """Append a rating point (anything with mu and sigma) to a prompt's history."""
        point = RatingPoint(step=step, mu=float(rating.mu), sigma=float(rating.sigma), event=event)
        self.get(prompt_id).rating_history.append(point)

    def record_ratings(self, step: int, ratings: Mapping[str, RatingLike], event: str = "match") -> None:
        for prompt_id, rating in ratings.items():
            self.record_rating(prompt_id, step, rating, event)

    def ratings(self, ids: Iterable[str] | None = None) -> dict[str, RatingPoint]:
        """Latest rating of each member (or of `ids`); unrated prompts are left out."""
        chosen = self._members if ids is None else ids
        latest = {i: self.get(i).rating for i in chosen}
        return {i: r for i, r in latest.items() if r is not None}

    # -- lineage ------------------------------------------------------------------------------

    def ancestors(self, prompt_id: str) -> list[str]:
        """All ancestors of a prompt, nearest generation first, each once."""
        seen: set[str] = {prompt_id}
        order: list[str] = []
        frontier = list(self.get(prompt_id).parents)
        while frontier:
            next_frontier: list[str] = []
            for parent in frontier:
                if parent in seen:
                    continue
                seen.add(parent)
                order.append(parent)
                next_frontier.extend(self.get(parent).parents)
            frontier = next_frontier
        return order

    def lineage_edges(self, prompt_id: str) -> list[tuple[str, str]]:
        """(parent, child) edges of the DAG that ends at `prompt_id`, for drawing it."""
        nodes = [prompt_id, *self.ancestors(prompt_id)]
        return [(parent, node) for node in nodes for parent in self.get(node).parents]

    # -- state ----------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """A JSON-ready snapshot of everything, archive included."""
        return {
            "capacity": self.capacity,
            "window_size": self.window_size,
            "next_index": self._next_index,
            "members": list(self._members),
            "archive": [p.to_record() for p in self._archive.values()],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Population:
        population = cls(capacity=int(state["capacity"]), window_size=int(state["window_size"]))
        population._load(state)
        return population

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.to_state())

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Return to a snapshot in place (e.g. to undo a step that failed half-way)."""
        self.capacity = int(snapshot["capacity"])
        self.window_size = int(snapshot["window_size"])
        self._load(copy.deepcopy(dict(snapshot)))

    def _load(self, state: Mapping[str, Any]) -> None:
        self._archive = {}
        for record in state["archive"]:
            self._adopt(SystemPrompt.from_record(record))
        self._set_members(state["members"], int(state["next_index"]))

    def _adopt(self, prompt: SystemPrompt) -> None:
        """Put a prompt into the archive without making it a member (replay and restore)."""
        if prompt.id in self._archive:
            raise ValueError(f"prompt id {prompt.id!r} appears twice")
        self._archive[prompt.id] = prompt

    def _set_members(self, members: Iterable[str], next_index: int) -> None:
        member_ids = [str(i) for i in members]
        unknown = [i for i in member_ids if i not in self._archive]
        if unknown:
            raise ValueError(f"members {unknown} are missing from the archive")
        self._members = deque(member_ids)
        self._next_index = next_index
