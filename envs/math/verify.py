"""Math answer verification: math-verify in a process pool with our own per-answer timeout.

Why a pool: math-verify guards `parse`/`verify` with `signal.alarm`, which fails off the main
thread and cannot interrupt SymPy stuck in C (``10^{10^{10^{10}}}``, ``(10^{10})!``). Workers
(a `pebble.ProcessPool`) run it with those timeouts off; a worker that overruns our limit is
killed and replaced, and its answer scores 0 with the reason recorded.

Why it is fast: (1) the final answer is cut out of the reply in the parent
(`envs.math.extract`), so workers parse a short string; (2) pairs whose answer and gold are
both plain integers are compared in the parent, which is exactly math-verify's verdict for
them; (3) identical (answer, gold) pairs in a batch are judged once and recent verdicts are
cached; (4) each gold answer has a home worker that keeps it parsed, along with parsed replies,
converted LaTeX and verify results; (5) answers travel in small chunks and an idle worker takes
queued chunks from a busy one (`envs.math.dispatch`), so both stay busy to the end; (6) inside
the workers, math-verify's `simplify` of a wrong answer is skipped where evaluating the
difference proves it nonzero (`envs.math.disproof`, installed by `envs.math.mvpatch`).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from envs.math import worker
from envs.math.dispatch import DEFAULT_CHUNK_SIZE, IDLE, Failed, run_chunks
from envs.math.extract import (
    DEFAULT_MAX_ANSWER_CHARS,
    DEFAULT_TAIL_CHARS,
    AnswerKind,
    Candidate,
    answer_candidate,
    plain_integer,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MEMORY_LIMIT_MB = 2048


class Reason:
    """Why an answer got its reward (`Verdict.reason`)."""

    MATCH = "match"
    MISMATCH = "mismatch"
    NO_ANSWER = "no_answer"  # nothing in the reply that parses as an answer
    TOO_LONG = "answer_too_long"  # refused before parsing
    GOLD_UNPARSABLE = "gold_unparsable"
    TIMEOUT = "timeout"  # the worker ran past the limit and was killed
    WORKER_CRASHED = "worker_crashed"  # the worker died (memory, signal)
    ERROR = "error"


@dataclass(frozen=True)
class Verdict:
    """The judgement of one (reply, gold) pair."""

    reward: float
    parsed_prediction: str | None
    parsed_gold: str | None
    reason: str
    via: str = "math_verify"  # "integer" fast path, "prefilter", or "math_verify"

    @property
    def correct(self) -> bool:
        return self.reward > 0


@runtime_checkable
class AnswerVerifier(Protocol):
    """Anything that scores math replies against gold answers."""

    def score(self, prediction: str, gold: str) -> Verdict: ...

    def score_many(self, pairs: Iterable[tuple[str, str]]) -> list[Verdict]: ...


def _default_context() -> multiprocessing.context.BaseContext:
    # Never plain fork: the caller may hold threads (engines, HTTP clients) that a forked
    # child would inherit in a broken state.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _stop_pools(pools: Sequence[object]) -> None:
    for pool in pools:
        try:
            pool.stop()  # type: ignore[attr-defined]
            pool.join(timeout=10)  # type: ignore[attr-defined]
        except Exception:  # interpreter shutdown: the pool may already be half gone
            pass


class MathVerifier:
    """Scores replies against gold answers with math-verify in `workers` processes.

    `timeout` is the wall-clock limit for one answer once a worker starts on it (answers
    travel `chunk_size` at a time; `envs.math.dispatch` keeps the limit per answer).
    Replies are reduced to their last ``\\boxed{}`` (or their last `tail_chars` characters when
    unboxed); boxed answers longer than `max_answer_chars` score 0 without being parsed. The
    pool starts on first use; call `close()` (or use ``with``) to stop it, or rely on exit-time
    cleanup.
    Workers start by forkserver (or spawn), so a script that scores at import time needs the
    usual ``if __name__ == "__main__":`` guard.
    """

    def __init__(
        self,
        workers: int = 2,
        timeout: float = DEFAULT_TIMEOUT_S,
        *,
        max_answer_chars: int = DEFAULT_MAX_ANSWER_CHARS,
        tail_chars: int = DEFAULT_TAIL_CHARS,
        cache_size: int = 65_536,
        memory_limit_mb: int | None = DEFAULT_MEMORY_LIMIT_MB,
        integer_fast_path: bool = True,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        mp_context: multiprocessing.context.BaseContext | None = None,
    ):
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.workers = workers
        self.timeout = float(timeout)
        self.max_answer_chars = max_answer_chars
        self.tail_chars = tail_chars
        self.cache_size = cache_size
        self.memory_limit_mb = memory_limit_mb
        self.integer_fast_path = integer_fast_path
        self.chunk_size = chunk_size
        self._mp_context = mp_context or _default_context()
        self._pools: list | None = None  # one single-process pebble pool per worker
        self._progress: list | None = None  # and its shared progress slot
        self._pool_pid: int | None = None
        self._finalizer: weakref.finalize | None = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str, str], Verdict] = OrderedDict()

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> MathVerifier:
        """Start the workers now and wait until each has warmed up."""
        for future in [pool.schedule(worker.ping) for pool in self._ensure_pools()]:
            future.result()
        return self

    def close(self) -> None:
        with self._lock:
            pools, self._pools, self._progress = self._pools, None, None
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
        if pools is not None and self._pool_pid == os.getpid():
            _stop_pools(pools)

    def __enter__(self) -> MathVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __deepcopy__(self, memo: dict) -> MathVerifier:
        # A handle to a shared service: copies of an env (Gymnasium deep-copies make()
        # kwargs) keep using the same pool.
        return self

    def __getstate__(self) -> dict:
        # Pickled into another process (e.g. a remote env worker): settings travel, the pool
        # does not; the receiver starts its own on first use.
        state = self.__dict__.copy()
        state.update(_pools=None, _progress=None, _pool_pid=None, _finalizer=None, _lock=None, _cache=OrderedDict())
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("chunk_size", DEFAULT_CHUNK_SIZE)
        self._lock = threading.Lock()

    def clear_cache(self) -> None:
        """Forget every remembered verdict, here and in the workers' parse/verify memos."""
        with self._lock:
            self._cache.clear()
            pools = list(self._pools or []) if self._pool_pid == os.getpid() else []
        for future in [pool.schedule(worker.clear_caches) for pool in pools]:
            future.result()

    def _ensure_pools(self) -> list:
        """One single-worker pool per worker, so we choose which worker judges which gold."""
        from pebble import ProcessPool

        with self._lock:
            if self._pools is not None and self._pool_pid != os.getpid():
                self._pools = None  # inherited through fork: those pools belong to the parent
            if self._pools is None:
                # One shared [task id, position, start time] slot per worker: the per-answer clock.
                self._progress = [
                    self._mp_context.Array("d", [IDLE, 0.0, 0.0], lock=False) for _ in range(self.workers)
                ]
                self._pools = [
                    ProcessPool(
                        max_workers=1,
                        initializer=worker.init_worker,
                        initargs=(self.memory_limit_mb, slot),
                        context=self._mp_context,
                    )
                    for slot in self._progress
                ]
                self._pool_pid = os.getpid()
                self._finalizer = weakref.finalize(self, _stop_pools, self._pools)
            return self._pools

    # -- scoring ------------------------------------------------------------------------
    def score(self, prediction: str, gold: str) -> Verdict:
        return self.score_many([(prediction, gold)])[0]

    def score_many(self, pairs: Iterable[tuple[str, str]]) -> list[Verdict]:
        """Verdicts in input order; every distinct (answer, gold) goes to math-verify once."""
        pairs = list(pairs)
        verdicts: list[Verdict | None] = [None] * len(pairs)
        pending: dict[tuple[str, str, str], list[int]] = {}
        for i, (prediction, gold) in enumerate(pairs):
            gold = str(gold).strip()
            candidate = answer_candidate(
                prediction, max_answer_chars=self.max_answer_chars, tail_chars=self.tail_chars
            )
            quick = self._without_worker(candidate, gold)
            if quick is not None:
                verdicts[i] = quick
                continue
            key = (candidate.kind.value, candidate.text, gold)
            cached = self._cached(key)
            if cached is not None:
                verdicts[i] = cached
            else:
                pending.setdefault(key, []).append(i)
        if pending:
            for key, verdict in zip(pending, self._run(list(pending)), strict=True):
                for i in pending[key]:
                    verdicts[i] = verdict
        return verdicts  # type: ignore[return-value]

    def _without_worker(self, candidate: Candidate, gold: str) -> Verdict | None:
        """A verdict that needs no parsing: refused input, or two plain integers."""
        if candidate.kind is AnswerKind.EMPTY:
            return Verdict(0.0, None, gold, Reason.NO_ANSWER, via="prefilter")
        if candidate.kind is AnswerKind.TOO_LONG:
            return Verdict(0.0, None, gold, Reason.TOO_LONG, via="prefilter")
        if self.integer_fast_path and candidate.kind is AnswerKind.BOXED:
            answer, expected = plain_integer(candidate.text), plain_integer(gold)
            if answer is not None and expected is not None:
                ok = answer == expected
                return Verdict(float(ok), candidate.text, gold, Reason.MATCH if ok else Reason.MISMATCH, via="integer")
        return None

    def _cached(self, key: tuple[str, str, str]) -> Verdict | None:
        with self._lock:
            verdict = self._cache.get(key)
            if verdict is not None:
                self._cache.move_to_end(key)
            return verdict

    def _remember(self, key: tuple[str, str, str], verdict: Verdict) -> None:
        if verdict.reason in (Reason.TIMEOUT, Reason.WORKER_CRASHED) or verdict.reason.startswith(Reason.ERROR):
            return  # depends on load and luck, not on the answer alone
        with self._lock:
            self._cache[key] = verdict
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _run(self, keys: Sequence[tuple[str, str, str]]) -> list[Verdict]:
        payloads = [(Candidate(AnswerKind(kind), text).for_math_verify(), gold) for kind, text, gold in keys]
        golds = [gold for _, _, gold in keys]
        pools = self._ensure_pools()
        outcomes = run_chunks(pools, worker.judge_many, payloads, golds, self.timeout, self.chunk_size, self._progress)
        verdicts = []
        for key, outcome in zip(keys, outcomes, strict=True):
            gold = key[2]
            if isinstance(outcome, Failed):
                verdict = Verdict(0.0, None, gold, outcome.reason)
                if outcome.reason == Reason.WORKER_CRASHED:
                    log.warning("math verifier worker died (exit code %s); it is replaced", outcome.exitcode)
            elif isinstance(outcome, str):  # the worker caught an exception for this answer
                verdict = Verdict(0.0, None, gold, f"{Reason.ERROR}: {outcome}")
            else:
                ok, shown_pred, shown_gold, pred_parsed, gold_parsed = outcome
                if not gold_parsed:
                    reason = Reason.GOLD_UNPARSABLE
                elif not pred_parsed:
                    reason = Reason.NO_ANSWER
                else:
                    reason = Reason.MATCH if ok else Reason.MISMATCH
                verdict = Verdict(float(ok), shown_pred, shown_gold, reason)
            self._remember(key, verdict)
            verdicts.append(verdict)
        return verdicts


_default: MathVerifier | None = None
_default_lock = threading.Lock()


def default_verifier() -> MathVerifier:
    """The process-wide shared verifier (2 workers, 5 s per answer), closed at exit."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MathVerifier()
            atexit.register(_close_default)
        return _default


def _close_default() -> None:
    global _default
    with _default_lock:
        verifier, _default = _default, None
    if verifier is not None:
        verifier.close()
