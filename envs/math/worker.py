"""What runs inside a verifier worker process: math-verify with its own timeouts off.

math-verify's `parse`/`verify` enforce their timeouts with `signal.alarm`, which only works on
the main thread and cannot stop a computation stuck in C. Here both are called with
``parsing_timeout=None`` / ``timeout_seconds=None``; the parent enforces the time limit by
killing the whole worker process (see `envs.math.verify`).
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from envs.math import mvpatch

PARSE_CACHE_SIZE = 8192
VERIFY_CACHE_SIZE = 16384


def _extraction_config() -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    # Boxed answers first, then any LaTeX, then plain expressions such as "1/2" or "42".
    return [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]


@lru_cache(maxsize=1)
def _config() -> tuple[Any, ...]:
    return tuple(_extraction_config())


@lru_cache(maxsize=PARSE_CACHE_SIZE)
def parse_answer(text: str) -> list[Any]:
    """math-verify's `parse`, memoised on the text.

    Golds and boxed replies are both parsed as ``\\boxed{...}`` with one configuration, so a
    reply that states the gold verbatim reuses the gold's parse.
    """
    from math_verify import parse

    return parse(text, extraction_config=_config(), parsing_timeout=None)


def parse_gold(gold: str) -> list[Any]:
    return parse_answer(f"\\boxed{{{gold}}}")


def parse_prediction(text: str) -> list[Any]:
    return parse_answer(text)


def shown(parsed: list[Any]) -> str | None:
    """The extracted answer text math-verify kept next to its SymPy value.

    We return that string, never ``str(expr)``: printing a huge SymPy integer can itself take
    longer than the timeout.
    """
    return next((item for item in parsed if isinstance(item, str)), None)


@lru_cache(maxsize=VERIFY_CACHE_SIZE)
def _verify_cached(gold_parsed: tuple[Any, ...], pred_parsed: tuple[Any, ...]) -> bool:
    from math_verify import verify

    return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=None))


def equivalent(gold_parsed: list[Any], pred_parsed: list[Any]) -> bool:
    """math-verify's `verify`, memoised on the parsed values.

    Different replies often reduce to the same parsed answer (the same wrong number stated in
    different words); `verify` is a pure function of the parsed values, so its result is
    reused. Unhashable values (SymPy matrices) skip the memo.
    """
    if not gold_parsed or not pred_parsed:
        return False
    try:
        return _verify_cached(tuple(gold_parsed), tuple(pred_parsed))
    except TypeError:  # unhashable
        from math_verify import verify

        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def judge(text: str, gold: str) -> tuple[bool, str | None, str | None, bool, bool]:
    """(equivalent, shown prediction, shown gold, prediction parsed?, gold parsed?)."""
    gold_parsed = parse_gold(gold)
    pred_parsed = parse_prediction(text)
    ok = equivalent(gold_parsed, pred_parsed)
    return ok, shown(pred_parsed), shown(gold_parsed), bool(pred_parsed), bool(gold_parsed)


_progress: Any = None
"""This worker's shared slot (see `report_start`), or None when the parent gave none."""


def report_start(task_id: int, position: int) -> None:
    """Tell the parent which answer starts now: ``[task_id, position, time.monotonic()]``.

    The start time is written first and the task id last, so a read that falls between the
    writes can only see a later start for an earlier answer: never an answer overdue too soon.
    """
    if _progress is not None:
        _progress[2] = time.monotonic()
        _progress[1] = position
        _progress[0] = task_id


def judge_many(
    items: Sequence[tuple[str, str]], task_id: int = -1
) -> list[tuple[bool, str | None, str | None, bool, bool] | str]:
    """`judge` for each (text, gold) of a chunk; an answer whose judging raised gets its
    exception's type name instead, so one bad answer does not lose the chunk."""
    results: list[tuple[bool, str | None, str | None, bool, bool] | str] = []
    for position, (text, gold) in enumerate(items):
        report_start(task_id, position)
        try:
            results.append(judge(text, gold))
        except Exception as exc:  # a bug or resource error inside math-verify/SymPy
            results.append(type(exc).__name__)
    return results


def init_worker(memory_limit_mb: int | None, progress: Any = None) -> None:
    """Worker start-up: cap memory, keep the progress slot, silence math-verify's "timeout
    disabled" warning, install `mvpatch`, warm up.

    Warming up (imports, regex compilation, the first SymPy parse) here keeps that one-off
    second out of the first answer's time limit.
    """
    if memory_limit_mb:
        limit = memory_limit_mb * 1024 * 1024
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ValueError, OSError):  # a lower hard limit already applies
            pass
    global _progress
    _progress = progress
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    mvpatch.install()
    judge("\\frac{1}{2}", "0.5")
    judge("x^2+1", "1+x^2")


def clear_caches() -> None:
    """Forget parsed answers, converted LaTeX and verify results (compiled regexes, parser
    tables and SymPy's own cache stay warm)."""
    for cached in (parse_answer, _verify_cached):
        cached.cache_clear()
    mvpatch.clear()


def ping() -> int:
    """A no-op task, used to wait until every worker has started."""
    import os

    return os.getpid()
