"""`espl-bench retriever`: build a retrieval index from a JSONL corpus, or serve one over HTTP.

    espl-bench retriever index --corpus builtin --backend bm25s --out indexes/builtin-bm25s
    espl-bench retriever serve --index indexes/builtin-bm25s --port 8000
    espl-bench retriever serve --port 8000     # the built-in corpus, indexed on first use
"""

from __future__ import annotations

import argparse
import re

BACKENDS = ("bm25s", "pyserini", "dense")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}

SERVE_LIMITS = (
    # (option, Limits field, type, help); defaults come from `Limits` itself.
    ("--max-topk", "max_topk", int, "largest topk a request may ask for"),
    ("--max-queries", "max_queries", int, "most queries in one request"),
    ("--max-query-chars", "max_query_chars", int, "longest query, in characters"),
    ("--max-body-bytes", "max_body_bytes", "bytes", "largest request body"),
    ("--max-reply-bytes", "max_reply_bytes", "bytes",
     "refuse (413) a request whose reply could be larger: queries x topk x the largest passage"),
    ("--max-requests", "max_requests", int, "requests admitted at once; beyond, 503 with Retry-After"),
    ("--max-pending-bytes", "max_pending_bytes", "bytes",
     "request bodies, reply bounds and unsent replies of all admitted requests; beyond, 503"),
    ("--max-connections", "max_connections", int, "open connections; beyond, 503 and closed"),
    ("--header-timeout", "header_timeout_s", float, "seconds for a request's headers to arrive"),
    ("--body-timeout", "body_timeout_s", float, "seconds for a request's body to arrive after its headers"),
    ("--write-timeout", "write_timeout_s", float, "seconds a reply may sit unread before the connection is cut"),
    ("--keep-alive", "keep_alive_s", float, "seconds an idle connection is kept open"),
)


def byte_size(text: str) -> int:
    """A size like ``8388608``, ``64M``, ``64MiB`` or ``1G`` (binary units) in bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]?)(?:i?b)?\s*", text.lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 8388608, 64M, 1G)")
    return int(match[1]) * _UNITS[match[2]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from envs.retrieval.wire import Limits

    sub = parser.add_subparsers(dest="action", required=True, metavar="{index,serve}")
    index = sub.add_parser("index", help="build an index directory from a corpus")
    index.add_argument(
        "--corpus",
        default="builtin",
        help='JSONL(.gz) with {"id","contents"} or {"id","title","text"} rows, or "builtin" (default)',
    )
    index.add_argument("--backend", choices=BACKENDS, default="bm25s", help="search backend (default: bm25s)")
    index.add_argument("--out", required=True, help="index directory to create")
    index.add_argument("--force", action="store_true", help="replace --out if it already holds an index")

    serve = sub.add_parser("serve", help="serve an index with Search-R1's POST /retrieve API")
    serve.add_argument("--index", help="index directory made by `retriever index` (default: the built-in corpus's "
                       "index, built on first use and cached, as the search envs do)")
    serve.add_argument("--backend", choices=BACKENDS, help="backend of the built-in corpus's index (default: bm25s); "
                       "an --index folder has its own")
    serve.add_argument("--corpus", help="corpus path, if it moved since the index was built")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1, local only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    defaults = Limits()
    for option, field, kind, text in SERVE_LIMITS:
        default = getattr(defaults, field)
        if kind == "bytes":
            serve.add_argument(option, dest=field, type=byte_size, default=default, metavar="SIZE",
                               help=f"{text} (default: {default >> 20}M)")
        else:
            serve.add_argument(option, dest=field, type=kind, default=default, metavar="S" if kind is float else "N",
                               help=f"{text} (default: {default})")
    serve.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))


def _run_index(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pathlib import Path

    from envs.retrieval.corpus import load_corpus, resolve_corpus_path
    from envs.retrieval.index import build_index, check_destination

    resolve_corpus_path(args.corpus)  # fail before any work on a missing corpus or a busy --out
    check_destination(Path(args.out), overwrite=args.force)
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        reading = progress.add_task("reading corpus", total=None)
        corpus = load_corpus(args.corpus, progress=lambda n: progress.update(reading, completed=n))
        progress.update(reading, total=len(corpus), completed=len(corpus))
        indexing = progress.add_task(f"indexing with {args.backend}", total=len(corpus))
        opened = build_index(
            args.corpus,
            args.out,
            args.backend,
            corpus=corpus,
            overwrite=args.force,
            progress=lambda done, total: progress.update(indexing, completed=done, total=total),
        )
    manifest = opened.manifest
    console.print(
        f"[green]built[/green] {manifest['backend']} index of {manifest['corpus']['size']:,} passages "
        f"in {manifest['build_seconds']} s -> {args.out} (version {manifest['index_version']})"
    )
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    from envs.retrieval.searcher import DEFAULT_BACKEND, LocalRetriever, builtin_index_dir
    from envs.retrieval.server import serve
    from envs.retrieval.wire import Limits

    limits = Limits(**{field: getattr(args, field) for _, field, _, _ in SERVE_LIMITS})
    if args.index is None:
        if args.corpus is not None:
            raise ValueError("--corpus goes with --index; without --index the built-in corpus is served")
        backend = args.backend or DEFAULT_BACKEND
        print(f"opening the built-in corpus's {backend} index (built on first use into {builtin_index_dir(backend)})",
              flush=True)
        retriever, name = LocalRetriever.builtin(backend), "of the built-in corpus"
    else:
        if args.backend is not None:
            raise ValueError(f"--backend chooses the built-in corpus's index; {args.index} has its own backend")
        retriever, name = LocalRetriever.from_index_dir(args.index, corpus_path=args.corpus), args.index
    print(
        f"serving {retriever.health()['backend']} index {name} ({len(retriever.corpus):,} passages) "
        f"at http://{args.host}:{args.port}/retrieve",
        flush=True,
    )
    serve(retriever, host=args.host, port=args.port, limits=limits, log_level=args.log_level)
    return 0


def run(args: argparse.Namespace) -> int:
    import sys

    from envs.retrieval.index import IndexLoadError

    try:
        return _run_index(args) if args.action == "index" else _run_serve(args)
    except (FileNotFoundError, FileExistsError, IndexLoadError, ValueError) as error:
        print(f"espl-bench retriever {args.action}: {error}", file=sys.stderr)
        return 2
