"""Three exact speed-ups inside math-verify, installed in verifier workers only.

Why: after extraction and de-duplication, a worker's time goes to LaTeX parsing and SymPy.
Three parts of that are waste that changes no result:

- math-verify memoises its LaTeX-to-SymPy conversion (an ANTLR parse, often with full-context
  prediction) for its last 20 strings only, so a final expression that many unboxed replies
  end with is converted again and again. We give that same memo room for a batch; it is a
  pure function of the string, and `clear` empties it with the workers' other memos.
- math-verify and latex2sympy turn every number token into SymPy with ``Number(text)``, which
  runs SymPy's full expression parser (about 0.5 ms) even for ``"42"``. For a string of ASCII
  digits that is exactly ``Integer(int(text))``; anything else still takes the original path.
- math-verify's last test of two expressions, ``simplify(a - b).is_zero``, runs only when the
  difference is not proven nonzero first by evaluating it (`envs.math.disproof`); a wrong
  answer then costs well under a millisecond there instead of 10-150 ms.

`install` is idempotent and `uninstall` restores the originals (the tests compare both).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from envs.math.disproof import certainly_unequal

LATEX_CACHE_SIZE = 4096
ASCII_DIGITS = re.compile(r"[0-9]{1,100}")
"""Short enough that no int/str conversion limit applies on either path."""

_originals: dict[str, Any] = {}


def sympy_number(text: Any) -> Any:
    """``sympy.Number(text)``: the same value and type, without SymPy's parser for "42"."""
    from sympy import Integer, Number

    if isinstance(text, str) and ASCII_DIGITS.fullmatch(text) and (text[0] != "0" or text == "0"):
        return Integer(int(text))  # Number("007") raises, so leading zeros take the original path
    return Number(text)


def _parse_number(self: Any, text: str) -> Any:
    """latex2sympy's `parse_number` (drop commas, strip leading zeros, `Number`), sped up."""
    from sympy import Integer

    digits = text.replace(",", "")
    if ASCII_DIGITS.fullmatch(digits):
        return Integer(int(digits))
    return _originals["parse_number"](self, text)


def _symbolic_eq(a: Any, b: Any) -> bool:
    """math-verify's `sympy_symbolic_eq`, skipped where the difference is proven nonzero."""
    if certainly_unequal(a, b):
        return False
    return _originals["sympy_symbolic_eq"](a, b)


def install(latex_cache_size: int = LATEX_CACHE_SIZE) -> bool:
    """Install both speed-ups where this math-verify/latex2sympy has the expected hooks.

    Returns whether anything is installed. A library version without a hook keeps its own code.
    """
    import sympy
    from latex2sympy2_extended import latex2sympy2 as l2s
    from math_verify import grader, parser

    if _originals:
        return True
    memo = getattr(parser, "parse_latex_cached", None)
    if getattr(memo, "__wrapped__", None) is not None and hasattr(memo, "cache_info"):
        maxsize = memo.cache_info().maxsize
        if maxsize is not None and maxsize < latex_cache_size:
            _originals["parse_latex_cached"] = memo
            parser.parse_latex_cached = lru_cache(maxsize=latex_cache_size)(memo.__wrapped__)
    if getattr(parser, "Number", None) is sympy.Number:
        _originals["parser.Number"] = parser.Number
        parser.Number = sympy_number
    if getattr(l2s, "Number", None) is sympy.Number:
        _originals["l2s.Number"] = l2s.Number
        l2s.Number = sympy_number
    if callable(getattr(grader, "sympy_symbolic_eq", None)):
        _originals["sympy_symbolic_eq"] = grader.sympy_symbolic_eq
        grader.sympy_symbolic_eq = _symbolic_eq
    converter = getattr(l2s, "_Latex2Sympy", None)
    if converter is not None and callable(getattr(converter, "parse_number", None)):
        _originals["parse_number"] = converter.parse_number
        converter.parse_number = _parse_number
    return bool(_originals)


def uninstall() -> None:
    """Put math-verify and latex2sympy back as they were."""
    from latex2sympy2_extended import latex2sympy2 as l2s
    from math_verify import grader, parser

    if "parse_latex_cached" in _originals:
        parser.parse_latex_cached = _originals["parse_latex_cached"]
    if "parser.Number" in _originals:
        parser.Number = _originals["parser.Number"]
    if "l2s.Number" in _originals:
        l2s.Number = _originals["l2s.Number"]
    if "sympy_symbolic_eq" in _originals:
        grader.sympy_symbolic_eq = _originals["sympy_symbolic_eq"]
    if "parse_number" in _originals:
        l2s._Latex2Sympy.parse_number = _originals["parse_number"]
    _originals.clear()


def clear() -> None:
    """Empty math-verify's LaTeX memo (ours when installed, its own otherwise)."""
    from math_verify import parser

    memo = getattr(parser, "parse_latex_cached", None)
    if hasattr(memo, "cache_clear"):
        memo.cache_clear()
