"""The HTML leaderboard in a real browser: headless Chromium (Debian's `chromium`, which
`.ci/run` installs) renders the regenerated pages; the screenshots stay in the test's tmp_path.

Skipped only where chromium is absent: the pages are self-contained files, so nothing here
needs a network.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from leaderboard_runs import write_cpu_suites, write_small_suite

from espl.leaderboard import write_leaderboard
from espl.leaderboard.colours import METHOD_COLOURS

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it)"
)
WIDTH = 1400
"""The window width at which a leaderboard must not scroll sideways."""


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         *args],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def _screenshot(page: Path, tmp_path: Path, height: int = 2000, width: int = WIDTH) -> tuple[Path, list[str]]:
    """Load a page in headless Chromium; returns the screenshot and the page's console messages."""
    shot = tmp_path / f"{page.stem}-{width}.png"
    result = _chromium(tmp_path, f"--screenshot={shot}", f"--window-size={width},{height}", "--enable-logging=stderr",
                       "--v=0", page.as_uri())
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return shot, console


MEASURE = """<script>
window.addEventListener("load", () => {
  const root = document.documentElement, table = document.getElementById("leaderboard");
  document.title = "MEASURED " + JSON.stringify({
    scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, innerWidth: window.innerWidth,
    tableRight: table ? Math.ceil(table.getBoundingClientRect().right) : null,
  });
});
</script>"""


def _layout(page: Path, tmp_path: Path, width: int = WIDTH) -> dict[str, int | None]:
    """The page's widths at a window `width`: a copy of the page (which has no scripts of its
    own) with one that writes them into the title, read back from Chromium's DOM dump."""
    probe = tmp_path / f"{page.stem}-measure.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    result = _chromium(tmp_path, f"--window-size={width},1000", "--virtual-time-budget=5000", "--dump-dom",
                       probe.as_uri())
    match = re.search(r"<title>MEASURED (\{.*?\})</title>", result.stdout)
    assert match, result.stdout[:2000]
    return json.loads(match.group(1))


def _count_near(pixels: list[tuple[int, int, int]], colour: tuple[int, int, int], tolerance: int = 12) -> int:
    return sum(all(abs(a - b) <= tolerance for a, b in zip(p, colour)) for p in pixels)


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


@needs_chromium
def test_console_messages_of_a_page_are_caught(tmp_path: Path) -> None:
    """The check below would see an error: a page that logs one is caught."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><p>x</p><script>console.error("boom"); throw new Error("kaboom");</script>')
    _, console = _screenshot(page, tmp_path, height=300)
    assert any('"boom"' in line for line in console) and any("Uncaught Error: kaboom" in line for line in console)


@needs_chromium
def test_the_width_probe_sees_a_page_that_scrolls_sideways(tmp_path: Path) -> None:
    """The fit check below can fail: a page wider than the window is measured as such."""
    page = tmp_path / "wide.html"
    page.write_text('<!DOCTYPE html><html><head><title>wide</title></head><body>'
                    '<table id="leaderboard"><tr><td style="min-width: 2000px">x</td></tr></table></body></html>')
    layout = _layout(page, tmp_path)
    assert layout["innerWidth"] == WIDTH and layout["scrollWidth"] > WIDTH and layout["tableRight"] > WIDTH


@needs_chromium
@pytest.mark.slow
def test_html_renders_in_chromium_with_table_and_plots_and_no_console_errors(tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "lb" / "demo"
    write_leaderboard([write_small_suite(tmp_path / "runs")], out)
    shot, console = _screenshot(out.with_suffix(".html"), tmp_path, height=2600)
    assert console == []
    assert shot.stat().st_size > 50_000
    image = Image.open(shot).convert("RGB")
    assert image.size == (WIDTH, 2600)
    pixels = list(image.get_flattened_data())
    assert len(set(pixels)) > 500  # text, table rules, anti-aliased curves: far from a blank page
    assert _count_near(pixels, (0xF3, 0xF5, 0xF7), tolerance=1) > 5_000  # the table's header row
    assert _count_near(pixels, _rgb(METHOD_COLOURS["rl"])) > 300  # rl's curves and bands
    assert _count_near(pixels, _rgb(METHOD_COLOURS["espl"])) > 300  # espl's
    assert _count_near(pixels, (0xD8, 0xF0, 0xD2), tolerance=3) > 500  # the crossover node of the inline SVG lineage


@needs_chromium
@pytest.mark.slow
def test_the_regenerated_boards_fit_a_1400_pixel_window(tmp_path: Path) -> None:
    """Boards as wide as the committed CPU suites' (six methods, pass@1 and pass@2, five-digit
    budgets, a long model id, an 8-GPU hardware label): no sideways scroll at 1400 px."""
    from PIL import Image

    boards = {
        "cpu": write_leaderboard([write_cpu_suites(tmp_path / "cpu-runs")], tmp_path / "lb" / "cpu").out,
        "small": write_leaderboard([write_small_suite(tmp_path / "small-runs")], tmp_path / "lb" / "small").out,
    }
    for name, out in boards.items():
        page = out.with_suffix(".html")
        layout = _layout(page, tmp_path)
        assert layout["innerWidth"] == WIDTH, layout
        assert layout["scrollWidth"] <= layout["clientWidth"] <= WIDTH, (name, layout)
        assert layout["tableRight"] <= layout["clientWidth"], (name, layout)
        shot, console = _screenshot(page, tmp_path, height=3200)
        assert console == [], console
        assert 50_000 < shot.stat().st_size < 20_000_000, shot.stat().st_size
        image = Image.open(shot)
        assert image.format == "PNG" and image.size == (WIDTH, 3200)
        assert len(set(image.convert("RGB").get_flattened_data())) > 500  # a rendered page, not a blank one
