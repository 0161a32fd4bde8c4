"""report.html: one self-contained page a person can look at after a run.

No network, no script: counters, throughput over time and per-study completeness as inline
SVG, the first failures grouped by kind, and links to errors.log, the manifest and the
reconciliation.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import posixpath

from dicom_transfer.progress import format_bytes

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
.counters{display:flex;gap:12px;flex-wrap:wrap}
.counter{border:1px solid #ccc;border-radius:6px;padding:8px 14px;min-width:110px}
.counter b{display:block;font-size:22px}
.completedWithErrors,.failed,.canceled{color:#b00}.completed{color:#070}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
code{font-size:12px}
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _counters(summary: dict) -> str:
    counter = summary.get("counter", {})
    cells = [(name, f"{counter.get(name, 0):,}") for name in ("success", "unchanged", "failure", "filtered")]
    cells.append(("bytes", format_bytes(counter.get("bytesWritten", 0))))
    section = summary.get("reconciliation") or {}
    if section:
        cells += [("series complete", f"{section.get('complete', 0):,}"),
                  ("series incomplete", f"{section.get('incomplete', 0):,}")]
    return '<div class="counters">' + "".join(
        f'<div class="counter" id="counter-{_esc(name.replace(" ", "-"))}">{_esc(name)}<b>{_esc(value)}</b></div>'
        for name, value in cells) + "</div>"


def _throughput_svg(timeline: dict, width: int = 720, height: int = 160, bars: int = 120) -> str:
    """Instances handled per second over the run, as bars (seconds merged into at most ``bars``)."""
    if not timeline:
        return "<p>No instance was handled.</p>"
    seconds = sorted(timeline)
    times = [_parse(second) for second in seconds]
    start = min(times)
    span = max(1.0, (max(times) - start).total_seconds() + 1)
    step = max(1.0, span / bars)
    buckets = [0] * math.ceil(span / step)
    for second, when in zip(seconds, times, strict=True):
        buckets[min(int((when - start).total_seconds() // step), len(buckets) - 1)] += timeline[second][0]
    rates = [count / step for count in buckets]
    top = max(rates) or 1
    bar = width / len(rates)
    shapes = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - 20 - rate / top * (height - 30):.1f}" width="{max(bar - 1, 1):.1f}" '
        f'height="{rate / top * (height - 30):.1f}" fill="#3b7dd8"><title>{rate:.1f}/s</title></rect>'
        for i, rate in enumerate(rates))
    return (f'<svg id="throughput" width="{width}" height="{height}" '
            f'role="img" aria-label="instances per second over time">{shapes}'
            f'<text x="0" y="{height - 4}" font-size="11">0 s</text>'
            f'<text x="{width - 60}" y="{height - 4}" font-size="11">{span:.0f} s</text>'
            f'<text x="4" y="12" font-size="11">peak {top:.1f} instances/s</text></svg>')


def _parse(second: str) -> _dt.datetime:
    try:
        return _dt.datetime.fromisoformat(second)
    except ValueError:
        return _dt.datetime(1970, 1, 1)


def _studies_svg(studies: list[dict], count: int, width: int = 720) -> str:
    """One bar per study: the share of its selected instances present (green), failed or missing (red)."""
    if not studies:
        return "<p>No study was handled.</p>"
    row_height = 16
    shapes = []
    for i, row in enumerate(studies):
        selected = max(row["selected"], 1)
        bad = min(selected, row["failed"] + row["missing"])
        good = selected - bad
        y = i * row_height
        label = f"{row['StudyInstanceUID']}: {good}/{row['selected']} complete"
        shapes.append(
            f'<g class="study" data-study="{_esc(row["StudyInstanceUID"])}"><title>{_esc(label)}</title>'
            f'<rect x="0" y="{y}" width="{good / selected * 300:.1f}" height="{row_height - 3}" fill="#2a9d4b"/>'
            f'<rect x="{good / selected * 300:.1f}" y="{y}" width="{bad / selected * 300:.1f}" '
            f'height="{row_height - 3}" fill="#d33"/>'
            f'<text x="310" y="{y + row_height - 5}" font-size="11">{_esc(label)}</text></g>')
    more = f"<p>The {len(studies):,} least complete of {count:,} studies.</p>" if count > len(studies) else ""
    return (f'<svg id="studies" width="{width}" '
            f'height="{len(studies) * row_height}" role="img" aria-label="per-study completeness">'
            + "".join(shapes) + "</svg>" + more)


def _failures(kinds: dict) -> str:
    if not kinds:
        return "<p>No failure.</p>"
    parts = [f"<p>{_esc(', '.join(f'{count:,} × {kind}' for kind, (count, _) in _by_count(kinds)))}</p>"]
    for kind, (count, first) in _by_count(kinds):
        items = "".join(f"<li><code>{_esc(line)}</code></li>" for line in first)
        parts.append(f'<h3 class="kind">{_esc(kind)} ({count:,})</h3><ul>{items}</ul>')
    return "".join(parts)


def _by_count(kinds: dict) -> list:
    return sorted(kinds.items(), key=lambda item: (-item[1][0], item[0]))


def _link(url: str | None, label: str, page_url: str) -> str:
    if not url:
        return ""
    target = url
    if "://" not in url and "://" not in page_url:  # local files: relative, so the folder can move
        target = posixpath.relpath(url, posixpath.dirname(page_url) or ".")
    return f'<li><a href="{_esc(target)}">{_esc(label)}</a> <code>{_esc(url)}</code></li>'


def render_report(summary: dict, *, timeline: dict, studies: list[dict], study_count: int, failure_kinds: dict,
                  page_url: str, links: dict[str, str | None]) -> str:
    """The whole page, as a string."""
    status = summary.get("status", "")
    title = f"{summary.get('type', '')} {summary.get('operationId', '')}"
    throughput = summary.get("throughput", {})
    link_items = "".join(_link(url, label, page_url) for label, url in links.items())
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_esc(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{_esc(title)}: <span id=\"status\" class=\"{_esc(status)}\">{_esc(status)}</span></h1>"
        f"<p>{_esc(summary.get('createdTime', ''))} → {_esc(summary.get('lastUpdatedTime', ''))}, "
        f"{summary.get('durationSeconds', 0):.1f} s, {throughput.get('instancesPerSecond', 0):,} instances/s, "
        f"{format_bytes(throughput.get('bytesPerSecond', 0))}/s</p>"
        f"<h2>Counters</h2>{_counters(summary)}"
        f"<h2>Throughput over time</h2>{_throughput_svg(timeline)}"
        f"<h2>Per-study completeness</h2>{_studies_svg(studies, study_count)}"
        f"<h2>Failures by kind</h2><div id=\"failures\">{_failures(failure_kinds)}</div>"
        f"<h2>Files</h2><ul id=\"links\">{link_items}</ul>"
        "</body></html>\n"
    )
