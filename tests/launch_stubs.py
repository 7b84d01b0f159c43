"""Stand-ins for a launch's parts, run as real processes by `tests/test_launch.py`.

    python tests/launch_stubs.py server --host H --port P [--crash]
        an HTTP server answering GET /health (what the launcher waits for), in the place of
        vLLM or the retrieval server; it starts a child that only sleeps, so a test can check
        that stopping the part ends its whole process tree; --crash exits before listening.
    python tests/launch_stubs.py trainer run ARGS...
        prints the GPUs it was given, then runs the real `espl-bench run ARGS...` in this process.

Each prints ``CUDA_VISIBLE_DEVICES=<value>`` and ``pid=<pid>`` lines first. It holds no tests.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(host: str, port: int, crash: bool) -> int:
    if crash:
        print("crashing before listening", flush=True)
        return 3
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(f"child={child.pid}", flush=True)
    http.server.HTTPServer((host, port), Health).serve_forever()
    return 0


def main(argv: list[str]) -> int:
    print(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}", flush=True)
    print(f"pid={os.getpid()}", flush=True)
    if argv[0] == "server":
        host, port = argv[argv.index("--host") + 1], int(argv[argv.index("--port") + 1])
        return serve(host, port, "--crash" in argv)
    os.environ["COLUMNS"] = "1000"  # the run's JSON on one line per value, however long
    from espl.cli import main as cli

    return cli(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
