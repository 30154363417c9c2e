"""The periodic report as Slack blocks, markdown and text; and the backup alerts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot.drills.history import History
from bot.render import drill as render_drill
from bot.reports.backups import Check
from bot.reports.health import WRAPAROUND_FIX, sequence_fix
from bot.reports.report import Report
from bot.units import duration

ICON = {"new": ":new:", "slower": ":small_red_triangle:", "faster": ":small_red_triangle_down:",
        "": ""}


def headline(report: Report) -> str:
    if report.quiet:
        return "hotdata report: a quiet window, nothing to report"
    return (f"hotdata report: {len(report.top)} busiest statements, {len(report.pending)} "
            f"pending proposal(s), {len(report.regressions) + len(report.plan_regressions)} "
            "regression(s)")


def _window(report: Report) -> str:
    start = f"{report.window_start:%H:%M}" if report.window_start else "the first snapshot"
    return f"{start} to {report.window_end:%H:%M} UTC"


def _health(report: Report) -> str:
    h = report.health
    if not h:
        return "health unknown"
    text = (f"connections {h['connections']}/{h['max_connections']} · cache hit "
            f"{h['cache_hit_pct']} % · longest query {duration(h['longest_query_s'])} · "
            f"blocked {h['blocked']} · xid age {h['xid_age']:,}")
    for found in report.sequences[:3]:
        text += (f"\n:warning: sequence {found['sequence']}"
                 + (f" (feeds {found['table']}.{found['column']}, {found['type']})"
                    if found["table"] else "")
                 + f" has used {found['used']:.0%} of its values, {found['left']:,} left: "
                 f"{sequence_fix(found)}")
    for found in report.wraparound[:3]:
        text += (f"\n:warning: {found['table']}: oldest unfrozen transaction "
                 f"{found['xid_age']:,} old, {found['used']:.0%} of the way to wraparound "
                 f"(writes stop there): {WRAPAROUND_FIX}")
    return text


def backup_state(kind: str, figures: dict[str, Any], now: datetime) -> str:
    """One kind of backup check in words, with ages as of `now`."""
    def ago(iso: str) -> float:
        return (now - datetime.fromisoformat(iso)).total_seconds()

    if kind == "backup":
        source = figures.get("source")
        if not figures.get("watched"):
            return ("each drill takes its own backup (`dump`)" if source == "dump"
                    else f"backup age not watched for the `{source}` source")
        if figures.get("problem"):
            return f"no backup found ({source}): {figures['problem']}"
        if not figures.get("taken_at"):
            return f"newest backup of unknown age ({source})"
        age = ago(figures["taken_at"])
        taken = datetime.fromisoformat(figures["taken_at"]).astimezone(UTC)
        over = (f", over the {duration(figures['max_age_s'])} limit"
                if age > figures["max_age_s"] else "")
        return f"newest backup {duration(age)} old ({source}, {taken:%Y-%m-%d %H:%M} UTC){over}"
    if figures.get("mode") == "off":
        return "WAL archiving off"
    last = figures.get("last_archived_at")
    since = (f"last segment archived {duration(ago(last))} ago" if last
             else "no segment archived yet")
    if not figures.get("failing"):
        return f"WAL archiving ok, {since}"
    failed = datetime.fromisoformat(figures["last_failed_at"]).astimezone(UTC)
    return (f"WAL archiving failing: {figures['failures']} failed attempt(s) since it last "
            f"worked, the last on `{figures['last_failed_wal']}` at {failed:%H:%M} UTC; {since}")


ALERTS = {
    ("backup", False): ":rotating_light: *Backups have stopped*: {}. Restore drills restore the "
                       "newest backup, so they prove an old one until the backup job runs again.",
    ("backup", True): ":white_check_mark: *Backups are back*: {}.",
    ("archiving", False): ":rotating_light: *WAL archiving is failing*: {}. Point-in-time "
                          "recovery cannot go past the last archived segment meanwhile: see the "
                          "server log for `archive_command`'s error.",
    ("archiving", True): ":white_check_mark: *WAL archiving works again*: {}.",
}


def backup_alert(check: Check) -> str:
    """The message of a backup check that started or ended its alert."""
    return ALERTS[(check.kind, check.ok)].format(
        backup_state(check.kind, check.figures, check.checked_at))


def _backups(report: Report) -> str:
    if not report.backups:
        return "not checked yet (checked with every statistics snapshot)"
    return " · ".join((":rotating_light: " if row["alerting"] else "")
                      + backup_state(row["kind"], row["figures"], report.window_end)
                      for row in report.backups)


def _drills(history: History | None) -> list[tuple[str, str]]:
    if history is None or not history.drills:
        return []
    return [("Restore drills", render_drill.history_table(history) + "\n"
             + render_drill.trend(history))]


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


def blocks(report: Report, history: History | None = None) -> list[dict[str, Any]]:
    """The report; with `history`, the last drills' table, trend and forecast too."""
    if report.quiet:
        return [{"type": "section", "text": {"type": "mrkdwn", "text": (
            f"*hotdata report* ({_window(report)}): a quiet window — no statements ran, "
            f"nothing is pending.\n*Health:* {_health(report)}\n*Backups:* "
            f"{_backups(report)}\n*Last drill:* {_drill(report)}")[:3000]}}]
    sections = [
        ("Busiest statements", "\n".join(lines(report)) or "none"),
        ("Regressed after a migration", "\n".join(
            f"• `{r['index']}`: `{' '.join(r['query'].split())[:100]}` now "
            f"{r['mean_ms']:.1f} ms, {r['after_ms']:.1f} ms right after it was applied"
            for r in report.regressions)),
        ("Plan regressions found by analyses", "\n".join(
            f"• `{' '.join(r['query'].split())[:100]}` (analysis #{r['analysis_id']}): "
            f"{r['detail'][:400]} Fix: {r['fix'][:200]}" for r in report.plan_regressions)),
        ("Waiting for a decision", "\n".join(
            f"• #{p['id']} `{p['index_name']}` on `{p['table_name']}`, waiting "
            f"{duration(p['waited_s'])}" for p in report.pending)),
        ("Applied in this window", "\n".join(
            f"• #{a['id']} `{a['index_name']}`: {(a['result'] or {}).get('before_ms')} ms → "
            f"{(a['result'] or {}).get('after_ms')} ms" for a in report.applied)),
        ("Missed slots", "\n".join(
            f"• {m['job']} at {m['scheduled_for']:%Y-%m-%d %H:%M} UTC (no replica was "
            "running)" for m in report.missed)),
        *_drills(history),
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
        f"*Last drill:* {_drill(report)}\n*Health:* {_health(report)}\n*Backups:* "
        f"{_backups(report)}")[:3000]}})
    for note in report.notes[:3]:
        out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note[:3000]}]})
    return out[:50]


def markdown(report: Report, history: History | None = None) -> str:
    text = [f"# {headline(report)}", "", f"Window: {_window(report)}", ""]
    text += lines(report)
    text += [f"- Plan regression in analysis #{r['analysis_id']}: "
             f"`{' '.join(r['query'].split())[:100]}`: {r['detail']} Fix: {r['fix']}"
             for r in report.plan_regressions]
    text += ["", f"Last drill: {_drill(report)}", f"Health: {_health(report)}",
             f"Backups: {_backups(report)}"]
    if history is not None and history.drills:
        text += ["", render_drill.history_markdown(history)]
    return "\n".join(text) + "\n"
