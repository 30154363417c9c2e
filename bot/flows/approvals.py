"""Deciding index migrations, shared by Slack and the CLI: approve (bound to the statement the
card shows, counted under the two-person rule, queued for the apply window, re-checked just
before building, applied and measured), reject, and reconcile after a restart. Every decision
and refusal is audited; the cards follow (`bot.flows.proposals.refresh`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot import cron, locks
from bot.container import Container
from bot.db import connect
from bot.flows import proposals
from bot.proposals import apply as applying
from bot.proposals import binding, migration, store
from bot.proposals.model import Proposal
from bot.render import proposals as render
from bot.slack import Reply


async def decision_refused(container: Container, proposal_id: int, user: str,
                           action: str) -> str | None:
    """The refusal to show `user`, audited, or None when they may decide (checked again by
    every service call: fail closed)."""
    async with container.pools.connection("state") as conn:
        proposal = await store.get(conn, proposal_id)
        if proposal is None:
            return f"There is no index migration #{proposal_id}."
        refusal = await container.managers.refusal(user, proposal["proposed_by"])
        if refusal is not None:
            await store.audit(conn, user, "refused", proposal_id, proposal["sql"], action,
                              {"reason": refusal})
        return refusal


# After "was already approved by <@…>": how it went on (statuses only an approval reaches).
ALREADY = {"approved": "", "applying": " (being applied now)", "applied": " and applied",
           "failed": " but could not be applied"}


async def _already(conn: store.Conn, proposal_id: int) -> str:
    proposal = await store.get(conn, proposal_id)
    if proposal is None:
        return f"There is no index migration #{proposal_id}."
    who = f" by <@{proposal['decided_by']}>" if proposal.get("decided_by") else ""
    status = proposal["status"]
    if status in ALREADY:
        return f"Index migration #{proposal_id} was already approved{who}{ALREADY[status]}."
    return f"Index migration #{proposal_id} was already {status}{who}."


async def approve(container: Container, proposal_id: int, user: str,
                  approved: str | None) -> str:
    """Decide, then apply. `approved`: the statement digest the clicked card showed
    (`binding.short`); a card that shows another statement, or none, approves nothing.
    Returns what to tell the clicking user."""
    refusal = await decision_refused(container, proposal_id, user, "approve")
    if refusal is not None:
        return refusal
    settings = container.settings
    async with connect(settings, "state") as conn:
        await proposals.expire(container, conn)
        current = await store.get(conn, proposal_id)
        if current is not None and current["status"] == "pending":  # else decide() answers
            refused = (await _stale_card(container, conn, current, user, approved)
                       or await _count_approval(container, conn, current, user))
            if refused is not None:
                return refused
        proposal = await store.decide(conn, proposal_id, "approved", user)
        if proposal is None:
            return await _already(conn, proposal_id)
        await store.audit(conn, user, "approved", proposal_id, proposal["sql"], "approved",
                          {"sql_sha256": proposal["sql_sha256"],
                           "approvers": await store.approvers(conn, proposal)})
        queued = await _queue(container, conn, proposal, datetime.now(UTC))
        if queued is not None:
            return (f"Approved index migration #{proposal_id}; it is queued for "
                    f"{queued:%Y-%m-%d %H:%M} UTC, inside HOTDATA_APPLY_WINDOW.")
        await _build(container, conn, proposal_id)
    return f"Approved index migration #{proposal_id}; the result is in the channel."


async def _build(container: Container, conn: store.Conn, proposal_id: int) -> bool:
    """Apply an approved proposal now, unless another process already took it: the advisory
    lock, held until `conn` closes, tells reconcile it is not a leftover."""
    await conn.execute("SELECT pg_advisory_lock(%s, %s)", locks.applying(proposal_id))
    approved = await store.get(conn, proposal_id)
    estimate = None
    if approved is not None and approved["evidence"]["action"] == "create":
        estimate = applying.build_estimate(approved["table_bytes"],
                                           await store.build_rates(conn),
                                           approved["evidence"].get("build_seconds"))
    proposal = await store.mark(conn, proposal_id, "applying",
                                {"estimate": estimate} if estimate else {}, expect="approved")
    if proposal is None:
        return False
    await proposals.refresh(container, proposal)
    await _apply(container, proposal)
    return True


async def _queue(container: Container, conn: store.Conn, proposal: Proposal,
                 now: datetime) -> datetime | None:
    """Outside HOTDATA_APPLY_WINDOW, an approved proposal waits, visibly, for the window's
    next minute (the leader builds it then); the time it is queued for, or None."""
    window = container.settings.apply_window
    if window is None or cron.in_window(cron.cron_trigger(window), now):
        return None
    start = cron.next_fire(cron.cron_trigger(window), now)
    queued = await store.mark(conn, proposal["id"], "approved",
                              {"queued_for": start.isoformat() if start else None},
                              expect="approved")
    await store.audit(conn, "hotdata", "queued", proposal["id"], proposal["sql"], "approved",
                      {"queued_for": start.isoformat() if start else None})
    await proposals.refresh(container, queued or proposal)
    return start


async def apply_queued(container: Container, now: datetime) -> list[int]:
    """Inside HOTDATA_APPLY_WINDOW (at `now`), build the approved proposals queued for it,
    each exactly once whichever replica runs this; the ids built."""
    window = container.settings.apply_window
    if window is None or not cron.in_window(cron.cron_trigger(window), now):
        return []
    async with container.pools.connection("state") as conn:
        waiting = await store.queued(conn)
    built = []
    for proposal in waiting:
        async with connect(container.settings, "state") as conn:
            if await _build(container, conn, proposal["id"]):
                built.append(proposal["id"])
    return built


async def apply_now(container: Container, proposal_id: int, user: str) -> str:
    """A manager's "Apply now" on a queued proposal: built at once, outside the window."""
    refusal = await decision_refused(container, proposal_id, user, "apply now")
    if refusal is not None:
        return refusal
    async with connect(container.settings, "state") as conn:
        proposal = await store.get(conn, proposal_id)
        if proposal is None or proposal["status"] != "approved" or \
                not (proposal.get("result") or {}).get("queued_for"):
            return await _already(conn, proposal_id)
        await store.audit(conn, user, "applied now", proposal_id, proposal["sql"], "approved")
        if not await _build(container, conn, proposal_id):
            return await _already(conn, proposal_id)
    return f"Applying index migration #{proposal_id} now; the result is in the channel."


async def _count_approval(container: Container, conn: store.Conn, proposal: Proposal,
                          user: str) -> str | None:
    """Under the two-person rule, record `user`'s approval of the pending `proposal`; what to
    tell them while it needs more managers, or None once it has enough (the proposer never
    counts)."""
    if proposal["approvals_required"] < 2:
        return None
    proposal_id, required = proposal["id"], proposal["approvals_required"]
    if user == proposal["proposed_by"]:
        await store.audit(conn, user, "refused", proposal_id, proposal["sql"], "approve",
                          {"reason": "the proposer never counts"})
        return (f"You proposed index migration #{proposal_id}: it needs {required} other "
                "managers' approvals, and yours never counts.")
    new, names = await store.add_approval(conn, proposal, user)
    if len(names) >= required:
        return None
    if not new:
        return (f"You have already approved index migration #{proposal_id}: "
                f"{len(names)} of {required}; another manager must approve too.")
    await store.audit(conn, user, "approval", proposal_id, proposal["sql"], "pending",
                      {"approvers": names, "required": required})
    await proposals.refresh(container, proposal)
    return (f"Your approval of index migration #{proposal_id} is recorded: {len(names)} of "
            f"{required}; another manager must approve too.")


async def _stale_card(container: Container, conn: store.Conn, proposal: Proposal, user: str,
                      approved: str | None) -> str | None:
    """Why a click must not approve the pending `proposal`: the card showed another statement
    than it holds now, or none (a card older than statement digests). Audited; the card is
    redrawn with the proposal as it is."""
    proposal_id = proposal["id"]
    current = binding.short(proposal["sql_sha256"])
    if approved == current:
        return None
    await store.audit(conn, user, "refused", proposal_id, proposal["sql"], "approve",
                      {"reason": "stale card", "card_sha256": approved,
                       "sql_sha256": proposal["sql_sha256"]})
    await proposals.refresh(container, proposal)
    shown = f"statement sha256 `{approved}`" if approved else "no statement digest"
    return (f"Nothing approved: this card showed {shown}, but index migration #{proposal_id} "
            f"now holds sha256 `{current}`. The card shows the current statement again: "
            "read it, then approve there.")


async def _apply(container: Container, proposal: Proposal) -> None:
    settings, rec = container.settings, proposal["evidence"]
    try:
        if binding.digest(proposal["sql"]) != proposal["sql_sha256"]:
            raise applying.ApplyFailed(
                f"refused: the statement to run (sha256 "
                f"{binding.short(binding.digest(proposal['sql']))}) is not the one approved "
                f"(sha256 {binding.short(proposal['sql_sha256'])}): the proposal was edited "
                "after it was posted")
        if rec.get("sql") != proposal["sql"]:
            raise applying.ApplyFailed("refused: the stored statement differs from the one in "
                                       "the proposal's evidence (edited after it was proposed)")
        if rec["action"] == "drop":  # a rollback: nothing to check but the statement
            figures = await applying.drop(settings, rec)
        else:
            async with container.pools.connection("migrator") as target:
                hold = await applying.preflight(target, rec, proposal.get("table_bytes"),
                                                settings.apply_growth_limit,
                                                settings.lock_timeout_ms)
            if hold is not None and hold.outcome == "refused":
                raise applying.ApplyFailed(hold.message)
            if hold is not None:
                await _hold(container, proposal, hold)
                return
            figures = await applying.apply(settings, rec)
    except Exception as error:  # every failure is recorded and shown, never lost
        message = container.settings.scrub(" ".join(str(error).split()) or type(error).__name__)
        async with container.pools.connection("state") as conn:
            final = await store.mark(conn, proposal["id"], "failed", {"error": message})
            await store.audit(conn, "hotdata", "failed", proposal["id"], proposal["sql"],
                              "failed", {"error": message})
        await proposals.refresh(container, final or proposal)
        await proposals.thread(container, final or proposal, f":x: Not applied: {message}")
        return
    if rec["action"] == "drop":
        await _dropped(container, proposal, figures)
        return
    async with container.pools.connection("state") as conn:
        final = await store.mark(conn, proposal["id"], "applied", figures)
        await store.audit(conn, "hotdata", "applied", proposal["id"], proposal["sql"],
                          "applied", figures)
    if settings.migrations_dir is not None:
        migration.write(settings.migrations_dir, proposal["id"], rec, settings.lock_timeout_ms,
                        settings.migration_layout)
    await proposals.refresh(container, final or proposal)
    await proposals.thread(container, final or proposal, (
        f":white_check_mark: `{rec['index']}` is built and valid: the statements it serves "
        f"took {figures['before_ms']} ms before and {figures['after_ms']} ms after "
        f"(median of {applying.REPEATS} runs each); build {figures['build_seconds']} s."))


async def _dropped(container: Container, proposal: Proposal, figures: dict[str, Any]) -> None:
    """A rollback applied: recorded, audited, and said on its card and in its thread."""
    rec = proposal["evidence"]
    async with container.pools.connection("state") as conn:
        final = await store.mark(conn, proposal["id"], "applied", figures)
        await store.audit(conn, "hotdata", "applied", proposal["id"], proposal["sql"],
                          "applied", figures)
    await proposals.refresh(container, final or proposal)
    await proposals.thread(container, final or proposal, (
        f":white_check_mark: `{rec['index']}` is dropped (rollback of index migration "
        f"#{rec.get('rollback_of')}): the statements it served took {figures['before_ms']} ms "
        f"before and {figures['after_ms']} ms after; drop {figures['drop_seconds']} s."))


async def _hold(container: Container, proposal: Proposal, hold: applying.Hold) -> None:
    """Nothing built: an index already serves it (the proposal is `unneeded`), or a manager
    must decide again (back to `pending`, buttons and all); audited, and the card says why."""
    async with container.pools.connection("state") as conn:
        if hold.outcome == "unneeded":
            final = await store.mark(conn, proposal["id"], "unneeded", {"note": hold.message},
                                     expect="applying")
        else:
            final = await store.ask_again(conn, proposal["id"], hold.message, hold.table_bytes)
        await store.audit(conn, "hotdata", hold.outcome.replace("_", " "), proposal["id"],
                          proposal["sql"], final["status"] if final else None,
                          {"reason": hold.message})
    await proposals.refresh(container, final or proposal)
    await proposals.thread(container, final or proposal, (
        ":information_source: Nothing built: " if hold.outcome == "unneeded"
        else ":warning: Not built yet: ") + hold.message)


async def reject(container: Container, proposal_id: int, user: str, reason: str) -> str:
    refusal = await decision_refused(container, proposal_id, user, "reject")
    if refusal is not None:
        return refusal
    async with container.pools.connection("state") as conn:
        await proposals.expire(container, conn)
        proposal = await store.decide(conn, proposal_id, "rejected", user, reason)
        if proposal is None:
            return await _already(conn, proposal_id)
        await store.audit(conn, user, "rejected", proposal_id, proposal["sql"], "rejected",
                          {"reason": reason})
    await proposals.refresh(container, proposal)
    return f"Rejected index migration #{proposal_id}."


async def reconcile(container: Container) -> list[Proposal]:
    """After a restart: settle proposals left `applying` from what the catalog says, expire
    old ones, and show the outcome on their messages."""
    settings = container.settings
    settled = []
    async with container.pools.connection("state") as conn:
        expired = await store.expire(conn, settings.proposal_ttl_hours)
        left = await store.stuck(conn)
    for proposal in expired:
        await proposals.refresh(container, proposal)
    for proposal in left:
        final = await _reconcile_one(container, proposal)
        if final is not None:
            settled.append(final)
    return settled


async def _reconcile_one(container: Container, proposal: Proposal) -> Proposal | None:
    """Settle one proposal left `applying`, unless a live process is still applying it."""
    settings, rec = container.settings, proposal["evidence"]
    async with connect(settings, "state") as lock:
        cur = await lock.execute("SELECT pg_try_advisory_lock(%s, %s) AS free",
                                 locks.applying(proposal["id"]))
        row = await cur.fetchone()
        if not row or not row["free"]:
            return None
        current = await store.get(lock, proposal["id"])  # its process may have just finished
        if current is None or current["status"] != "applying":
            return None
        async with connect(settings, "migrator") as target:
            state = await applying.index_state(target, rec)
            if state is not None and state["valid"] and state["ready"]:
                status, result = "applied", {"reconciled": True,
                                             "note": "found built and valid after a restart"}
            else:
                _, left = await applying.clean_up(target, rec)
                if state is not None and state["partitioned"]:
                    left = ("the partitioned table's empty index stays (invalid, so unused); "
                            "the next build completes it")
                status, result = "failed", {"reconciled": True, "error": (
                    f"hotdata stopped while building the index; {left}. Approve a new proposal "
                    "to retry.")}
        final = await store.mark(lock, proposal["id"], status, result, expect="applying")
        await store.audit(lock, "hotdata", "reconciled", proposal["id"], proposal["sql"],
                          status, result)
    if final is not None:
        await proposals.refresh(container, final)
        await proposals.thread(container, final, f"After a restart, index migration "
                      f"#{final['id']} is {status}: {result.get('note') or result['error']}")
    return final


async def approve_clicked(container: Container, reply: Reply, proposal_id: int | None,
                          user: str, approved: str | None) -> None:
    """Approve: `approved` is the statement digest the button carries (None: it carries
    none)."""
    await reply(proposals.NO_ID if proposal_id is None
                else await approve(container, proposal_id, user, approved))


async def apply_now_clicked(container: Container, reply: Reply, proposal_id: int | None,
                            user: str) -> None:
    await reply(proposals.NO_ID if proposal_id is None
                else await apply_now(container, proposal_id, user))


async def reject_clicked(container: Container, reply: Reply, proposal_id: int | None,
                         user: str, trigger_id: str) -> None:
    """A manager gets the modal that asks why; anyone else is told why not (and audited)."""
    if proposal_id is None:
        await reply(proposals.NO_ID)
        return
    refusal = await decision_refused(container, proposal_id, user, "reject")
    if refusal is not None:
        await reply(refusal)
        return
    await container.client.views_open(trigger_id=trigger_id,
                                      view=render.reject_modal(proposal_id))


async def reject_submitted(container: Container, proposal_id: int, user: str,
                           reason: str) -> None:
    """The reason modal was sent: decide (authorised again); a refusal goes to `user` alone."""
    outcome = await reject(container, proposal_id, user, reason)
    if not outcome.startswith("Rejected") and container.settings.channel:
        await container.client.chat_postEphemeral(channel=container.settings.channel,
                                                  user=user, text=outcome)
