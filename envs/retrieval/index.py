"""Index directories: build one from a corpus with any backend, open it again later.

An index directory holds the backend's files and ``manifest.json`` (backend, its parameters,
the corpus path, hash and size, an index version, and the names of the files the build
wrote). The corpus itself is not copied: the manifest points at it (``"builtin"`` for the
bundled corpus), and opening checks that it has not changed size since the build.

A build never deletes what it did not create: it writes into a new or empty directory, and
replaces (with ``overwrite``) only a directory that holds an index and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envs.retrieval.backends import DEFAULT_BACKEND, ProgressCallback, SearchBackend, backend_class
from envs.retrieval.corpus import BUILTIN, Corpus, file_sha256, load_corpus, resolve_corpus_path

MANIFEST_FILE = "manifest.json"
FORMAT = "espl-bench-retrieval-index"
FORMAT_VERSION = 1


class IndexLoadError(ValueError):
    """An index directory that is missing, incomplete, or out of step with its corpus."""


@dataclass
class OpenIndex:
    """A loaded index: the backend, the passages it returns, and what the manifest says."""

    backend: SearchBackend
    corpus: Corpus
    manifest: dict[str, Any]
    directory: Path

    @property
    def version(self) -> str:
        return str(self.manifest["index_version"])


def _corpus_reference(corpus_arg: str | Path) -> str:
    return BUILTIN if str(corpus_arg) == BUILTIN else str(resolve_corpus_path(corpus_arg))


def _index_version(backend: str, params: dict[str, Any], corpus_sha: str) -> str:
    blob = json.dumps({"backend": backend, "params": params, "corpus": corpus_sha}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_destination(out: Path, overwrite: bool) -> None:
    """Refuse (`FileExistsError`) to build into `out` unless it is missing, empty, or, with
    `overwrite`, an index directory: a valid manifest, and no file its build did not write.

    ``--force`` once wiped whatever folder it was given; a folder of someone's files is now
    left alone whatever the flags say.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    entries = {entry.name for entry in out.iterdir()}
    if not entries:
        return
    try:
        manifest = read_manifest(out)
    except (ValueError, OSError, AttributeError):  # unreadable, not JSON, or not a JSON object
        raise FileExistsError(
            f"{out} is not empty and is not an index (no valid {MANIFEST_FILE}): refusing to replace it, "
            "with or without --force; choose another --out"
        ) from None
    if not overwrite:
        raise FileExistsError(f"{out} already holds an index (use --force to replace it)")
    foreign = sorted(entries - set(manifest.get("files", entries)) - {MANIFEST_FILE})
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise FileExistsError(f"{out} holds an index and also files its build did not write ({shown}): "
                              "refusing to replace it; move them out first")


def _replace(out: Path, staging: Path, overwrite: bool) -> None:
    """Move the finished index from `staging` to `out`, the old index aside first so that
    `out` is never half-written and the old one comes back if the move fails."""
    check_destination(out, overwrite)  # again: the folder may have changed during the build
    if not out.exists():
        staging.rename(out)
        return
    old = out.with_name(f".{out.name}.replaced-{os.getpid()}-{time.time_ns()}")
    out.rename(old)
    try:
        staging.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def build_index(
    corpus_arg: str | Path,
    out_dir: str | Path,
    backend: str = DEFAULT_BACKEND,
    *,
    progress: ProgressCallback | None = None,
    overwrite: bool = False,
    corpus: Corpus | None = None,
) -> OpenIndex:
    """Index a corpus file (or ``"builtin"``) into `out_dir` and return it opened.

    The index is written to a temporary sibling and renamed into place, so a crash or a
    concurrent builder never leaves a half-written index under `out_dir`.
    """
    out = Path(out_dir).expanduser().resolve()
    check_destination(out, overwrite)
    cls = backend_class(backend)
    corpus_path = resolve_corpus_path(corpus_arg)
    corpus = corpus if corpus is not None else load_corpus(corpus_path)
    corpus_sha = file_sha256(corpus_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        started = time.time()
        built = cls.build(corpus, staging, progress=progress)
        params = built.describe()
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "backend": backend,
            "params": params,
            "corpus": {
                "path": _corpus_reference(corpus_arg),
                "sha256": corpus_sha,
                "bytes": corpus_path.stat().st_size,
                "size": len(corpus),
            },
            "index_version": _index_version(backend, params, corpus_sha),
            "files": sorted(entry.name for entry in staging.iterdir()),
            "build_seconds": round(time.time() - started, 2),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        _replace(out, staging, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return open_index(out, corpus=corpus)


def read_manifest(index_dir: str | Path) -> dict[str, Any]:
    path = Path(index_dir).expanduser() / MANIFEST_FILE
    if not path.is_file():
        raise IndexLoadError(f"{path.parent} is not an index directory (no {MANIFEST_FILE}); build one with "
                          "`espl-bench retriever index`")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise IndexLoadError(f"{path} is not a version-{FORMAT_VERSION} {FORMAT} manifest")
    return manifest


def open_index(
    index_dir: str | Path, *, corpus_path: str | Path | None = None, corpus: Corpus | None = None
) -> OpenIndex:
    """Load an index and its corpus; `corpus_path` overrides the manifest's (a moved corpus)."""
    directory = Path(index_dir).expanduser().resolve()
    manifest = read_manifest(directory)
    recorded = manifest["corpus"]
    if corpus is None:
        source = corpus_path if corpus_path is not None else recorded["path"]
        try:
            path = resolve_corpus_path(source)
        except FileNotFoundError as error:
            raise IndexLoadError(f"{error}; the index in {directory} needs its corpus (pass its new path)") from error
        if path.stat().st_size != recorded["bytes"]:
            raise IndexLoadError(f"corpus {path} changed since index {directory} was built (size differs); rebuild it")
        corpus = load_corpus(path)
    if len(corpus) != recorded["size"]:
        raise IndexLoadError(f"corpus has {len(corpus)} passages but index {directory} was built on {recorded['size']}")
    backend = backend_class(manifest["backend"]).load(directory, corpus)
    return OpenIndex(backend=backend, corpus=corpus, manifest=manifest, directory=directory)
