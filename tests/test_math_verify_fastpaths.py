"""The verifier's speed-ups change no verdict: `mvpatch` against plain math-verify, the chunked
dispatch against one task per answer, and the whole pool against math-verify called directly."""

from __future__ import annotations

import itertools
import random
import threading
import time
from concurrent.futures import Future

import pytest
import sympy

from envs.math import mvpatch, worker
from envs.math.dispatch import Failed, plan_chunks, run_chunks
from envs.math.verify import MathVerifier, Reason

NUMBER_STRINGS = [
    "0", "00", "000", "007", "0042", "42", "-5", "+5", "1,000", "1,0", "0,5", "12,345,678", " 42", "42 ",
    "9" * 15, "9" * 16, "1" + "0" * 99, "1" + "0" * 100, "1" + "0" * 5000, "3.14", ".5", "5.", "0.0", "1e5",
    "1E5", "1_000", "0x1F", "inf", "nan", "", "\u0661\u0662\u0663", "\u00b2", "\uff14\uff12", "12\u00b2", "4 2",
]


@pytest.fixture()
def patched():
    """`mvpatch` installed for the test, then the state the process had before."""
    was = bool(mvpatch._originals)
    mvpatch.install()
    yield
    if not was:
        mvpatch.uninstall()


def _outcome(call, *args):
    try:
        value = call(*args)
    except Exception as exc:  # the exception type is part of what must agree
        return ("raises", type(exc).__name__)
    return ("value", type(value).__name__, sympy.srepr(value))


@pytest.mark.parametrize("text", NUMBER_STRINGS)
def test_sympy_number_is_number(text):
    assert _outcome(mvpatch.sympy_number, text) == _outcome(sympy.Number, text)


@pytest.mark.parametrize("text", NUMBER_STRINGS)
def test_parse_number_is_latex2sympys(text, patched):
    from latex2sympy2_extended import latex2sympy2 as l2s

    converter = l2s._Latex2Sympy.__new__(l2s._Latex2Sympy)
    assert _outcome(lambda t: mvpatch._parse_number(converter, t), text) == _outcome(
        lambda t: mvpatch._originals["parse_number"](converter, t), text
    )


# (reply text as a worker sees it, gold): numbers in every form the parsers meet, and LaTeX.
JUDGED = [
    (f"\\boxed{{{a}}}", g)
    for a, g in itertools.product(
        ["42", "0042", "007", "0", "-0", "1,000", "1,0", "0,5", "1, 000", "12,345", "3.0", "3.14", ".5", "5.",
         "50\\%", "42\\%", "0.42", "1e5", "10^{3}", "2^{10}", "\\frac{84}{2}", "42\\text{ cm}", "x = 42",
         "\\{1,2,3\\}", "(1,2]", "[0,\\infty)", "3,4", "1,234", "1,234,567", "9" * 20, "1" + "0" * 120,
         "\u0664\u0662", "4\u00b2", "\\sqrt{1764}", "6 \\cdot 7", "\\dfrac{1}{2}", "x^2+1"],
        ["42", "0.42", "1000", "1,000", "\\frac{1}{2}", "\\{1,2,3\\}", "1234", "(1,2]", "x^2+1"],
    )
] + [
    ("The final answer is 42.", "42"),
    ("So 12 + 30 = 42 units in total.", "42"),
    ("we get 0042 apples and 007 pears", "7"),
    ("Therefore the answer is 1,000 dollars.", "1000"),
    ("It costs $5.40, so 5.4 in all", "5.4"),
    ("The roots are $x = -2$ and $x = 3$.", "\\{-2, 3\\}"),
    ("giving $x = 6$ after simplifying.\n\nI need to reconsider", "6"),
    ("Next, $\\frac{a}{b} = \\frac{2a}{2b}$, so the ratio is fixed.", "1"),
    ("Adding gives 12 + 30 = 42 units", "43"),
    ("the area is $16\\pi$ square units", "16\\pi"),
    ("We need 90% of 200, that is 180", "180"),
    ("so $\\boxed{1,000}$", "1000"),
]


@pytest.mark.slow
def test_mvpatch_changes_no_parse_and_no_verdict():
    worker.init_worker(None)
    mvpatch.uninstall()
    try:
        plain = []
        for text, gold in JUDGED:
            worker.clear_caches()
            plain.append((worker.judge(text, gold), _outcome(lambda t: worker.parse_prediction(t), text)))
        assert mvpatch.install()
        assert len(mvpatch._originals) == 5  # every hook found: a math-verify upgrade must re-check this test
        for keep_latex_memo in (False, True):  # cold, then with the memo holding every string
            for (text, gold), expected in zip(JUDGED, plain, strict=True):
                worker.parse_answer.cache_clear()
                worker._verify_cached.cache_clear()
                if not keep_latex_memo:
                    mvpatch.clear()
                got = (worker.judge(text, gold), _outcome(lambda t: worker.parse_prediction(t), text))
                assert got == expected, (text, gold)
    finally:
        mvpatch.install()
    assert sum(verdict[0] for verdict, _ in plain) > 20  # the table holds matches, not only mismatches


def test_latex_memo_is_emptied_with_the_other_memos(patched):
    from math_verify import parser

    worker.judge("\\boxed{\\frac{3}{7}}", "\\frac{3}{7}")
    assert parser.parse_latex_cached.cache_info().currsize > 0
    assert parser.parse_latex_cached.cache_info().maxsize >= mvpatch.LATEX_CACHE_SIZE
    worker.clear_caches()
    assert parser.parse_latex_cached.cache_info().currsize == 0


# -- dispatch ----------------------------------------------------------------------------


class FakePool:
    """A single-worker pool run by a thread: tasks in order, one at a time, optional delay."""

    def __init__(self, delay: float = 0.0):
        self.delay, self.chunks, self._lock = delay, [], threading.Lock()

    def schedule(self, task, args=(), timeout=None):
        future: Future = Future()

        def run():
            with self._lock:
                self.chunks.append(list(args[0]))
                time.sleep(self.delay * len(args[0]))
                try:
                    future.set_result(task(*args))
                except Exception as exc:
                    future.set_exception(exc)

        threading.Thread(target=run, daemon=True).start()
        return future


def test_plan_keeps_each_gold_together_and_covers_every_answer():
    golds = [f"g{i % 13}" for i in range(200)]
    queues = plan_chunks(golds, 2, 8)
    seen = sorted(i for queue in queues for chunk in queue for i in chunk)
    assert seen == list(range(200))
    assert all(len(chunk) <= 8 for queue in queues for chunk in queue)
    homes = {golds[i]: w for w, queue in enumerate(queues) for chunk in queue for i in chunk}
    assert len(homes) == 13 and sum(1 for w in homes.values() if w == 0) not in (0, 13)


def test_run_chunks_returns_results_in_order_and_an_idle_worker_steals():
    slow, fast = FakePool(delay=0.01), FakePool()
    golds = [f"g{i % 10}" for i in range(80)]
    planned_for_fast = sum(map(len, plan_chunks(golds, 2, 4)[1]))
    results = run_chunks([slow, fast], lambda chunk, task_id: [x * 2 for x in chunk], list(range(80)), golds, 5.0, 4)
    assert results == [x * 2 for x in range(80)]
    assert sum(map(len, fast.chunks)) > planned_for_fast  # it took chunks queued for the slow one


def test_a_failed_chunk_is_judged_again_one_answer_per_task():
    pool = FakePool()

    def task(chunk, task_id):
        if len(chunk) > 1 and "bad" in chunk:
            raise MemoryError
        if chunk == ["bad"]:
            raise ValueError("only this one")
        return [x.upper() for x in chunk]

    payloads = ["a", "bad", "b", "c", "d", "e", "f", "g"]  # the first chunk holds "a" and "bad"
    results = run_chunks([pool], task, payloads, ["g"] * len(payloads), 5.0, 8)
    assert results == ["A", Failed("error: ValueError"), "B", "C", "D", "E", "F", "G"]
    assert ["a", "bad"] in pool.chunks and ["a"] in pool.chunks and ["bad"] in pool.chunks
    assert sum(map(len, pool.chunks)) == len(payloads) + 2


class StoppableFuture(Future):
    """A future whose `cancel` also stops a running task, as pebble's does by killing the worker."""

    def __init__(self):
        super().__init__()
        self.stop = threading.Event()

    def cancel(self):
        if self.done():
            return False
        self.stop.set()
        self.set_exception(RuntimeError("stopped"))  # the dispatcher drops it without reading
        return True


class ReportingPool:
    """A one-worker fake that writes the progress slot as each answer starts; "hang" never ends."""

    def __init__(self):
        self.slot, self.started, self._lock = [-1.0, 0.0, 0.0], [], threading.Lock()

    def schedule(self, task, args=(), timeout=None):
        future, (chunk, task_id) = StoppableFuture(), args

        def run():
            with self._lock:
                results = []
                for position, item in enumerate(chunk):
                    if future.stop.is_set():
                        return
                    self.slot[2], self.slot[1], self.slot[0] = time.monotonic(), position, task_id
                    self.started.append(item)
                    while item == "hang" and not future.stop.wait(0.01):
                        pass
                    results.append(item.upper())
                if not future.done():
                    future.set_result(results)

        threading.Thread(target=run, daemon=True).start()
        return future


def test_an_overdue_answer_is_stopped_alone_and_the_rest_of_its_chunk_runs_again():
    pool = ReportingPool()
    payloads = ["a", "b", "hang", "c", "d", "e", "f", "g", "h", "i", "j", "k"]
    started = time.monotonic()
    results = run_chunks([pool], None, payloads, ["g"] * len(payloads), 0.3, 8, progress=[pool.slot])
    elapsed = time.monotonic() - started
    assert results == ["A", "B", Failed("timeout"), "C", "D", "E", "F", "G", "H", "I", "J", "K"]
    assert pool.started.count("hang") == 1  # it cost the limit once, not once per chunk and once alone
    assert pool.started.count("a") == 2 and pool.started.count("c") == 1  # the chunk's rest runs again, once
    assert 0.3 <= elapsed < 0.3 * 2


@pytest.mark.slow
def test_a_hang_in_a_chunk_costs_only_its_own_answer():
    limit = 4.0
    tower = "\\boxed{10^{10^{10^{10}}}}"
    normal = [(f"\\boxed{{{n}/{2 * n}}}", "0.5") for n in range(1, 25)]
    pairs = normal[:1] + [(tower, "0.5")] + normal[1:]  # the tower sits in the first chunk of 6
    with MathVerifier(workers=1, timeout=limit) as verifier:
        verifier.start()
        started = time.monotonic()
        verdicts = verifier.score_many(pairs)
        elapsed = time.monotonic() - started
    assert [v.reward for v in verdicts] == [1.0, 0.0] + [1.0] * 23
    assert verdicts[1].reason == Reason.TIMEOUT
    # One limit for the tower plus a worker restart; judging the chunk whole and then the tower
    # alone would take two limits.
    assert elapsed < 2 * limit


# -- the pool against math-verify called directly ----------------------------------------


def _rollout_like_pairs(seed: int = 1, problems: int = 24, samples: int = 6) -> list[tuple[str, str]]:
    from envs.datasets import load_rows

    rng = random.Random(seed)
    golds = [r["answer"] for name in ("math500", "gsm8k_test", "dapo_math_17k_subset2000")
             for r in rng.sample(list(load_rows(name)), problems // 3)]
    steps = ["so $3x + 5 = 2x + 11$ and $x = 6$.", "Then $\\frac{a}{b} = \\frac{2a}{2b}$.", "This gives 12 + 30 = 42.",
             "The area is $16\\pi$.", "Roots: $x = -2$ and $x = 3$.", "We have 0042 items and 1,000 more."]
    endings = ["So the answer is $\\boxed{{{g}}}$.", "The final answer is ${g}$.", "\\boxed{{ {g} }}",
               "Therefore $\\boxed{{{w}}}$.", "The final answer is {w}.", "I need to reconsider", "\\boxed{{{g}.0}}"]
    pairs = []
    for gold in golds:
        wrong = rng.choice([g for g in golds if g != gold])
        for _ in range(samples):
            reasoning = " ".join(rng.choices(steps, k=rng.randint(2, 8)))
            pairs.append((reasoning + "\n" + rng.choice(endings).format(g=gold, w=wrong), gold))
    return pairs


def test_pool_agrees_with_math_verify_called_directly():
    from math_verify import parse, verify

    pairs = _rollout_like_pairs()
    mvpatch.uninstall()
    direct = [float(verify(parse(f"\\boxed{{{gold}}}"), parse(reply))) for reply, gold in pairs]
    with MathVerifier(workers=2, timeout=10.0, chunk_size=3) as verifier:
        ours = [v.reward for v in verifier.score_many(pairs)]
    assert ours == direct
    assert 0.2 < sum(direct) / len(direct) < 0.8
