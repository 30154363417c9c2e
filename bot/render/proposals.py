"""Proposal messages: the approval request with its buttons, and every final state."""

from __future__ import annotations

from typing import Any

from bot import units
from bot.advisor.model import Recommendation
from bot.proposals import binding
from bot.proposals.model import Proposal
from bot.render.modal import text_modal

APPROVE = "hotdata_approve"
REJECT = "hotdata_reject"
PROPOSE = "hotdata_propose"
ROLLBACK = "hotdata_rollback"
APPLY_NOW = "hotdata_apply_now"
REASON_CALLBACK = "hotdata_reject_reason"
RUNBOOK = "runbooks/index-rollout.md"

STATE_LINE = {
    "pending": ":hourglass_flowing_sand: Waiting for a manager's decision",
    "approved": ":gear: Approved by <@{decided_by}>, applying…",
    "applying": ":gear: Approved by <@{decided_by}>, applying…",
    "applied": ":white_check_mark: Applied (approved by <@{decided_by}>)",
    "rejected": ":no_entry: Rejected by <@{decided_by}>: {reason}",
    "failed": ":x: Not applied: {error}",
    "expired": ":zzz: Expired without a decision",
    "unneeded": ":information_source: Nothing built (approved by <@{decided_by}>): {note}",
    "superseded": ":fast_forward: Not needed any more: {note}",
}


def _mb(size: Any) -> str:
    return f"{(size or 0) / 1024 / 1024:.1f} MB"


def _why(rec: Recommendation, table_bytes: int | None) -> str:
    lines = [f"*Serves:* {', '.join(rec.get('queries') or []) or '—'}",
             f"*Planner cost:* {rec.get('cost_before')} → {rec.get('cost_after')}"]
    if rec.get("measured_before_ms") is not None:
        lines.append(f"*Measured on a scratch copy:* {rec['measured_before_ms']} ms → "
                     f"{rec['measured_after_ms']} ms")
    else:
        lines.append("*Measured:* not yet (HypoPG estimate; hotdata measures after applying)")
    lines.append(f"*Size:* {_mb(rec.get('size_bytes'))}"
                 f"{' (estimated)' if rec.get('size_estimated') else ''} · *write cost:* "
                 f"about {rec.get('write_penalty_ms', 0)} ms over the analysed window")
    if table_bytes is not None:
        build = (f"built in {rec['build_seconds']} s on the scratch copy"
                 if rec.get("build_seconds") is not None else "build time measured when applied")
        lines.append(f"*Table:* {units.size_text(table_bytes)} when proposed · {build}")
    roles = rec.get("costed_as") or ["owner"]
    lines.append(f"*RLS check:* costed as {', '.join(roles)}"
                 + (" (the application's role, under its policies)"
                    if roles != ["owner"] else ""))
    found = rec.get("prisma")
    if found:
        lines.append(f"*Prisma:* in model `{found['model']}`: `{found['line']}`"
                     if found.get("line") else "*Prisma:* no @@index line")
        if found.get("note"):
            lines.append(f"_{found['note']}_")
    lint = rec.get("lint") or []
    lines.append("*Lint (squawk):* " + ("clean" if not lint else "; ".join(
        f"{f['rule']}: {f['message']}" for f in lint)[:600]))
    return "\n".join(lines)


def blocks(proposal: Proposal) -> list[dict[str, Any]]:
    rec = proposal["evidence"]
    status = proposal["status"]
    result = proposal.get("result") or {}
    queued = status == "approved" and result.get("queued_for")
    line = (":hourglass: Approved by <@{decided_by}>, queued for "
            f"{str(result['queued_for'])[:16].replace('T', ' ')} UTC (HOTDATA_APPLY_WINDOW)"
            if queued else STATE_LINE[status])
    estimate = result.get("estimate") if status == "applying" else None
    if estimate:
        line += f" (build estimated at about {estimate['seconds']:g} s, {estimate['basis']})"
    state = line.format(decided_by=proposal.get("decided_by") or "?",
                                      reason=proposal.get("reason") or "no reason given",
                                      error=result.get("error") or "unknown error",
                                      note=result.get("note") or "")
    rollback = rec["action"] == "drop"
    what = (f"*What:* drop `{rec['index']}` on `{rec['table']}`: the rollback of index "
            f"migration #{rec.get('rollback_of')}; the statements below ran with it"
            if rollback else
            f"*What:* `{rec['index']}` on `{rec['table']}` ({', '.join(rec['columns'])})"
            + (f" WHERE {rec['where']}" if rec.get("where") else ""))
    out: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": (
            f"Index {'rollback' if rollback else 'migration'} #{proposal['id']}: "
            f"{rec['table']}")[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": what[:3000]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _why(rec, proposal.get(
            "table_bytes"))[:3000]}},
        {"type": "section", "text": {"type": "mrkdwn",
                                     "text": f"```{rec['sql']}```"[:3000]}},
    ]
    if status == "applied":
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": (
            f"*Effect:* {result.get('before_ms')} ms → {result.get('after_ms')} ms for the "
            "statements it served · dropped in " f"{result.get('drop_seconds')} s"
            if rollback else
            f"*Effect:* {result.get('before_ms')} ms → {result.get('after_ms')} ms for the "
            f"statements it serves · built in {result.get('build_seconds')} s · "
            f"{_mb(result.get('size_bytes'))}")}})
    out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": (
        f"{state} · proposed by <@{proposal.get('proposed_by')}> · statement sha256 "
        f"`{binding.short(proposal['sql_sha256'])}` · rollback and details: "
        f"`{RUNBOOK}`")[:3000]}]})
    if proposal.get("approvals_required", 1) > 1:
        names = proposal.get("approvers") or []
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": (
            f"*Approvals:* {len(names)} of {proposal['approvals_required']}"
            + (f" — {', '.join(f'<@{n}>' for n in names)}" if names else "")
            + " (distinct managers; the proposer never counts)")[:3000]}})
    if queued:
        out.append({"type": "actions", "block_id": "queued", "elements": [
            {"type": "button", "action_id": APPLY_NOW, "value": str(proposal["id"]),
             "text": {"type": "plain_text", "text": "Apply now"},
             "confirm": {"title": {"type": "plain_text", "text": "Apply outside the window?"},
                         "text": {"type": "mrkdwn", "text": (
                             f"hotdata will build `{rec['index']}` on `{rec['table']}` now, "
                             "outside HOTDATA_APPLY_WINDOW.")[:300]},
                         "confirm": {"type": "plain_text", "text": "Apply now"},
                         "deny": {"type": "plain_text", "text": "Wait for the window"}}}]})
    if status == "applied" and not rollback:
        out.append({"type": "actions", "block_id": "undo", "elements": [
            {"type": "button", "action_id": ROLLBACK, "value": str(proposal["id"]),
             "text": {"type": "plain_text", "text": "Propose rollback"}}]})
    if status == "pending" and result.get("asked_again"):
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": (
            f":warning: *Approve again:* {result['asked_again']}")[:3000]}})
    if status == "pending":
        out.append({"type": "actions", "block_id": "decision", "elements": [
            {"type": "button", "action_id": APPROVE, "style": "primary",
             "value": binding.button_value(proposal["id"], proposal["sql_sha256"]),
             "text": {"type": "plain_text", "text": "Approve"},
             "confirm": {"title": {"type": "plain_text", "text": "Apply this index?"},
                         "text": {"type": "mrkdwn", "text": (
                             f"hotdata will run `{'DROP' if rollback else 'CREATE'} INDEX "
                             f"CONCURRENTLY` on `{rec['table']}` now, with a lock timeout, "
                             "without blocking writes.")[:300]},
                         "confirm": {"type": "plain_text", "text": "Approve and apply"},
                         "deny": {"type": "plain_text", "text": "Cancel"}}},
            {"type": "button", "action_id": REJECT, "style": "danger",
             "value": str(proposal["id"]), "text": {"type": "plain_text", "text": "Reject"}},
        ]})
    return out


def headline(proposal: Proposal) -> str:
    rec = proposal["evidence"]
    return f"Index migration #{proposal['id']} ({proposal['status']}): {rec['sql']}"[:3000]


def reject_modal(proposal_id: int) -> dict[str, Any]:
    return text_modal(REASON_CALLBACK, str(proposal_id), f"Reject migration #{proposal_id}",
                      "Reject", "reason", "Why? (shown in the channel)", 3, 500)


def listing(rows: list[Proposal]) -> str:
    if not rows:
        return "No index migrations have been proposed yet."
    lines = ["*Index migrations* (pending first)"]
    for row in rows:
        lines.append(f"• #{row['id']} `{row['index_name']}` on `{row['table_name']}` — "
                     f"*{row['status']}*"
                     + (f" by <@{row['decided_by']}>" if row.get("decided_by") else "")
                     + f" · proposed {row['created_at']:%Y-%m-%d %H:%M} UTC")
    return "\n".join(lines)[:3000]
