"""The periodic report as Slack blocks, markdown and text."""

from __future__ import annotations

from typing import Any

from bot.reports.report import Report
from bot.units import duration

ICON = {"new": ":new:", "slower": ":small_red_triangle:", "faster": ":small_red_triangle_down:",
        "": ""}


def headline(report: Report) -> str:
    if report.quiet:
        return "hotdata report: a quiet window, nothing to report"
    return (f"hotdata report: {len(report.top)} busiest statements, {len(report.pending)} "
            f"pending proposal(s), {len(report.regressions)} regression(s)")


def _window(report: Report) -> str:
    start = f"{report.window_start:%H:%M}" if report.window_start else "the first snapshot"
    return f"{start} to {report.window_end:%H:%M} UTC"


def _health(report: Report) -> str:
    h = report.health
    if not h:
        return "health unknown"
    return (f"connections {h['connections']}/{h['max_connections']} · cache hit "
            f"{h['cache_hit_pct']} % · longest query {duration(h['longest_query_s'])} · "
            f"blocked {h['blocked']} · xid age {h['xid_age']:,}")


def _drill(report: Report) -> str:
    d = report.last_drill
    if d is None:
        return "no restore drill yet: run `/hotdata drill`"
    return (f"#{d['id']} {d['status']}, RTO {duration(d['rto_seconds'])}, RPO "
            f"{duration(d['rpo_seconds'])}, {duration(d['age_s'])} ago")


def lines(report: Report) -> list[str]:
    out = []
    for n, line in enumerate(report.top, 1):
        d = line.delta
        query = " ".join(d.query.split())[:120]
        change = f" {ICON[line.change]} {line.change}" if line.change else ""
        if line.previous_mean_ms is not None and line.change:
            change += f" (was {line.previous_mean_ms:.1f} ms)"
        out.append(f"{n}. `{query}` — {d.total_ms / 1000:.1f} s total, {d.calls:,} calls, "
                   f"{d.mean_ms:.1f} ms mean{change}")
    return out


def blocks(report: Report) -> list[dict[str, Any]]:
    if report.quiet:
        return [{"type": "section", "text": {"type": "mrkdwn", "text": (
            f"*hotdata report* ({_window(report)}): a quiet window — no statements ran, "
            f"nothing is pending.\n*Health:* {_health(report)}\n*Last drill:* "
            f"{_drill(report)}")[:3000]}}]
    sections = [
        ("Busiest statements", "\n".join(lines(report)) or "none"),
        ("Regressed after a migration", "\n".join(
            f"• `{r['index']}`: `{' '.join(r['query'].split())[:100]}` now "
            f"{r['mean_ms']:.1f} ms, {r['after_ms']:.1f} ms right after it was applied"
            for r in report.regressions)),
        ("Waiting for a decision", "\n".join(
            f"• #{p['id']} `{p['index_name']}` on `{p['table_name']}`, waiting "
            f"{duration(p['waited_s'])}" for p in report.pending)),
        ("Applied in this window", "\n".join(
            f"• #{a['id']} `{a['index_name']}`: {(a['result'] or {}).get('before_ms')} ms → "
            f"{(a['result'] or {}).get('after_ms')} ms" for a in report.applied)),
        ("Missed slots", "\n".join(
            f"• {m['job']} at {m['scheduled_for']:%Y-%m-%d %H:%M} UTC (no replica was "
            "running)" for m in report.missed)),
    ]
    out: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "hotdata report"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _window(report)}]},
    ]
    for title, text in sections:
        if text:
            out.append({"type": "section", "text": {"type": "mrkdwn",
                                                     "text": f"*{title}*\n{text}"[:3000]}})
    out.append({"type": "section", "text": {"type": "mrkdwn", "text": (
        f"*Last drill:* {_drill(report)}\n*Health:* {_health(report)}")[:3000]}})
    for note in report.notes[:3]:
        out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note[:3000]}]})
    return out[:50]


def markdown(report: Report) -> str:
    text = [f"# {headline(report)}", "", f"Window: {_window(report)}", ""]
    text += lines(report)
    text += ["", f"Last drill: {_drill(report)}", f"Health: {_health(report)}"]
    return "\n".join(text) + "\n"
