"""`certainly_unequal` says "unequal" only when math-verify's `simplify` test would not say equal.

The property that keeps every verdict: ``certainly_unequal(a, b)`` implies
``sympy_symbolic_eq(a, b)`` is False. It is checked on real answers (the bundled competition
golds, parsed by math-verify as the verifier does), on equal pairs built by rewriting each gold
with SymPy (where it must never fire), and on a table of cases chosen to break it.
"""

from __future__ import annotations

import random

import pytest
import sympy as sp
from math_verify import grader, parse

from envs.datasets import load_rows
from envs.math import mvpatch
from envs.math.disproof import certainly_unequal

x, y = sp.symbols("x y")
a, b = sp.symbols("a b", real=True)
n = sp.Symbol("n", integer=True)
neg = sp.Symbol("m", negative=True)

UNEQUAL = [
    (sp.Integer(3000), 16 * sp.pi),
    (2 * a / (2 * b), sp.Integer(1200)),
    (sp.Rational(17, 50), 1 + 2 * sp.sqrt(3)),
    (sp.pi, sp.Rational(22, 7)),  # 0.00126 apart
    (x**1000000, sp.Integer(3)),  # evaluated numerically, no exact power
    (x ** (y * 10**10), sp.Integer(3)),
    (sp.log(x - 2), sp.Integer(0)),  # complex at the point, still a number
    (sp.sqrt(-3), sp.Integer(2)),
    (sp.exp(sp.I * sp.pi * x), sp.Integer(1)),
]
LEFT_TO_SIMPLIFY = [
    (1 / (sp.sqrt(2) - 1), sp.sqrt(2) + 1),  # equal; evalf cannot separate it from zero
    (sp.log(2) + sp.log(3), sp.log(6)),
    (sp.sin(x) ** 2 + sp.cos(x) ** 2, sp.Integer(1)),
    (x**2 - 1, (x - 1) * (x + 1)),
    (sp.sqrt(a**2), sp.Abs(a)),
    (sp.Integer(2), sp.Integer(2)),
    (sp.Float(0.1), sp.Rational(1, 10)),  # Floats are not ours to judge
    (sp.Float(0.5), sp.Integer(3)),
    (sp.cos(sp.pi * n / 3), sp.Integer(2)),  # an integer symbol cannot take a non-integer value
    ((-1) ** (2 * n), sp.Integer(1)),
    (sp.sqrt(neg), sp.Integer(1)),  # nor a negative one a positive value
    (1 / (x - sp.Rational(13, 7)), sp.Integer(0)),  # undefined at the point
    (sp.Integral(x, (x, 0, 1)), sp.Rational(1, 2)),  # bound variable
    (sp.Function("f")(x), sp.Integer(0)),  # not a number at the point
    (sp.Matrix([[1]]), sp.Matrix([[2]])),
    (sp.FiniteSet(1, 2), sp.FiniteSet(1, 3)),
    (sp.Eq(x, 1), sp.Eq(x, 2)),
]


@pytest.mark.parametrize(("left", "right"), UNEQUAL)
def test_a_nonzero_difference_is_proven(left, right):
    assert certainly_unequal(left, right)
    assert certainly_unequal(right, left)
    assert not grader.sympy_symbolic_eq(left, right)  # math-verify agrees, at its full price


@pytest.mark.parametrize(("left", "right"), LEFT_TO_SIMPLIFY)
def test_anything_without_a_proof_goes_to_simplify(left, right):
    assert not certainly_unequal(left, right)


def _golds() -> list[sp.Expr]:
    """Every distinct gold of the bundled competition sets that math-verify parses to an Expr."""
    seen, exprs = set(), []
    for name in ("math500", "aime_2022_2025", "amc23", "hmmt"):
        for row in load_rows(name):
            if row["answer"] in seen:
                continue
            seen.add(row["answer"])
            parsed = parse(f"\\boxed{{{row['answer']}}}")
            if parsed and isinstance(parsed[0], sp.Expr):
                exprs.append(parsed[0])
    return exprs


@pytest.fixture(scope="module")
def golds() -> list[sp.Expr]:
    exprs = _golds()
    assert len(exprs) > 300
    return exprs


def _original_symbolic_eq():
    return mvpatch._originals.get("sympy_symbolic_eq", grader.sympy_symbolic_eq)


def test_it_never_fires_on_equal_rewrites_of_real_golds(golds):
    rewrites = (sp.expand, sp.factor, sp.together, sp.cancel, sp.radsimp,
                lambda e: e * (sp.sqrt(2) + 1) * (sp.sqrt(2) - 1),  # equal, but only simplify sees it
                lambda e: e + sp.log(6) - sp.log(2) - sp.log(3))
    for gold in golds:
        for rewrite in rewrites:
            assert not certainly_unequal(gold, rewrite(gold)), (gold, rewrite)


def test_where_it_fires_on_real_golds_simplify_says_unequal_too(golds):
    rng = random.Random(0)
    pairs = [tuple(rng.sample(golds, 2)) for _ in range(150)]
    symbolic_eq = _original_symbolic_eq()
    fired = [(left, right) for left, right in pairs if certainly_unequal(left, right)]
    assert len(fired) > 0.8 * len(pairs)  # the shortcut does take real wrong answers
    for left, right in fired:
        assert not symbolic_eq(left, right), (left, right)


def test_mvpatch_routes_symbolic_eq_through_the_proof():
    was = bool(mvpatch._originals)
    mvpatch.install()
    try:
        assert grader.sympy_symbolic_eq is mvpatch._symbolic_eq
        assert not grader.sympy_symbolic_eq(sp.Integer(3000), 16 * sp.pi)
        assert grader.sympy_symbolic_eq(1 / (sp.sqrt(2) - 1), sp.sqrt(2) + 1)  # simplify still runs
    finally:
        if not was:
            mvpatch.uninstall()
    assert was or grader.sympy_symbolic_eq is not mvpatch._symbolic_eq
