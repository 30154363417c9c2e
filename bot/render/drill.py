"""A drill result: Slack blocks, markdown (and the runbook's "last measured" section), text."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bot.drills.model import DrillResult
from bot.units import duration

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
    "pitr": "`pgbackrest info`, `pgbackrest restore --set=<the newest backup before the target> "
            "--type=time --target=<moment> --target-action=promote --archive-mode=off`, "
            "`pg_ctl start` (replay to the moment, then promote)",
}


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
        f"- commands: {COMMANDS['pitr' if result.get('recovery_target') else result['source']]}",
        "", RUNBOOK_END])
