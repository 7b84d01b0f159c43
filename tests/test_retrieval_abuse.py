"""The abuse benchmark (``benchmarks/test_retrieval_abuse.py``) at CI scale: the real
`espl-bench retriever serve` process on the bundled corpus, on loopback, with 1-2 s
deadlines, 4 clients that never read, 40 half-sent requests and a normal client."""

from __future__ import annotations

from pathlib import Path

import pytest

from envs.datasets import load_rows
from envs.retrieval.abuse import Scenario, run_abuse
from envs.retrieval.local import ServerProcess
from envs.retrieval.searcher import open_builtin_index

HEADER_S, BODY_S, WRITE_S = 1.0, 1.5, 1.5
RSS_CAP_MIB = 1024


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_server_stays_bounded_and_answers_under_abuse(tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    args = ["--log-level", "debug", "--header-timeout", str(HEADER_S), "--body-timeout", str(BODY_S),
            "--write-timeout", str(WRITE_S)]
    server = ServerProcess.start(open_builtin_index("bm25s").directory, args=args, log_path=log_path, timeout_s=120)
    scenario = Scenario(hogs=4, hog_connections=1, hog_pipeline=4, hog_hold_s=WRITE_S + 1, half_headers=20,
                        half_bodies=20, min_duration_s=3.0, max_duration_s=30.0)
    questions = [row["question"] for row in load_rows("hotpotqa_dev_distractor")]
    try:
        report = run_abuse(server.url, server.process.pid, questions, scenario)
    finally:
        server.stop()
    log = log_path.read_text(errors="replace")
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    assert report.peak_rss_mib < RSS_CAP_MIB, report.summary()
    assert report.half_sent_left_open == 0
    assert len(report.half_headers_closed_s) == len(report.half_bodies_closed_s) == 20
    assert max(report.half_headers_closed_s) < HEADER_S + 1.0
    assert max(report.half_bodies_closed_s) < BODY_S + 1.0
    assert report.normal_failures == 0 and len(report.normal_latencies_s) > 10
    assert log.count("closed the connection") == 40
