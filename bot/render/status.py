"""The status / doctor checks in every output format."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bot.checks import Check

ICON = {"ok": ":white_check_mark:", "warn": ":warning:", "fail": ":x:"}
MARK = {"ok": "✓", "warn": "!", "fail": "✗"}


def headline(checks: list[Check]) -> str:
    failed = [c.name for c in checks if c.state == "fail"]
    if failed:
        return "hotdata needs attention: " + ", ".join(failed)
    return "hotdata is healthy"


def blocks(checks: list[Check]) -> list[dict[str, Any]]:
    lines = "\n".join(f"{ICON[c.state]} *{c.name}*: {c.detail}" for c in checks)
    return [
        {"type": "header", "text": {"type": "plain_text", "text": headline(checks)[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": lines[:3000]}},
    ]


def markdown(checks: list[Check]) -> str:
    rows = "\n".join(f"| {MARK[c.state]} | {c.name} | {c.detail} |" for c in checks)
    return f"# {headline(checks)}\n\n| | check | detail |\n|---|---|---|\n{rows}\n"


def as_json(checks: list[Check]) -> str:
    return json.dumps({"ok": all(c.ok for c in checks), "checks": [c.as_dict() for c in checks]},
                      indent=2)


def print_text(checks: list[Check], console: Console) -> None:
    table = Table(title=headline(checks), show_lines=False)
    table.add_column("")
    table.add_column("check", style="bold")
    table.add_column("detail", overflow="fold")
    colour = {"ok": "green", "warn": "yellow", "fail": "red"}
    for c in checks:
        table.add_row(f"[{colour[c.state]}]{MARK[c.state]}[/]", c.name, Text(c.detail))
    console.print(table)
