"""Slack messages drawn in a terminal, as the team would see them in the channel."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group, RenderableType
from rich.markdown import Markdown
from rich.panel import Panel
from rich.rule import Rule
from rich.text import Text

EMOJI = {":white_check_mark:": "✅", ":warning:": "⚠️", ":x:": "❌",
         ":information_source:": "ℹ️", ":no_entry:": "⛔", ":zzz:": "💤",  # noqa: RUF001
         ":hourglass_flowing_sand:": "⏳", ":gear:": "⚙️", ":new:": "🆕",
         ":small_red_triangle:": "🔺", ":small_red_triangle_down:": "🔻"}


def _emoji(text: str) -> str:
    for code, glyph in EMOJI.items():
        text = text.replace(code, glyph)
    return text


def _mrkdwn(text: str) -> RenderableType:
    """Slack mrkdwn is close enough to markdown once bold `*x*` becomes `**x**`."""
    text = _emoji(text)
    converted = []
    for line in text.split("\n"):
        parts = line.split("*")
        if len(parts) % 2 == 1 and len(parts) > 1:
            line = "**".join(parts)
        converted.append(line)
    return Markdown("  \n".join(converted))


def message(blocks: list[dict[str, Any]] | None, text: str = "") -> RenderableType:
    items: list[RenderableType] = []
    for block in blocks or []:
        kind = block.get("type")
        if kind == "header":
            items.append(Text(block["text"]["text"], style="bold"))
        elif kind == "section":
            items.append(_mrkdwn(block["text"]["text"]))
        elif kind == "context":
            items.append(Text(_emoji(" ".join(e.get("text", "")
                                              for e in block.get("elements", []))),
                              style="dim"))
        elif kind == "divider":
            items.append(Rule(style="dim"))
        elif kind == "actions":
            buttons = [f"[ {e['text']['text']} ]" for e in block.get("elements", [])]
            items.append(Text("   ".join(buttons), style="bold cyan"))
    if not items:
        items.append(_mrkdwn(text))
    return Group(*items)


def print_message(console: Console, blocks: list[dict[str, Any]] | None, text: str = "",
                  channel: str = "#db-ops") -> None:
    console.print(Panel(message(blocks, text), title=f"{channel} · hotdata", title_align="left",
                        border_style="magenta"))
