"""Retrieval types shared by the server, its backends and the client."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec


class Passage(msgspec.Struct, frozen=True, gc=False):
    """One retrieved passage. On the wire (Search-R1's API) it is ``{"id", "contents"}``
    with ``contents = '"Title"\\ntext'``.

    A frozen struct rather than a frozen dataclass: a k=10 batch of 1,700 queries builds
    17,000 of these, and a struct is built in C (about 10x faster) and, holding only strings
    and a float, is left out of the garbage collector's tracking.
    """

    id: str
    title: str
    text: str
    score: float | None = None

    @property
    def contents(self) -> str:
        return f'"{self.title}"\n{self.text}'

    def to_document(self) -> dict[str, str]:
        return {"id": self.id, "contents": self.contents}

    @classmethod
    def from_contents(cls, doc_id: str, contents: str, score: float | None = None) -> Passage:
        """Split Search-R1's contents: the title is the first line without its quotes."""
        title, _, text = contents.partition("\n")
        return cls(doc_id, title.strip().strip('"'), text, score)

    @classmethod
    def from_document(cls, document: Mapping[str, Any], score: float | None = None) -> Passage:
        """Parse Search-R1's document dict."""
        return cls.from_contents(str(document.get("id", "")), str(document.get("contents", "")), score)


@runtime_checkable
class Retriever(Protocol):
    """Anything that answers a batch of queries with the top-k passages of each."""

    def retrieve(self, queries: Sequence[str], topk: int = 3) -> list[list[Passage]]: ...
