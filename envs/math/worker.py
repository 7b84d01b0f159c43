"""What runs inside a verifier worker process: math-verify with its own timeouts off.

math-verify's `parse`/`verify` enforce their timeouts with `signal.alarm`, which only works on
the main thread and cannot stop a computation stuck in C. Here both are called with
``parsing_timeout=None`` / ``timeout_seconds=None``; the parent enforces the time limit by
killing the whole worker process (see `envs.math.verify`).
"""

from __future__ import annotations

import logging
import resource
from functools import lru_cache
from typing import Any

GOLD_CACHE_SIZE = 4096
PRED_CACHE_SIZE = 4096
VERIFY_CACHE_SIZE = 16384


def _extraction_config() -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    # Boxed answers first, then any LaTeX, then plain expressions such as "1/2" or "42".
    return [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]


@lru_cache(maxsize=1)
def _config() -> tuple[Any, ...]:
    return tuple(_extraction_config())


@lru_cache(maxsize=GOLD_CACHE_SIZE)
def parse_gold(gold: str) -> list[Any]:
    from math_verify import parse

    return parse(f"\\boxed{{{gold}}}", extraction_config=_config(), parsing_timeout=None)


@lru_cache(maxsize=PRED_CACHE_SIZE)
def parse_prediction(text: str) -> list[Any]:
    from math_verify import parse

    return parse(text, extraction_config=_config(), parsing_timeout=None)


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


def init_worker(memory_limit_mb: int | None) -> None:
    """Worker start-up: cap memory, silence math-verify's "timeout disabled" warning, warm up.

    Warming up (imports, regex compilation, the first SymPy parse) here keeps that one-off
    second out of the first answer's time limit.
    """
    if memory_limit_mb:
        limit = memory_limit_mb * 1024 * 1024
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ValueError, OSError):  # a lower hard limit already applies
            pass
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    judge("\\frac{1}{2}", "0.5")
    judge("x^2+1", "1+x^2")


def clear_caches() -> None:
    """Forget parsed answers and verify results (parsers' own warm state is kept)."""
    for cached in (parse_gold, parse_prediction, _verify_cached):
        cached.cache_clear()


def ping() -> int:
    """A no-op task, used to wait until every worker has started."""
    import os

    return os.getpid()
