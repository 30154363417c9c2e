"""A schema lint as JSON, markdown, Block Kit (grouped by kind, within Slack's limits) and text."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bot.advisor.lint import KINDS, LintReport
from bot.advisor.model import Drop
from bot.analysis.model import Finding
from bot.units import size_text

MAX_BLOCKS = 50
MAX_TEXT = 3000
MAX_PART = 450  # a finding's detail or fix in Slack, clipped
SQL_VERBS = {"CREATE", "DROP", "ALTER", "REVOKE", "GRANT"}

TITLES = {
    "rls_disabled": "Readable tables without row level security",
    "rls_per_row_call": "Policies calling auth functions once per row",
    "multiple_permissive_policies": "Several permissive policies for one role and command",
    "unindexed_fk": "Foreign keys without an index",
    "no_primary_key": "Tables without a primary key",
    "duplicate_index": "Duplicate and redundant indexes",
    "unused_index": "Unused indexes",
}


def _by_kind(report: LintReport) -> list[tuple[str, list[Finding]]]:
    return [(kind, [f for f in report.findings if f.kind == kind]) for kind in KINDS
            if any(f.kind == kind for f in report.findings)]


def _freed(report: LintReport) -> int:
    return sum(int(p.get("size_bytes") or 0) for p in report.cleanup)


def headline(report: LintReport) -> str:
    if not report.findings:
        return "Schema lint: no findings"
    counts = Counter(f.kind for f in report.findings)
    text = (f"Schema lint: {len(report.findings)} finding{'s' * (len(report.findings) != 1)} "
            f"of {len(counts)} kind{'s' * (len(counts) != 1)}")
    if report.cleanup:
        text += f", {len(report.cleanup)} index{'es' * (len(report.cleanup) != 1)} to drop"
    return text


def as_dict(report: LintReport) -> dict[str, Any]:
    return {"database": report.database, "checked_at": report.checked_at,
            "findings": [f.as_dict() for f in report.findings], "cleanup": report.cleanup,
            "notes": report.notes}


def as_json(report: LintReport) -> str:
    return json.dumps(as_dict(report), indent=2, default=str)


# --- markdown ---------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def is_sql(fix: str) -> bool:
    """Fixes that are statements (possibly with a trailing comment) are shown as code."""
    return fix.split(" ", 1)[0] in SQL_VERBS


def _fix_md(fix: str) -> str:
    return f"`{_cell(fix)}`" if is_sql(fix) else _cell(fix)


def markdown(report: LintReport) -> str:
    lines = [f"# Schema lint — {report.checked_at[:10]}", "",
             f"Database `{report.database}`, checked {report.checked_at}.", ""]
    lines += [f"> {note}" for note in report.notes]
    if not report.findings:
        lines += ["", "No findings: every foreign key is indexed, every table has a primary key, "
                      "and row level security and its policies look right."]
    else:
        lines += ["", "| finding | count |", "|---|---|"]
        lines += [f"| {TITLES[kind]} (`{kind}`) | {len(found)} |"
                  for kind, found in _by_kind(report)]
    for kind, found in _by_kind(report):
        lines += ["", f"## {TITLES[kind]} (`{kind}`): {len(found)}", "",
                  "| table | why it matters | fix |", "|---|---|---|"]
        lines += [f"| {f.table or '—'} | {_cell(f.detail)} | {_fix_md(f.fix)} |" for f in found]
    lines += ["", "## Cleanup", ""]
    if report.cleanup:
        lines += [f"Dropping these {len(report.cleanup)} indexes frees "
                  f"{size_text(_freed(report))}.", "",
                  "| index | table | size | why | write cost | SQL |", "|---|---|---|---|---|---|"]
        lines += [f"| {p['index']} | {p['table']} | {size_text(p['size_bytes'])} | "
                  f"{_cell(p['reason'])} | {_cell(p['write_cost'])} | `{p['sql']}` |"
                  for p in report.cleanup]
    else:
        lines.append("No index to drop.")
    return "\n".join(lines) + "\n"


# --- Block Kit --------------------------------------------------------------------------------


def _esc(text: str) -> str:
    """Slack mrkdwn control characters as entities (policy expressions contain `->>`, `<`)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _listing(title: str, items: list[str]) -> tuple[str, int]:
    """`title` and as many items as fit in one text object; how many were left out."""
    text = title
    for shown, item in enumerate(items):
        rest = len(items) - shown
        more = f"\n…and {rest - 1} more" if rest > 1 else ""
        if len(text) + 1 + len(item) + len(more) > MAX_TEXT:
            return text + f"\n…and {rest} more", rest
        text += "\n" + item
    return text, 0


def _finding_item(finding: Finding) -> str:
    table = f"*{_esc(finding.table)}*: " if finding.table else ""
    fix = _esc(_clip(finding.fix, MAX_PART))
    fix = f"`{fix}`" if is_sql(finding.fix) else fix
    return f"• {table}{_esc(_clip(finding.detail, MAX_PART))}\n   _Fix:_ {fix}"


def _cleanup_item(proposal: Drop) -> str:
    return (f"• `{_esc(proposal['sql'])}` — {size_text(proposal['size_bytes'])}; "
            f"{_esc(_clip(proposal['reason'], MAX_PART))}; {_esc(proposal['write_cost'])}")


def blocks(report: LintReport) -> list[dict[str, Any]]:
    """Headline, one section per kind of finding with its count, the cleanup proposals."""
    out: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(headline(report), 150)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(
            f"`{_esc(report.database)}` · {report.checked_at}")}]},
    ]
    for note in report.notes[:3]:
        text = _clip(f":information_source: {_esc(note)}")
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    if not report.findings:
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": (
            ":white_check_mark: No findings: foreign keys are indexed, every table has a primary "
            "key, no index is redundant, and row level security and its policies look right.")}})
    left_out = 0
    for kind, found in _by_kind(report):
        text, rest = _listing(f"*{TITLES[kind]}* (`{kind}`): {len(found)}",
                              [_finding_item(f) for f in found])
        left_out += rest
        out += [{"type": "divider"}, {"type": "section", "text": {"type": "mrkdwn",
                                                                   "text": text}}]
    if report.cleanup:
        text, rest = _listing(
            f"*Cleanup*: {len(report.cleanup)} index{'es' * (len(report.cleanup) != 1)} to drop, "
            f"freeing {size_text(_freed(report))}", [_cleanup_item(p) for p in report.cleanup])
        left_out += rest
        out += [{"type": "divider"}, {"type": "section", "text": {"type": "mrkdwn",
                                                                   "text": text}}]
    if left_out:
        out.append({"type": "context", "elements": [{"type": "mrkdwn", "text":
                    "The full list: `hotdata lint --format markdown`"}]})
    return out[:MAX_BLOCKS]


# --- terminal ---------------------------------------------------------------------------------


def print_text(report: LintReport, console: Console) -> None:
    console.print(Text(f"{headline(report)} — {report.database} at {report.checked_at}",
                       style="bold"))
    for note in report.notes:
        console.print(Text(f"note: {note}", style="yellow"))
    if report.findings:
        table = Table(show_lines=True)
        for column in ("kind", "table", "why it matters / fix"):
            table.add_column(column, overflow="fold")
        for finding in report.findings:
            detail = Text(finding.detail)
            detail.append(f"\nfix: {finding.fix}", style="green")
            table.add_row(finding.kind, finding.table or "—", detail)
        console.print(table)
    for proposal in report.cleanup:
        console.print(Text(f"cleanup: {proposal['sql']} ({size_text(proposal['size_bytes'])}): "
                           f"{proposal['reason']}; {proposal['write_cost']}", style="cyan"))
