"""A drill result: Slack blocks, markdown (and the runbook's "last measured" section), text;
and the drill history: its table, trend and forecast."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bot.drills.history import History
from bot.drills.model import DrillResult
from bot.units import duration, size_text

RUNBOOK = "runbooks/database-recovery.md"


def headline(result: DrillResult) -> str:
    mark = ":white_check_mark:" if result.status == "passed" else ":x:"
    source = result.source + (f", to {result.recovery_target:%Y-%m-%d %H:%M:%S %Z}"
                              if result.recovery_target else "")
    return (f"{mark} Restore drill #{result.id} {result.status}: RTO {duration(result.rto_seconds)}"
            f", RPO {duration(result.rpo_seconds)} ({source})")


def blocks(result: DrillResult, trend: list[dict[str, Any]] | None = None
           ) -> list[dict[str, Any]]:
    phases = " · ".join(f"{p.name} {p.seconds:.1f} s" for p in result.phases) or "—"
    lines = [f"{':white_check_mark:' if c.ok else ':x:'} *{c.name}*: {c.detail}"
             for c in result.checks]
    out: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": (
            f"Restore drill #{result.id}: {result.status.upper()}")[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": (
            f"*RTO* {duration(result.rto_seconds)} ({phases}) for "
            f"{result.bytes_restored / 2**20:.1f} MB\n*RPO* {duration(result.rpo_seconds)} "
            f"(restored heartbeat age) · backup age {duration(result.backup_age_seconds)}\n"
            f"{result.tables_verified} tables, {result.rows_verified:,} rows, "
            f"{result.policies_verified} policies verified")[:3000]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:3000]
                                     or "no checks ran"}},
    ]
    if trend:
        out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": (
            "Last drills: " + " · ".join(
                f"#{d['id']} {d['status']} RTO {duration(d['rto_seconds'])}" for d in trend)
        )[:3000]}]})
    out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": (
        f"Recovery runbook: `{RUNBOOK}`" + (" · what to do now: see \"When a drill fails\""
                                           if result.status != "passed" else ""))}]})
    return out


def as_json(result: DrillResult) -> str:
    return json.dumps(result.as_dict(), indent=2, default=str)


def markdown(result: DrillResult) -> str:
    lines = [f"# Restore drill #{result.id}: {result.status}", "",
             f"- RTO: {duration(result.rto_seconds)}", f"- RPO: {duration(result.rpo_seconds)}",
             f"- backup age: {duration(result.backup_age_seconds)}",
             f"- source: {result.source}; {result.bytes_restored:,} bytes", "",
             "| phase | seconds |", "|---|---|"]
    lines += [f"| {p.name} | {p.seconds} |" for p in result.phases]
    lines += ["", "| check | ok | detail |", "|---|---|---|"]
    lines += [f"| {c.name} | {'yes' if c.ok else 'NO'} | {c.detail} |" for c in result.checks]
    return "\n".join(lines) + "\n"


def print_text(result: DrillResult, console: Console) -> None:
    console.print(Text(headline(result).replace(":white_check_mark:", "✓").replace(":x:", "✗"),
                       style="bold green" if result.status == "passed" else "bold red"))
    table = Table()
    table.add_column("check")
    table.add_column("ok")
    table.add_column("detail", overflow="fold")
    for c in result.checks:
        table.add_row(c.name, "✓" if c.ok else "✗", Text(c.detail))
    console.print(table)
    console.print(" · ".join(f"{p.name} {p.seconds:.2f} s" for p in result.phases))


RUNBOOK_START = "<!-- hotdata: last measured -->"
RUNBOOK_END = "<!-- hotdata: end -->"


COMMANDS = {
    "dump": "`pg_dumpall --roles-only`, `pg_dump --format=directory --jobs=N --snapshot=…`, "
            "the missing roles created (`CREATE ROLE`), `pg_restore --jobs=N --exit-on-error`",
    "directory": "the newest dump in the backup directory: the roles its `*globals*.sql` names "
                 "created where missing, `pg_restore --jobs=N --exit-on-error`",
    "pgbackrest": "`pgbackrest info`, `pgbackrest restore --type=default --archive-mode=off`, "
                  "`pg_ctl start` (replay to the end of the archive, then promote)",
    "barman": "`barman check`, `barman list-backups`, `barman recover <the newest backup> "
              "<directory>`, `pg_ctl start` (replay the WAL Barman restored, to its end)",
    "pitr": "`pgbackrest info`, `pgbackrest restore --set=<the newest backup before the target> "
            "--type=time --target=<moment> --target-action=promote --archive-mode=off`, "
            "`pg_ctl start` (replay to the moment, then promote)",
    "barman pitr": "`barman check`, `barman list-backups`, `barman recover --target-time "
                   "<moment> --target-action promote <the newest backup before the target> "
                   "<directory>`, `pg_ctl start` (replay to the moment, then promote)",
}


def _commands(result: dict[str, Any]) -> str:
    """The COMMANDS entry of a drill: its source, or its source's point-in-time restore."""
    if not result.get("recovery_target"):
        return str(result["source"])
    return "barman pitr" if result["source"] == "barman" else "pitr"


def runbook_section(result: dict[str, Any], finished_at: str, versions: str) -> str:
    phases = ", ".join(f"{p['name']} {p['seconds']} s" for p in result["phases"])
    return "\n".join([
        RUNBOOK_START, "", f"Last passing drill: #{result['id']} on {finished_at} "
        f"(source `{result['source']}`).", "",
        f"- RTO: **{duration(result['rto_seconds'])}** ({phases}), "
        f"{result.get('bytes_restored', 0):,} bytes restored",
        f"- RPO: **{duration(result['rpo_seconds'])}** (age of the restored heartbeat)",
        f"- verified: {result['tables_verified']} tables, {result['rows_verified']:,} rows, "
        f"{result['policies_verified']} policies", f"- versions: {versions}",
        f"- commands: {COMMANDS[_commands(result)]}",
        "", RUNBOOK_END])


# --- the history ----------------------------------------------------------------------------------

NO_HISTORY = ("No restore drills yet: run `/hotdata drill` (or schedule them with "
              "HOTDATA_DRILL_CRON), and their RTO and RPO will be charted here.")
TABLE_CHARS = 2800  # a section's text is at most 3000


def history_headline(history: History) -> str:
    latest = history.drills[-1]
    return (f"Restore drills: the last {len(history.drills)}; #{latest.id} {latest.status}, "
            f"RTO {duration(latest.rto_seconds)}, RPO {duration(latest.rpo_seconds)}")


def history_rows(history: History) -> list[list[str]]:
    """Newest first: drill, finished (UTC), status, RTO, RPO, restored, phases."""
    return [[f"#{d.id}", f"{d.finished_at.astimezone(UTC):%Y-%m-%d %H:%M}", d.status,
             duration(d.rto_seconds), duration(d.rpo_seconds), size_text(d.bytes_restored),
             " · ".join(f"{name} {seconds:.1f} s" for name, seconds in d.phases) or "—"]
            for d in reversed(history.drills)]


def history_table(history: History) -> str:
    """The rows as a fixed-width table in a code block, the oldest left out past Slack's
    limit."""
    rows = [["drill", "finished (UTC)", "status", "RTO", "RPO", "restored", "phases"],
            *history_rows(history)]
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines: list[str] = []
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        line += "  " + row[6]
        if sum(len(x) + 1 for x in lines) + len(line) > TABLE_CHARS:
            break
        lines.append(line)
    more = len(rows) - len(lines)
    return "```\n" + "\n".join(lines) + "\n```" + (f"\n…and {more} older" if more else "")


def trend(history: History) -> str:
    """How the RTO grows with size and the database with time, and the forecast."""
    parts = []
    if history.seconds_per_gb is not None:
        parts.append(f"RTO grows {history.seconds_per_gb:.1f} s per GB restored")
    if history.growth_per_day is not None:
        grows = "grows" if history.growth_per_day >= 0 else "shrinks"
        parts.append(f"the database {grows} {size_text(abs(round(history.growth_per_day)))} "
                     "per day")
    target = duration(history.target_seconds)
    crossing = f"{history.crossing:%Y-%m-%d}" if history.crossing else "?"
    forecast = {
        "crossing": f"at this growth the RTO reaches the {target} target around {crossing} "
                    f"(at {size_text(round(history.size_at_target or 0))})",
        "over": f"the RTO at the current size is already over the {target} target",
        "no_target": "set HOTDATA_RTO_TARGET_SECONDS for a forecast of when the RTO reaches it",
        "few_drills": "a forecast needs two passing drills of different sizes",
        "flat_rto": "the RTO does not grow with the size restored: no crossing of the "
                    f"{target} target in sight",
        "flat_size": f"the database is not growing: the RTO stays under the {target} target",
        "distant": f"the RTO stays under the {target} target for more than ten years at this "
                   "growth",
    }[history.outlook]
    sentences = (["; ".join(parts)] if parts else []) + [forecast]
    return " ".join(s[0].upper() + s[1:] + "." for s in sentences)


def history_blocks(history: History) -> list[dict[str, Any]]:
    return [
        {"type": "header", "text": {"type": "plain_text", "text": (
            f"Restore drills: the last {len(history.drills)}")[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": history_table(history)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": (
            f"*Trend:* {trend(history)}")[:3000]}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": (
            "Chart of the phases, RTO and RPO in the thread · recovery runbook: "
            f"`{RUNBOOK}`")}]},
    ]


def history_markdown(history: History) -> str:
    if not history.drills:
        return NO_HISTORY.replace("/hotdata drill", "hotdata drill") + "\n"
    lines = [f"# {history_headline(history)}", "",
             "| drill | finished (UTC) | status | RTO | RPO | restored | phases |",
             "|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in history_rows(history)]
    return "\n".join([*lines, "", f"Trend: {trend(history)}"]) + "\n"


def history_json(history: History) -> str:
    return json.dumps({
        "drills": [{"id": d.id, "status": d.status, "finished_at": d.finished_at.isoformat(),
                    "rto_seconds": d.rto_seconds, "rpo_seconds": d.rpo_seconds,
                    "bytes_restored": d.bytes_restored,
                    "phases": [{"name": n, "seconds": s} for n, s in d.phases]}
                   for d in history.drills],
        "rto_target_seconds": history.target_seconds,
        "rto_seconds_per_gb": history.seconds_per_gb,
        "growth_bytes_per_day": history.growth_per_day, "outlook": history.outlook,
        "crossing": history.crossing.isoformat() if history.crossing else None,
        "trend": trend(history) if history.drills else None}, indent=2)
