"""Passage corpora: loading any JSONL corpus, and building the bundled multi-hop corpus.

Two row shapes are accepted, so the same code reads our bundled file and Search-R1's
wiki-18 dump: ``{"id", "title", "text"}``, or ``{"id", "contents"}`` with
``contents = '"Title"\\ntext'``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envs.datasets import DATA_DIR, iter_jsonl

BUILTIN = "builtin"
"""The name that stands for the bundled corpus wherever a corpus path is accepted."""
BUILTIN_CORPUS_FILE = "wiki_multihop_corpus.jsonl.gz"

# (bundled file, id prefix) in the order the bundled corpus is assembled.
_HOTPOTQA_CORPUS = "hotpotqa_corpus.jsonl.gz"
_TWOWIKI_DEV = "2wikimultihopqa_dev.jsonl.gz"
_MUSIQUE_DEV = "musique_ans_dev_paragraphs.jsonl.gz"


@dataclass
class Corpus:
    """Column-wise passages: row ``i`` is ``(ids[i], titles[i], texts[i])``."""

    ids: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    _row_of_id: dict[str, int] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def append(self, doc_id: str, title: str, text: str) -> None:
        self.ids.append(doc_id)
        self.titles.append(title)
        self.texts.append(text)
        self._row_of_id = None

    def contents(self, row: int) -> str:
        """Search-R1's wire form of a passage: the quoted title, a newline, the text."""
        return f'"{self.titles[row]}"\n{self.texts[row]}'

    def row_of_id(self, doc_id: str) -> int:
        if self._row_of_id is None:
            self._row_of_id = {doc_id: row for row, doc_id in enumerate(self.ids)}
        return self._row_of_id[doc_id]

    def subset(self, rows: Iterable[int]) -> Corpus:
        """A smaller corpus (for tests and quick indexes) keeping the given rows in order."""
        out = Corpus()
        for row in rows:
            out.append(self.ids[row], self.titles[row], self.texts[row])
        return out


def parse_row(row: dict[str, Any], line_number: int) -> tuple[str, str, str]:
    """``(id, title, text)`` of one corpus row in either accepted shape."""
    doc_id = str(row["id"]) if "id" in row and row["id"] is not None else str(line_number)
    if "contents" in row and "title" not in row:
        title, _, text = str(row["contents"]).partition("\n")
        return doc_id, title.strip().strip('"'), text
    if "text" in row:
        return doc_id, str(row.get("title") or ""), str(row["text"])
    raise ValueError(f"corpus row {line_number} has neither 'contents' nor 'text' (keys: {sorted(row)})")


def resolve_corpus_path(path: str | Path) -> Path:
    """The file behind a corpus argument; ``"builtin"`` is the bundled corpus."""
    if str(path) == BUILTIN:
        return DATA_DIR / BUILTIN_CORPUS_FILE
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise FileNotFoundError(f"corpus file not found: {resolved}")
    return resolved


def load_corpus(path: str | Path, progress: Callable[[int], None] | None = None) -> Corpus:
    """Read a JSONL(.gz) corpus; ids must be unique, since they are what the server returns."""
    corpus = Corpus()
    seen: set[str] = set()
    for line_number, row in enumerate(iter_jsonl(resolve_corpus_path(path))):
        doc_id, title, text = parse_row(row, line_number)
        if doc_id in seen:
            raise ValueError(f"duplicate passage id {doc_id!r} at corpus row {line_number}")
        seen.add(doc_id)
        corpus.append(doc_id, title, text)
        if progress is not None and line_number % 10_000 == 0:
            progress(line_number)
    if not corpus.ids:
        raise ValueError(f"corpus {path} is empty")
    return corpus


def write_corpus(corpus: Corpus, path: str | Path, style: str = "title_text") -> Path:
    """Write a corpus as JSONL (gzipped if the name ends in .gz), in either accepted shape:
    ``"title_text"`` rows ``{"id","title","text"}`` or ``"contents"`` rows ``{"id","contents"}``."""
    if style not in ("title_text", "contents"):
        raise ValueError(f"unknown corpus style {style!r}")
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for row in range(len(corpus)):
            if style == "contents":
                record = {"id": corpus.ids[row], "contents": corpus.contents(row)}
            else:
                record = {"id": corpus.ids[row], "title": corpus.titles[row], "text": corpus.texts[row]}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(resolve_corpus_path(path), "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _join_sentences(sentences: Iterable[str]) -> str:
    return " ".join(s.strip() for s in sentences if s.strip())


def _builtin_rows(data_dir: Path) -> Iterator[tuple[str, str, str]]:
    """(source prefix, title, text) of every paragraph, HotpotQA first, in file order."""
    for row in iter_jsonl(data_dir / _HOTPOTQA_CORPUS):
        yield row["id"], row["title"], row["text"]
    for record in iter_jsonl(data_dir / _TWOWIKI_DEV):
        for paragraph in record["context"]:
            yield "2w", paragraph["title"], _join_sentences(paragraph["sentences"])
    for record in iter_jsonl(data_dir / _MUSIQUE_DEV):
        for paragraph in record["paragraphs"]:
            yield "mq", paragraph["title"], paragraph["paragraph_text"].strip()


def build_builtin_corpus(out_path: str | Path | None = None, data_dir: str | Path = DATA_DIR) -> Path:
    """Write the bundled multi-hop corpus and return its path.

    It is the HotpotQA passages (their ``hp`` ids kept) plus every 2WikiMultiHopQA and
    MuSiQue paragraph of the bundled dev files, deduplicated by (title, text). New
    passages get ``2w%06d`` / ``mq%06d`` ids numbered in order of first appearance, so
    rebuilding from the same files gives byte-identical output.
    """
    data_dir = Path(data_dir)
    out = Path(out_path) if out_path is not None else data_dir / BUILTIN_CORPUS_FILE
    seen: set[tuple[str, str]] = set()
    counters = {"2w": 0, "mq": 0}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    # No name and mtime=0 in the gzip header keep the file byte-for-byte reproducible.
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
        for source, title, text in _builtin_rows(data_dir):
            if not text or (title, text) in seen:
                continue
            seen.add((title, text))
            if source in counters:
                doc_id = f"{source}{counters[source]:06d}"
                counters[source] += 1
            else:
                doc_id = source
            line = json.dumps({"id": doc_id, "title": title, "text": text}, ensure_ascii=False)
            gz.write(line.encode("utf-8") + b"\n")
    tmp.replace(out)
    return out


if __name__ == "__main__":
    print(build_builtin_corpus())
