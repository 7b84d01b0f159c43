"""The retrieval server under abuse: memory, deadlines and normal service, on loopback only.

`espl-bench retriever serve` runs in its own process on the bundled corpus's bm25s index,
with its default limits and ``--log-level debug``. Against it, at once, for about 35 s
(`envs.retrieval.abuse`):

- 8 clients that each keep 2 connections, send on each the request that once built a
  311 MB reply (4096 queries x topk 100, now a 413) and then the largest request the server
  admits (topk 100, as many queries as fit ``--max-reply-bytes``), and never read a reply;
- 200 half-sent requests: 100 with half their headers, 100 with their headers and half
  their body, each timed until the server closes it;
- a normal client sending single-query requests (topk 3) one after another, timed;
- psutil sampling the server process's resident memory every 20 ms.

Checked: peak RSS under `RSS_CAP_MIB`; every half-sent request closed within its read
deadline (10 s for headers, 30 s for a body) plus a second; every normal query answered;
no traceback or error line in the server's log. ``extra_info`` holds the figures (`Report.summary`) and
the server log's counts of connections it closed or cut.

    .venv/bin/python -m pytest benchmarks/test_retrieval_abuse.py --benchmark-only -q -s

``ESPL_BENCH_QUICK=1`` runs it with 1-2 s deadlines (about 10 s in all).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.workers.runtime import QUICK
from envs.datasets import load_rows
from envs.retrieval.abuse import Scenario, run_abuse
from envs.retrieval.local import ServerProcess
from envs.retrieval.searcher import open_builtin_index
from envs.retrieval.wire import Limits

RSS_CAP_MIB = 1024
"""The stated cap: the index and corpus (about 230 MiB) plus at most 256 MiB of pending
requests and replies, and the parsing and encoding transients around them."""
SLACK_S = 1.0
"""How long after its deadline a close may be observed (the event loop is shared with 8 hogs)."""


def deadlines() -> Limits:
    if QUICK:
        return Limits(header_timeout_s=1.0, body_timeout_s=2.0, write_timeout_s=2.0)
    return Limits()


def test_abuse_of_the_server(benchmark, machine_load, tmp_path: Path) -> None:
    limits = deadlines()
    index = open_builtin_index("bm25s").directory
    log_path = tmp_path / "server.log"
    args = ["--log-level", "debug", "--header-timeout", str(limits.header_timeout_s),
            "--body-timeout", str(limits.body_timeout_s), "--write-timeout", str(limits.write_timeout_s)]
    questions = [row["question"] for row in load_rows("hotpotqa_dev_distractor")]
    scenario = Scenario(hog_hold_s=limits.write_timeout_s + 2, min_duration_s=limits.write_timeout_s + 3)
    server = ServerProcess.start(index, args=args, log_path=log_path, timeout_s=120)
    try:
        report = benchmark.pedantic(run_abuse, args=(server.url, server.process.pid, questions, scenario),
                                    rounds=1, iterations=1)
    finally:
        server.stop()
    log = log_path.read_text(errors="replace")
    summary = report.summary()
    summary.update({
        "rss_cap_mib": RSS_CAP_MIB,
        "tracebacks": log.count("Traceback"),
        "error_lines": log.count("ERROR"),
        "server_closed_slow_requests": log.count("closed the connection"),
        "server_cut_unread_replies": log.count("cut the connection"),
        "client_disconnects_logged": log.count("disconnected before its request body"),
        "normal_statuses": {str(k): v for k, v in report.normal_statuses.items()},
    })
    benchmark.extra_info.update(summary)
    print("\nabuse: " + " ".join(f"{key}={value}" for key, value in summary.items()))
    assert summary["tracebacks"] == summary["error_lines"] == 0, log[-3000:]
    assert report.peak_rss_mib < RSS_CAP_MIB
    assert report.half_sent_left_open == 0
    assert len(report.half_headers_closed_s) == scenario.half_headers
    assert len(report.half_bodies_closed_s) == scenario.half_bodies
    assert max(report.half_headers_closed_s) < limits.header_timeout_s + SLACK_S
    assert max(report.half_bodies_closed_s) < limits.body_timeout_s + SLACK_S
    assert report.normal_failures == 0 and report.normal_latencies_s
