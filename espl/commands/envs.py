"""`espl-bench envs`: every registered environment with its split sizes."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", help="only envs of this kind (math, search, ...)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from envs import registry

    rows = []
    for info in registry.list_envs():
        if args.kind and info.kind != args.kind:
            continue
        sizes = {split: len(registry.make(info.id, split=split).tasks) for split in ("train", "test")}
        rows.append({"id": info.id, "alias": info.alias, "kind": info.kind, **sizes, "description": info.description})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="espl-bench environments")
    for column in ("id", "alias", "kind", "train", "test", "description"):
        table.add_column(column, justify="right" if column in ("train", "test") else "left")
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("id", "alias", "kind", "train", "test", "description")))
    Console().print(table)
    return 0
