"""What the static HTML pages (`tailor dashboard`, `tailor report quality`) share: plots
drawn by matplotlib as inline SVG, panels and the page's style. Pure: no Spark, no network."""

from __future__ import annotations

import html
import io
from typing import Any

# The SVG id of every artist that draws data (a line, a bar), so a test can tell a plot
# that drew its data from one that drew only its axes.
DATA = "data"

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:64em;color:#222}
h1{font-size:1.5em}h2{font-size:1.1em;margin-top:1.6em}table{border-collapse:collapse;font-size:.85em}
td,th{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:left}.ok{color:#2e7d32}.bad{color:#c0392b}
td.num,th.num{text-align:right}figure{margin:0}figure svg{max-width:100%;height:auto}
.empty{color:#777;font-style:italic}"""


def plain(label: str) -> str:
    """A label drawn as written: matplotlib reads text between two $ as a formula (and fails
    on one it cannot parse), and segment names and error codes come from config and data."""
    return label.replace("$", r"\$")


def svg(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def new_figure(title: str, size: tuple[float, float] = (7.5, 3.2)):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=size)
    axes.set_title(title, fontsize=11, loc="left")
    axes.grid(True, alpha=0.3)
    return figure, axes


def time_series(title: str, series: dict[str, tuple[list, list]], ylabel: str) -> str:
    figure, axes = new_figure(title)
    for label, (times, values) in sorted(series.items()):
        axes.plot(times, values, marker="o", markersize=3, linewidth=1.2, label=label, gid=DATA)
    axes.set_ylabel(ylabel)
    axes.legend(fontsize=8, loc="upper left")
    figure.autofmt_xdate()
    return svg(figure)


def panel(panel_id: str, title: str, drawn: str | None, empty: str, note: str = "") -> str:
    """A section with the plot, or with a line saying why there is none."""
    body = (f'<figure class="plot" id="{panel_id}">{drawn}<figcaption>{html.escape(note)}</figcaption></figure>'
            if drawn else f'<p class="empty" id="{panel_id}">{html.escape(empty)}</p>')
    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def checks_table(checks: list[Any]) -> str:
    """The freshness checks (pipelines.monitoring.freshness.Check): ok or STALE, and why."""
    rows = "".join(f'<tr><td class="{"ok" if check.ok else "bad"}">{"ok" if check.ok else "STALE"}</td>'
                   f"<td>{html.escape(check.text)}</td></tr>" for check in checks)
    return f'<section><h2>Freshness</h2><table id="checks">{rows}</table></section>'


def page(title: str, heading: str, stamp: str, sections: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body><h1>{html.escape(heading)}</h1>"
            f"<p>generated {html.escape(stamp)}</p>{''.join(sections)}</body></html>\n")
