"""Which verifier worker judges which answer, in what chunks, and what a failed chunk costs.

Why home workers: a gold answer is parsed once per worker that sees it, and the replies of one
problem often share parsed forms, so each gold's answers go to one "home" worker. Why stealing:
answers differ a hundredfold in cost (a plain number against an interval, a SymPy `simplify` of
a wrong symbolic answer), so a static split by count leaves one worker idle while the other
still has a third of the batch; an idle worker takes the last queued chunk of the busiest one.
Why chunks: one task per answer costs a pipe round trip each; a chunk of a few answers is one.

The time limit is per answer. Each worker writes into a shared slot which answer of which
chunk it has just started, and when (`envs.math.worker.report_start`); the dispatcher stops a
worker whose current answer has run past the limit, gives that answer its TIMEOUT, and queues
the rest of the chunk again. So a hung answer costs the limit once, wherever it sits in a
chunk. Without slots (or when a worker dies) a chunk gets the limit as a whole and, if it
fails, its answers are judged again one per task; either way a TIMEOUT verdict means that
answer alone ran past the limit.
"""

from __future__ import annotations

import itertools
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

DEFAULT_CHUNK_SIZE = 8
IN_FLIGHT_PER_WORKER = 2
IDLE = -1.0
"""A progress slot's task id before its worker has started any answer."""
_task_ids = itertools.count()
"""Task ids are unique in this process, across calls: a slot may still name an earlier call's task."""


@dataclass(frozen=True)
class Failed:
    """No result for an answer: "timeout", "worker_crashed", or "error: <exception type>"."""

    reason: str
    exitcode: int | None = None


def assign_to_workers(group_sizes: dict[str, int], workers: int) -> list[list[tuple[str, int]]]:
    """Spread gold-answer groups over workers: [(gold, how many of its keys)] per worker.

    Each gold prefers a fixed "home" worker (a stable hash), so its parsed form and the
    parsed replies stay in that worker's caches. A group bigger than a fair share is split,
    and a group whose home is full goes to the least-loaded worker, so a batch of many
    samples of one problem still uses every worker.
    """
    total = sum(group_sizes.values())
    fair = -(-total // workers)
    chunks = []
    for gold, size in group_sizes.items():
        while size > 0:
            chunks.append((gold, min(size, fair)))
            size -= fair
    plan: list[list[tuple[str, int]]] = [[] for _ in range(workers)]
    load = [0] * workers
    for gold, size in sorted(chunks, key=lambda chunk: -chunk[1]):
        home = zlib.crc32(gold.encode("utf-8", "surrogatepass")) % workers
        target = home if load[home] + size <= fair else min(range(workers), key=load.__getitem__)
        plan[target].append((gold, size))
        load[target] += size
    return plan


def plan_chunks(golds: Sequence[str], workers: int, chunk_size: int) -> list[deque[list[int]]]:
    """Per worker, a queue of chunks (lists of indices into `golds`), one gold's answers together.

    Chunks shrink towards the end of a queue (a quarter of what is left, at most `chunk_size`),
    so the last tasks, and those an idle worker steals, are small and the workers finish close
    together.
    """
    by_gold: dict[str, list[int]] = {}
    for i, gold in enumerate(golds):
        by_gold.setdefault(gold, []).append(i)
    queues = []
    for share in assign_to_workers({gold: len(ix) for gold, ix in by_gold.items()}, workers):
        order: list[int] = []
        for gold, count in share:
            order += by_gold[gold][:count]
            del by_gold[gold][:count]
        queue: deque[list[int]] = deque()
        start = 0
        while start < len(order):
            size = max(1, min(chunk_size, (len(order) - start) // 4))
            queue.append(order[start : start + size])
            start += size
        queues.append(queue)
    return queues


def run_chunks(
    pools: Sequence[Any],
    task: Callable[[list[Any], int], list[Any]],
    payloads: Sequence[Any],
    golds: Sequence[str],
    timeout: float,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Sequence[Sequence[float]] | None = None,
) -> list[Any]:
    """`task(chunk, task_id)` on the workers' `pools` for every payload; results (or `Failed`)
    in order.

    `task` maps a list of payloads to a list of results of the same length. Each pool is a
    single-process pebble pool. `progress`, when given, holds one slot per pool that its worker
    sets to ``[task_id, position in the chunk, time.monotonic()]`` as it starts each answer.
    """
    from pebble import ProcessExpired

    queues = plan_chunks(golds, len(pools), max(1, chunk_size))
    results: list[Any] = [None] * len(payloads)
    in_flight: dict[Any, tuple[int, int, list[int]]] = {}  # future -> (worker, task id, chunk)
    by_id: dict[int, Any] = {}
    busy = [0] * len(pools)

    def take(w: int) -> list[int] | None:
        if queues[w]:
            return queues[w].popleft()
        victim = max(range(len(queues)), key=lambda v: len(queues[v]))
        return queues[victim].pop() if queues[victim] else None

    def top_up() -> None:
        for w in sorted(range(len(pools)), key=busy.__getitem__):
            while busy[w] < IN_FLIGHT_PER_WORKER:
                chunk = take(w)
                if chunk is None:
                    return
                task_id = next(_task_ids)
                # With slots the per-answer check applies; the pool's own limit is a backstop.
                limit = timeout * (len(chunk) + 1) if progress else timeout
                future = pools[w].schedule(task, args=([payloads[i] for i in chunk], task_id), timeout=limit)
                in_flight[future] = (w, task_id, chunk)
                by_id[task_id] = future
                busy[w] += 1

    def settle(future: Any) -> tuple[int, list[int]]:
        w, task_id, chunk = in_flight.pop(future)
        del by_id[task_id]
        busy[w] -= 1
        return w, chunk

    def stop_overdue_answers() -> None:
        now = time.monotonic()
        for w, slot in enumerate(progress or ()):
            task_id, position, started = int(slot[0]), int(slot[1]), slot[2]
            future = by_id.get(task_id)
            if future is None or now - started < timeout or not future.cancel():  # cancel stops the worker
                continue
            _, chunk = settle(future)
            results[chunk[position]] = Failed("timeout")
            rest = chunk[:position] + chunk[position + 1 :]
            if rest:
                queues[w].appendleft(rest)

    def seconds_to_next_check() -> float | None:
        if not progress:
            return None
        now = time.monotonic()
        soonest = now + timeout  # an answer that starts later is due no earlier than this
        for slot in progress:
            if int(slot[0]) in by_id:
                soonest = min(soonest, slot[2] + timeout)
        return max(0.0, soonest - now) + 0.01

    top_up()
    while in_flight:
        done, _ = wait(list(in_flight), timeout=seconds_to_next_check(), return_when=FIRST_COMPLETED)
        for future in done:
            w, chunk = settle(future)
            try:
                outcome = future.result()
            except FutureTimeout:
                outcome = Failed("timeout")
            except ProcessExpired as exc:
                outcome = Failed("worker_crashed", exc.exitcode)
            except Exception as exc:
                outcome = Failed(f"error: {type(exc).__name__}")
            if isinstance(outcome, Failed) and len(chunk) > 1:
                queues[w].extendleft([i] for i in reversed(chunk))  # again, one answer per task
                continue
            for i, result in zip(chunk, [outcome] if isinstance(outcome, Failed) else outcome, strict=True):
                results[i] = result
        stop_overdue_answers()
        top_up()
    return results
