"""Prove two SymPy expressions unequal by evaluating their difference, before `simplify` runs.

Why: math-verify's last resort for two expressions is ``simplify(a - b).is_zero``. On a wrong
answer (``16*pi`` against ``3000``, ``2a/(2b)`` against ``1200``) that `simplify` is the most
expensive step of a whole verification (10-150 ms), and it can only say "not equal".

`certainly_unequal` says "unequal" only with a proof, so it cannot change a verdict:

- the difference is built from a small set of exact node types (rationals, pi, E, I,
  symbols, +, *, ** and elementary functions), with no Float (whose rounding `simplify` may
  treat differently) and no bound variables (integrals, sums, limits);
- every free symbol gets a distinct positive non-integer rational value that has every
  property the symbol was declared with (math-verify declares its symbols real; a difference
  with an integer symbol is left alone), and the difference is evaluated there numerically
  with `evalf`'s ``subs``, so ``x**1000000`` costs no exact power;
- SymPy's `evalf` with ``strict=True`` gives the value to 30 digits or raises: a value that
  comes back nonzero is nonzero.

A difference that is nonzero at one point of its domain is not identically zero, and
`simplify` only rewrites an expression into one equal to it wherever both are defined (a
symbol may be any value its assumptions allow), so ``simplify(a - b).is_zero`` would
not be True. Everything else (a zero at the point, no reliable digits, an undefined point, a
node outside the list) goes to math-verify unchanged.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

DIGITS = 30
POINTS = ((13, 7), (17, 11), (23, 19), (29, 13), (31, 17), (37, 23), (41, 29), (43, 31))
"""Distinct positive non-integer rationals p/q, one per free symbol (at most this many symbols)."""


@lru_cache(maxsize=1)
def _allowed_types() -> tuple[type, ...]:
    import sympy as sp
    from sympy.core.numbers import ImaginaryUnit

    functions = (sp.exp, sp.log, sp.sin, sp.cos, sp.tan, sp.cot, sp.sec, sp.csc, sp.Abs)
    return (sp.Add, sp.Mul, sp.Pow, sp.Rational, sp.NumberSymbol, ImaginaryUnit, *functions)


def _exact(expr: Any) -> bool:
    """Only the node types above, and plain `Symbol`s (no bound variables, no `Dummy`)."""
    import sympy as sp

    allowed = _allowed_types()
    return all(type(node) is sp.Symbol or (isinstance(node, allowed) and not isinstance(node, sp.Float))
               for node in sp.preorder_traversal(expr))


def _admits(symbol: Any, value: Any) -> bool:
    """The value has every property the symbol was declared with (math-verify's are real)."""
    return all(getattr(value, f"is_{name}") == truth for name, truth in symbol.assumptions0.items())


def certainly_unequal(a: Any, b: Any) -> bool:
    """True only when ``a - b`` is provably nonzero (see the module docstring); never raises."""
    import sympy as sp

    try:
        if not (isinstance(a, sp.Expr) and isinstance(b, sp.Expr)):
            return False
        difference = a - b
        if not _exact(difference):
            return False
        symbols = sorted(difference.free_symbols, key=lambda s: s.name)
        if len(symbols) > len(POINTS):
            return False
        point = {s: sp.Rational(p, q) for s, (p, q) in zip(symbols, POINTS)}
        if not all(_admits(symbol, value) for symbol, value in point.items()):
            return False  # an integer, negative or imaginary symbol: the point is outside its domain
        value = difference.evalf(DIGITS, subs=point, strict=True)
        if value.free_symbols or not value.is_number:
            return False
        return any(isinstance(part, sp.Float) and part.is_finite and part != 0 for part in value.as_real_imag())
    except Exception:  # PrecisionExhausted, an undefined point, anything SymPy cannot evaluate
        return False
