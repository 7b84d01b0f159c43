"""Answer verification: equivalences, extraction, fast path, and pathological answers."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from envs.datasets import load_rows
from envs.math import worker
from envs.math.extract import AnswerKind, answer_candidate, last_boxed, plain_integer
from envs.math.verify import MathVerifier, Reason, Verdict, default_verifier

TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def verifier():
    with MathVerifier(workers=2, timeout=TIMEOUT_S) as v:
        yield v.start()


EQUIVALENCES = [
    # (reply, gold, expected reward)
    ("The answer is $\\boxed{\\frac{1}{2}}$.", "0.5", 1.0),
    ("\\boxed{0.5}", "\\frac{1}{2}", 1.0),
    ("\\boxed{\\frac12}", "\\frac{1}{2}", 1.0),
    ("\\boxed{\\dfrac{3}{4}}", "\\frac{3}{4}", 1.0),
    ("\\boxed{\\tfrac{3}{4}}", "0.75", 1.0),
    ("so we get \\boxed{42}", "42", 1.0),
    ("The final answer is 42.", "42", 1.0),
    ("Therefore, the answer is $\\frac{7}{3}$.", "\\frac{7}{3}", 1.0),
    ("\\boxed{5\\text{ cm}}", "5", 1.0),
    ("\\boxed{90^\\circ}", "90", 1.0),
    ("\\boxed{50\\%}", "50", 1.0),
    ("\\boxed{1,000}", "1000", 1.0),
    ("\\boxed{1000}", "1,000", 1.0),
    ("\\boxed{007}", "7", 1.0),
    ("\\boxed{(1, 2]}", "(1,2]", 1.0),
    ("\\boxed{[0,\\infty)}", "[0, \\infty)", 1.0),
    ("\\boxed{\\{1, 2, 3\\}}", "\\{3,2,1\\}", 1.0),
    ("\\boxed{2\\sqrt{3}}", "\\sqrt{12}", 1.0),
    ("\\boxed{x^2+2x+1}", "(x+1)^2", 1.0),
    ("\\boxed{\\pi}", "\\pi", 1.0),
    ("\\boxed{3+4i}", "3 + 4i", 1.0),
    ("\\boxed{x=5}", "5", 1.0),
    ("\\boxed{\\text{(B)}}", "B", 1.0),
    ("First \\boxed{3}, but on reflection \\boxed{4}.", "4", 1.0),
    # wrong answers
    ("First \\boxed{3}, but on reflection \\boxed{4}.", "3", 0.0),
    ("\\boxed{41}", "42", 0.0),
    ("\\boxed{\\frac{1}{3}}", "0.5", 0.0),
    ("\\boxed{(1,2)}", "(1,2]", 0.0),
    ("\\boxed{\\{1,2\\}}", "\\{1,2,3\\}", 0.0),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{12}", 0.0),
    ("\\boxed{-5}", "5", 0.0),
    ("I am not sure.", "17", 0.0),
    ("", "17", 0.0),
]


@pytest.mark.parametrize(("reply", "gold", "expected"), EQUIVALENCES)
def test_equivalence_table(verifier, reply, gold, expected):
    verdict = verifier.score(reply, gold)
    assert verdict.reward == expected, verdict
    assert verdict.correct is (expected == 1.0)


def test_score_many_matches_score_and_keeps_order(verifier):
    pairs = [(reply, gold) for reply, gold, _ in EQUIVALENCES]
    verifier.clear_cache()
    batch = verifier.score_many(pairs)
    assert [v.reward for v in batch] == [expected for _, _, expected in EQUIVALENCES]


def test_verdict_fields_explain_the_result(verifier):
    right = verifier.score("\\boxed{\\dfrac{1}{2}}", "0.5")
    assert right.reason == Reason.MATCH and right.via == "math_verify"
    assert right.parsed_prediction == "\\frac{1}{2}" and right.parsed_gold is not None
    wrong = verifier.score("\\boxed{7}", "8")
    assert (wrong.reward, wrong.reason, wrong.via, wrong.parsed_prediction) == (0.0, Reason.MISMATCH, "integer", "7")
    empty = verifier.score("no answer here", "8")
    assert (empty.reward, empty.reason) == (0.0, Reason.NO_ANSWER)


def test_duplicate_pairs_are_judged_once(verifier, monkeypatch):
    sent: list[tuple[str, str, str]] = []
    real_run = verifier._run

    def spy(keys):
        sent.extend(keys)
        return real_run(keys)

    monkeypatch.setattr(verifier, "_run", spy)
    verifier.clear_cache()
    pairs = [("a long derivation... \\boxed{\\frac{2}{3}}", "\\frac{2}{3}")] * 5 + [
        ("other words \\boxed{\\frac{2}{3}}", "\\frac{2}{3}")
    ] * 3
    verdicts = verifier.score_many(pairs)
    assert all(v.reward == 1.0 for v in verdicts)
    assert len(sent) == 1  # same final answer and gold: one math-verify call
    verifier.score_many(pairs)
    assert len(sent) == 1  # cached across calls


def test_works_from_other_threads(verifier):
    # The reason for the pool: math-verify's own signal-based timeout fails off the main thread.
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda g: verifier.score(f"\\boxed{{\\frac{{{g}}}{{7}}}}", f"{g}/7"), range(1, 9)))
    assert all(v.reward == 1.0 for v in results)
    assert threading.current_thread() is threading.main_thread()


# -- extraction --------------------------------------------------------------------------


def test_last_boxed_takes_the_final_box_with_nested_braces():
    reply = "try \\boxed{1} then \\boxed{\\frac{a}{b^{2}}} done"
    assert last_boxed(reply).text == "\\frac{a}{b^{2}}"
    assert last_boxed("\\boxed{\\{1,2\\}}").text == "\\{1,2\\}"
    assert last_boxed("\\fbox{7}").text == "7"
    assert last_boxed("no box") is None


def test_unclosed_final_box_falls_back_to_the_previous_one():
    assert last_boxed("\\boxed{12} and then \\boxed{13").text == "12"


def test_overlong_box_is_refused_and_tail_is_bounded():
    assert last_boxed("\\boxed{" + "1" * 5000 + "}", max_chars=1000).kind is AnswerKind.TOO_LONG
    candidate = answer_candidate("x" * 100_000 + " The answer is 3.", tail_chars=50)
    assert candidate.kind is AnswerKind.TAIL and len(candidate.text) <= 50
    assert candidate.text.endswith("The answer is 3.")
    assert answer_candidate("   ").kind is AnswerKind.EMPTY
    assert answer_candidate("\\boxed{ }").kind is AnswerKind.EMPTY


@pytest.mark.parametrize(
    ("text", "value"),
    [("42", 42), (" -7 ", -7), ("0", 0), ("-0", 0), ("1,000", 1000), ("-12,345,678", -12345678),
     ("1,00", None), ("1,0000", None), ("01,000", None), ("1, 000", None), ("0,123", None), ("007", None),
     ("+5", None), ("4 2", None), ("1e3", None), ("1.0", None), ("9" * 15, int("9" * 15)), ("9" * 16, None),
     ("999,999,999,999,999", 999999999999999), ("1,000,000,000,000,000", None)],
)
def test_plain_integer_is_strict(text, value):
    assert plain_integer(text) == value


# -- fast path agrees with math-verify ---------------------------------------------------


def _integer_sample() -> list[tuple[str, str]]:
    golds = [r["answer"] for name in ("gsm8k_test", "math500", "aime_2022_2025", "dapo_math_17k_subset2000")
             for r in load_rows(name)[:60]]
    golds += ["0", "-0", "-12", "1,000", "007", "123456789012345"]
    pairs = []
    for gold in golds:
        value = plain_integer(gold)
        preds = [gold, "0", "-3", "1000", "007", "1,000", "12,345", "-1,000,000", "1,0", "0,5"]
        if value is not None:
            preds += [str(value + 1), str(-value), str(value * 10), f"{value:,}", f"{value * 1000 + 7:,}"]
        pairs += [(f"\\boxed{{{p}}}", gold) for p in preds]
    return pairs


def test_integer_fast_path_agrees_with_math_verify():
    worker.init_worker(None)
    checked = 0
    for reply, gold in _integer_sample():
        candidate = answer_candidate(reply)
        answer, expected = plain_integer(candidate.text), plain_integer(gold)
        if answer is None or expected is None:
            continue
        direct = worker.judge(candidate.for_math_verify(), gold)[0]
        assert (answer == expected) == direct, (reply, gold)
        checked += 1
    assert checked > 300


def test_fast_path_and_math_verify_give_the_same_rewards(verifier):
    pairs = _integer_sample()[:400]
    with MathVerifier(workers=2, timeout=TIMEOUT_S, integer_fast_path=False) as slow:
        reference = [v.reward for v in slow.score_many(pairs)]
    fast = verifier.score_many(pairs)
    assert [v.reward for v in fast] == reference
    assert sum(v.via == "integer" for v in fast) > 100


# -- pathological answers ----------------------------------------------------------------

ADVERSARIAL = {
    "power tower": "\\boxed{10^{10^{10^{10}}}}",
    "huge factorial": "\\boxed{(10^{10})!}",
    "factorial of a power tower": "\\boxed{(9^{9^{9}})!}",
    "megabyte of text": "reasoning " * 100_000,
    "megabyte ending in a box": "z" * 1_000_000 + "\\boxed{5}",
    "10k nested braces": "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
    "deep nesting under the size limit": "\\boxed{" + "{" * 450 + "1" + "}" * 450 + "}",
    "deep fractions": "\\boxed{" + "\\frac{1}{" * 120 + "2" + "}" * 120 + "}",
    "binary junk with NUL bytes": "\x00\x01\x02\xff\ufffd" * 20_000 + "\\boxed{\x00\x07}",
    "lone surrogates": "\\boxed{\ud800\udfff}",
    "many boxes": "\\boxed{" * 50_000,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_pathological_answer_scores_zero_within_the_timeout(verifier, name):
    gold = "123456789"  # none of the inputs equals it, so every verdict must be 0
    started = time.monotonic()
    verdict = verifier.score(ADVERSARIAL[name], gold)
    elapsed = time.monotonic() - started
    assert verdict.reward == 0.0
    assert elapsed < TIMEOUT_S + 5, f"{name} took {elapsed:.1f}s"
    assert verifier.score("\\boxed{\\frac{1}{4}}", "0.25").reward == 1.0  # the pool still works


@pytest.mark.slow
def test_timeouts_are_recorded_and_not_cached(verifier):
    tower = ADVERSARIAL["power tower"]
    first = verifier.score(tower, "7")
    assert (first.reward, first.reason) == (0.0, Reason.TIMEOUT)
    assert verifier._cached(("boxed", "10^{10^{10^{10}}}", "7")) is None


@pytest.mark.slow
def test_a_batch_mixing_hangs_and_normal_answers(verifier):
    pairs = [(ADVERSARIAL["power tower"], "1"), ("\\boxed{\\frac{3}{9}}", "\\frac13"), ("\\boxed{2}", "2"),
             (ADVERSARIAL["huge factorial"], "1"), ("\\boxed{\\sqrt{4}}", "2")]
    started = time.monotonic()
    verdicts = verifier.score_many(pairs)
    assert [v.reward for v in verdicts] == [0.0, 1.0, 1.0, 0.0, 1.0]
    # Both hangs share a gold answer, so they queue on its home worker: two timeouts and two
    # worker restarts at most, while the other answers finish on the other worker.
    assert time.monotonic() - started < 2 * TIMEOUT_S + 10


@pytest.mark.slow
def test_a_killed_worker_is_replaced():
    with MathVerifier(workers=1, timeout=30) as lone:
        lone.start()
        worker_pid = lone._ensure_pools()[0].schedule(worker.ping).result()  # the only worker
        result: list[Verdict] = []
        thread = threading.Thread(target=lambda: result.append(lone.score(ADVERSARIAL["power tower"], "1")))
        thread.start()
        time.sleep(1.0)  # the worker is now stuck in SymPy
        os.kill(worker_pid, signal.SIGKILL)
        thread.join(timeout=20)
        assert result and (result[0].reward, result[0].reason) == (0.0, Reason.WORKER_CRASHED)
        assert lone.score("\\boxed{\\frac{1}{2}}", "0.5").reward == 1.0
        assert lone._ensure_pools()[0].schedule(worker.ping).result() != worker_pid


def test_default_verifier_is_shared():
    assert default_verifier() is default_verifier()


def test_prefilter_needs_no_worker():
    lazy = MathVerifier(workers=1, timeout=1.0)
    verdicts = lazy.score_many([("\\boxed{12}", "12"), ("\\boxed{" + "9" * 5000 + "}", "1"), ("", "3")])
    assert [(v.reward, v.reason) for v in verdicts] == [
        (1.0, Reason.MATCH), (0.0, Reason.TOO_LONG), (0.0, Reason.NO_ANSWER)]
    assert lazy._pools is None  # nothing needed a worker
    lazy.close()


def test_gold_groups_are_spread_over_workers():
    from envs.math.dispatch import assign_to_workers

    one_problem = assign_to_workers({"42": 64}, 2)  # 64 samples of one problem still use both workers
    assert sorted(sum(n for _, n in share) for share in one_problem) == [32, 32]
    many = assign_to_workers({f"g{i}": 3 for i in range(40)}, 2)
    loads = [sum(n for _, n in share) for share in many]
    assert sum(loads) == 120 and max(loads) <= 60
    assert assign_to_workers({"7": 2, "9": 1}, 2) == assign_to_workers({"7": 2, "9": 1}, 2)  # stable homes
