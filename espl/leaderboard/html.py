"""The leaderboard as one self-contained HTML page: inline CSS, PNG curves embedded as base64
data, the lineage as inline SVG. No scripts and nothing fetched from elsewhere."""

from __future__ import annotations

import base64
import re
from html import escape
from pathlib import Path

from espl.leaderboard.report import EnvSection, Report
from espl.leaderboard.columns import display_columns
from espl.leaderboard.markdown import LEGEND, WARNING, intro, legend
from espl.leaderboard.table import Leaderboard

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 80rem;
       padding: 0 1rem; color: #1d232a; background: #ffffff; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
table { border-collapse: collapse; font-size: .8rem; margin: 1rem 0; }
th, td { border: 1px solid #d0d7de; padding: .3rem .4rem; vertical-align: top; }
th { background: #f3f5f7; text-align: left; }
td { overflow-wrap: break-word; }
td.num { text-align: right; font-variant-numeric: tabular-nums; overflow-wrap: normal; }
tr:nth-child(even) td { background: #fafbfc; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; flex: 1 1 32rem; max-width: 46rem; }
figure img, figure svg { width: 100%; height: auto; }
figure.lineage { max-width: 28rem; }
figcaption { font-size: .8rem; color: #57606a; }
pre { background: #f6f8fa; padding: .8rem; overflow-x: auto; font-size: .8rem; }
p.legend, ul.legend { font-size: .85rem; color: #57606a; }
ul.legend li { margin: .2rem 0; }
p.warning { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px; padding: .6rem .8rem; }
"""


def render_html(report: Report) -> str:
    board = report.board
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>Leaderboard: {escape(board.title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>Leaderboard: {escape(board.title)}</h1>",
        f"<p>{escape(intro(board))}</p>",
        *warnings_html(board),
        table_html(report),
        f'<p class="legend">{escape(LEGEND)}</p>',
        legend_html(board),
        *(section_html(report, s) for s in report.sections),
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def table_html(report: Report) -> str:
    columns = display_columns(report.board)
    head = "".join(f'<th title="{escape(c.note)}">{escape(c.header)}</th>' for c in columns)
    body = []
    for row in report.board.rows:
        cells = "".join(
            f'<td class="num">{number_html(c.cell(row))}</td>' if c.numeric else f"<td>{text_html(c.cell(row))}</td>"
            for c in columns
        )
        body.append(f"<tr>{cells}</tr>")
    return f'<table id="leaderboard">\n<thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(body) + "\n</tbody>\n</table>"


def number_html(text: str) -> str:
    """A numeric cell that may wrap before `±` and after a comma, never inside a figure, so
    that a wide table narrows to the page instead of scrolling sideways."""
    return escape(text).replace(" ± ", " ±\u00a0").replace(" × ", "\u00a0×\u00a0")


def text_html(text: str) -> str:
    """A text cell that may also wrap after `/` (`org/model` names, `hardware / torch`)."""
    return escape(text).replace("/", "/<wbr>")


def legend_html(board: Leaderboard) -> str:
    items = "".join(f"<li><b>{escape(header)}</b>: {escape(note)}.</li>" for header, note in legend(board))
    return f'<ul class="legend">{items}</ul>'


def warnings_html(board: Leaderboard) -> list[str]:
    """A highlighted paragraph above the table for each env whose runs' configs differ."""
    return [f'<p class="warning"><b>{WARNING}</b> {escape(w.message())}</p>' for w in board.config_warnings]


def section_html(report: Report, section: EnvSection) -> str:
    parts = [f"<h2>{escape(section.env)}</h2>", '<div class="figures">']
    for figure in (section.accuracy, section.reward):
        if figure is not None:
            parts.append(_png_figure(figure.stem.with_suffix(".png"), figure.title))
    parts.append("</div>")
    lineage = section.lineage
    if lineage is not None and lineage.run is not None:
        run = lineage.run
        parts += [
            f"<h3>Best evolved prompt: {escape(lineage.prompt_id)}</h3>",
            f"<p>From the best run (by final test accuracy) of the best prompt-evolving method: {escape(run.method)}, "
            f"seed {run.seed} (run directory <code>{escape(run.path.name)}</code>).</p>",
            "<pre>" + escape("\n".join(lineage.text_tree())) + "</pre>",
            "<ol>" + "".join(f"<li>{escape(p)}</li>" for p in lineage.prompt.principles) + "</ol>",
        ]
        if section.lineage_figure is not None:
            svg = inline_svg(section.lineage_figure.stem.with_suffix(".svg").read_text(encoding="utf-8"))
            caption = escape(section.lineage_figure.title)
            parts.append(f'<figure class="lineage">{svg}<figcaption>{caption}</figcaption></figure>')
    elif section.lineage_note:
        parts.append(f"<p>{escape(section.lineage_note)}</p>")
    return "\n".join(parts)


def inline_svg(svg: str) -> str:
    """An SVG file's root element, without the XML prolog and doctype (invalid inside HTML)."""
    svg = re.sub(r"<\?xml[^>]*\?>\s*", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>\s*", "", svg, flags=re.DOTALL)
    return svg.strip()


def _png_figure(path: Path, title: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{escape(title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{escape(title)}</figcaption></figure>"
    )
