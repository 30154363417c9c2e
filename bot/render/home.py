"""The App Home tab: the latest analysis, the proposals waiting (with their buttons for a
manager), the last drills, what runs next, and hotdata's health — for one person."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot import units
from bot.proposals.model import Proposal
from bot.render import proposals as cards

TOP = 3  # statements of the latest analysis shown


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150]}}


def _analysis(analysis: dict[str, Any] | None) -> list[dict[str, Any]]:
    if analysis is None:
        return [_section("No analysis yet: type `/hotdata analyze` in a channel.")]
    queries = (analysis.get("report") or {}).get("queries") or []
    where = (f" in <{analysis['permalink']}|its thread>" if analysis.get("permalink") else
             f" in <#{analysis['channel']}>" if analysis.get("channel") else "")
    lines = [f"#{analysis['id']}, {analysis['finished_at']:%Y-%m-%d %H:%M} UTC{where}"]
    for n, query in enumerate(queries[:TOP], 1):
        label = query.get("name") or f"queryid {query.get('queryid')}"
        lines.append(f"{n}. *{label}* · {query.get('mean_ms')} ms mean · "
                     f"{query.get('calls')} calls · {len(query.get('findings') or [])} "
                     "finding(s)")
    return [_section("\n".join(lines))]


def _proposal(proposal: Proposal, manager: bool) -> list[dict[str, Any]]:
    rec = proposal["evidence"]
    text = (f"*#{proposal['id']}* `{rec['index']}` on `{rec['table']}` — "
            f"{proposal['status']}, proposed by <@{proposal.get('proposed_by')}>")
    if proposal.get("approvals_required", 1) > 1:
        text += f" · {len(proposal.get('approvers') or [])} of {proposal['approvals_required']}"
    out = [_section(text)]
    if manager:  # the card's own buttons: the same checks, the same digest
        out += [b for b in cards.blocks(proposal) if b["type"] == "actions"]
    return out


def _drills(drills: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not drills:
        return [_section("No restore drill yet: `/hotdata drill`.")]
    last = drills[0]
    lines = [f"Last: #{last['id']} {last['status']} · RTO {units.duration(last['rto_seconds'])}"
             f" · RPO {units.duration(last['rpo_seconds'])}"]
    if len(drills) > 1:
        lines.append("Trend (newest first): " + ", ".join(
            f"#{d['id']} {units.duration(d['rto_seconds'])}" for d in drills))
    return [_section("\n".join(lines))]


def view(*, analysis: dict[str, Any] | None, proposals: list[Proposal], manager: bool,
         drills: list[dict[str, Any]], next_runs: dict[str, datetime | None],
         health: str) -> dict[str, Any]:
    """The `home` view for one person (`manager`: whether they may decide proposals)."""
    blocks: list[dict[str, Any]] = [_header("hotdata"), _section(health), _header(
        "Latest analysis"), *_analysis(analysis), _header("Index migrations waiting")]
    waiting = [p for p in proposals if p["status"] == "pending"]
    if not waiting:
        blocks.append(_section("Nothing is waiting for a decision."))
    for proposal in waiting[:10]:
        blocks += _proposal(proposal, manager)
    if not manager and waiting:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": (
            "Only managers may approve or reject; their Home shows the buttons.")}]})
    blocks += [_header("Restore drills"), *_drills(drills), _header("Next")]
    blocks.append(_section("\n".join(
        f"*{job}*: " + (f"{at:%Y-%m-%d %H:%M} UTC" if at else "not scheduled")
        for job, at in next_runs.items())))
    return {"type": "home", "blocks": blocks[:100]}
