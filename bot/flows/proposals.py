"""Index migrations from proposal to outcome, shared by Slack and the CLI: propose (posted for
approval), approve (decided, applied, measured), reject, reconcile after a restart. The state
lives in PostgreSQL (`bot.proposals.store`); the approval message shows it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from bot import cron, locks, squawk
from bot.advisor.model import Candidate, Recommendation
from bot.container import Container
from bot.db import connect
from bot.errors import UserError
from bot.flows import home
from bot.proposals import apply as applying
from bot.proposals import binding, migration, prisma, store
from bot.proposals.model import Proposal
from bot.render import proposals as render
from bot.slack import Reply

log = logging.getLogger(__name__)


class NothingToPropose(UserError):
    """There is no analysis with index recommendations to propose from."""


LATEST_SQL = """
SELECT id, report FROM hotdata.analyses
WHERE status = 'done' AND (%(id)s::bigint IS NULL OR id = %(id)s)
ORDER BY id DESC LIMIT 1
"""


async def propose(container: Container, user: str, analysis_id: int | None = None,
                  out: Path | None = None, post: bool = True) -> list[Proposal]:
    """Turn an analysis' recommendations (the latest, or `analysis_id`) into pending
    proposals, each linted and, when `post`, posted for approval. Recommendations already
    proposed and undecided are not proposed twice."""
    settings = container.settings
    async with container.pools.connection("state") as conn:
        cur = await conn.execute(LATEST_SQL, {"id": analysis_id})
        row = await cur.fetchone()
        # the report holds `recommend`'s records as JSON
        found = (cast(list[Recommendation], row["report"].get("recommendations") or [])
                 if row else [])
        recs = [r for r in found if r.get("action") == "create"]
        if row is None or not recs:
            raise NothingToPropose("No index recommendations to propose: run "
                                   "`/hotdata analyze` first (its recommendations are used).")
        await store.expire(conn, settings.proposal_ttl_hours)  # stale ones may be proposed anew
        analysis = row["id"]
        fresh = [r for r in recs if await store.open_for(conn, r["table"], r["index"]) is None]
    created = []
    schema = _prisma_schema(container)
    for rec in fresh:  # linted without holding a connection
        rec = {**rec, "lint": await squawk.lint(migration.content(
            0, rec, settings.lock_timeout_ms))}
        if schema is not None:
            rec["prisma"] = _prisma_line(schema, rec)
        async with container.pools.connection("analysis") as target:
            size = await applying.table_bytes(target, rec)  # what the approver will see
        async with container.pools.connection("state") as conn:
            proposal = await store.create(conn, rec, analysis, user, settings.channel, size,
                                          _approvals_required(container, size))
            if proposal is None:  # a concurrent propose was first: its proposal stands
                continue
            file_sha256 = binding.digest(migration.content(proposal["id"], rec,
                                                           settings.lock_timeout_ms))
            await store.set_file_digest(conn, proposal["id"], file_sha256)
            proposal["file_sha256"] = file_sha256
        if out is not None:
            path = migration.write(out, proposal["id"], rec, settings.lock_timeout_ms,
                                   settings.migration_layout)
            proposal["file"] = str(path)
        created.append(proposal)
    for proposal in created:
        await _supersede(container, proposal)
    if schema is not None and out is not None and created:
        _write_prisma_patch(container, schema, created, out)
    if post:
        for proposal in created:
            await _post(container, proposal)
    return created


def _candidate(rec: Recommendation) -> Candidate:
    schema, table = rec["table"].split(".", 1)
    return Candidate(schema, table, tuple(rec["columns"]), rec.get("where"),
                     tuple(rec.get("include") or ()))


async def _supersede(container: Container, newer: Proposal) -> None:
    """Pending proposals of the same table whose index the `newer` one serves entirely (its
    keys lead with theirs, the same rows, every column they hold) are superseded by it: their
    cards lose their buttons and say by which."""
    mine = _candidate(newer["evidence"])
    async with container.pools.connection("state") as conn:
        older = [p for p in await store.pending_on(conn, newer["table_name"])
                 if p["id"] != newer["id"] and p["evidence"]["action"] == "create"
                 and mine.widens(_candidate(p["evidence"]))]
        done = []
        for proposal in older:
            note = (f"superseded by index migration #{newer['id']} ({newer['index_name']}), "
                    "which serves everything it would")
            final = await store.mark(conn, proposal["id"], "superseded",
                                     {"superseded_by": newer["id"], "note": note},
                                     expect="pending")
            if final is not None:
                await store.audit(conn, "hotdata", "superseded", proposal["id"],
                                  proposal["sql"], "superseded", {"by": newer["id"]})
                done.append(final)
    for final in done:
        await _refresh(container, final)


def _prisma_schema(container: Container) -> str | None:
    """The text of HOTDATA_PRISMA_SCHEMA, with the Prisma layout; None otherwise."""
    settings = container.settings
    if settings.migration_layout != "prisma" or settings.prisma_schema is None:
        return None
    try:
        return settings.prisma_schema.read_text()
    except OSError as error:
        raise UserError(f"HOTDATA_PRISMA_SCHEMA cannot be read: {error.strerror or error}"
                        ) from None


def _prisma_line(schema: str, rec: Recommendation) -> dict[str, str | None]:
    """The `@@index` line a proposal carries for its model, or why there is none."""
    try:
        model = prisma.model_for(prisma.models(schema), rec["table"])
        line, note = prisma.index_line(model, rec)
    except prisma.PrismaError as error:
        return {"model": None, "line": None, "note": str(error)}
    return {"model": model.name, "line": line, "note": note}


def _write_prisma_patch(container: Container, schema: str, created: list[Proposal],
                        out: Path) -> None:
    """`<out>/schema.prisma.patch`: the new proposals' @@index lines in their models."""
    assert container.settings.prisma_schema is not None
    lines: dict[str, list[str]] = {}
    for proposal in created:
        found = proposal["evidence"].get("prisma") or {}
        if found.get("model") and found.get("line"):
            lines.setdefault(str(found["model"]), []).append(str(found["line"]))
    if not lines:
        return
    path = out / f"{container.settings.prisma_schema.name}.patch"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(prisma.patch(schema, lines, container.settings.prisma_schema.name))
    for proposal in created:
        proposal["prisma_patch"] = str(path)


def _approvals_required(container: Container, table_bytes: int | None) -> int:
    """HOTDATA_APPROVALS_REQUIRED distinct managers; with HOTDATA_APPROVALS_REQUIRED_OVER_MB,
    only for tables larger than that (one manager for the others)."""
    settings = container.settings
    over = settings.approvals_required_over_mb
    if over is None or (table_bytes or 0) > over * 1024 * 1024:
        return settings.approvals_required
    return 1


async def _post(container: Container, proposal: Proposal) -> None:
    channel = container.settings.channel or proposal.get("channel")
    if not channel:
        raise NothingToPropose("HOTDATA_CHANNEL is not set: hotdata does not know where to "
                               "post proposals for approval")
    posted = await container.client.chat_postMessage(
        channel=channel, text=render.headline(proposal), blocks=render.blocks(proposal))
    async with container.pools.connection("state") as conn:
        await store.set_message(conn, proposal["id"], str(posted["channel"]),
                                str(posted["ts"]))
    proposal.update({"channel": posted["channel"], "message_ts": posted["ts"]})


async def _refresh(container: Container, proposal: Proposal) -> None:
    """Show the proposal's current state on its approval message, and on the Home tabs that
    list it. Best effort: Postgres owns the state, so a Slack error must not stop a decision
    half-way (stuck in `applying`)."""
    channel, ts = proposal.get("channel"), proposal.get("message_ts")
    if proposal["approvals_required"] > 1:  # the card says who approved so far
        async with container.pools.connection("state") as conn:
            proposal["approvers"] = await store.approvers(conn, proposal)
    if channel and ts:
        try:
            await container.client.chat_update(channel=channel, ts=ts,
                                              text=render.headline(proposal),
                                              blocks=render.blocks(proposal))
        except Exception as error:  # Slack refused or is unreachable: the state is saved
            log.warning("could not update the message of proposal #%s: %s", proposal["id"],
                        container.settings.scrub(str(error)))
    await home.refresh_all(container)


async def _thread(container: Container, proposal: Proposal, text: str) -> None:
    channel, ts = proposal.get("channel"), proposal.get("message_ts")
    if channel and ts:
        try:
            await container.client.chat_postMessage(channel=channel, thread_ts=ts, text=text)
        except Exception as error:  # Slack refused or is unreachable: the state is saved
            log.warning("could not reply in the thread of proposal #%s: %s", proposal["id"],
                        container.settings.scrub(str(error)))


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
        await _expire(container, conn)
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
    await _refresh(container, proposal)
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
    await _refresh(container, queued or proposal)
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
    await _refresh(container, proposal)
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
    await _refresh(container, proposal)
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
        await _refresh(container, final or proposal)
        await _thread(container, final or proposal, f":x: Not applied: {message}")
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
    await _refresh(container, final or proposal)
    await _thread(container, final or proposal, (
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
    await _refresh(container, final or proposal)
    await _thread(container, final or proposal, (
        f":white_check_mark: `{rec['index']}` is dropped (rollback of index migration "
        f"#{rec.get('rollback_of')}): the statements it served took {figures['before_ms']} ms "
        f"before and {figures['after_ms']} ms after; drop {figures['drop_seconds']} s."))


async def propose_rollback(container: Container, proposal_id: int, user: str) -> Proposal:
    """A proposal to drop the index an applied proposal created, for the same approval (and
    the same checks) as any other; posted. Raises UserError when there is nothing to undo."""
    async with container.pools.connection("state") as conn:
        applied = await store.get(conn, proposal_id)
    if applied is None or applied["status"] != "applied" or \
            applied["evidence"]["action"] != "create":
        state = "does not exist" if applied is None else f"is {applied['status']}" + (
            " (a rollback itself)" if applied["evidence"]["action"] == "drop" else "")
        raise UserError(f"Only an applied index migration can be rolled back: #{proposal_id} "
                        f"{state}.")
    rec: Recommendation = {**applied["evidence"], "action": "drop", "lint": [],
                           "rollback_of": proposal_id}
    rec["sql"] = applying.drop_sql(rec)
    async with container.pools.connection("analysis") as target:
        size = await applying.table_bytes(target, rec)
    async with container.pools.connection("state") as conn:
        proposal = await store.create(conn, rec, applied["analysis_id"], user,
                                      container.settings.channel, size,
                                      _approvals_required(container, size))
    if proposal is None:
        raise UserError(f"The rollback of index migration #{proposal_id} is already proposed.")
    await _post(container, proposal)
    return proposal


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
    await _refresh(container, final or proposal)
    await _thread(container, final or proposal, (
        ":information_source: Nothing built: " if hold.outcome == "unneeded"
        else ":warning: Not built yet: ") + hold.message)


async def reject(container: Container, proposal_id: int, user: str, reason: str) -> str:
    refusal = await decision_refused(container, proposal_id, user, "reject")
    if refusal is not None:
        return refusal
    async with container.pools.connection("state") as conn:
        await _expire(container, conn)
        proposal = await store.decide(conn, proposal_id, "rejected", user, reason)
        if proposal is None:
            return await _already(conn, proposal_id)
        await store.audit(conn, user, "rejected", proposal_id, proposal["sql"], "rejected",
                          {"reason": reason})
    await _refresh(container, proposal)
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
        await _refresh(container, proposal)
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
        await _refresh(container, final)
        await _thread(container, final, f"After a restart, index migration "
                      f"#{final['id']} is {status}: {result.get('note') or result['error']}")
    return final


async def recent(container: Container) -> list[Proposal]:
    async with container.pools.connection("state") as conn:
        await _expire(container, conn)
        return await store.recent(conn)


async def expire_stale(container: Container) -> None:
    """Run every minute by each replica's scheduler, so that a card never shows buttons for a
    proposal past HOTDATA_PROPOSAL_TTL_HOURS, whether or not anyone looks at it (the
    UPDATE … RETURNING gives each expired proposal to one replica)."""
    async with container.pools.connection("state") as conn:
        await _expire(container, conn)


async def _expire(container: Container, conn: store.Conn) -> None:
    """Expire stale pending proposals and take their buttons off their messages."""
    for proposal in await store.expire(conn, container.settings.proposal_ttl_hours):
        await _refresh(container, proposal)


# --- what a person asked for, answered to them -------------------------------------------------

NO_ID = "This button does not carry a proposal id."


async def propose_for(container: Container, reply: Reply, user: str,
                      analysis_id: int | None = None) -> list[Proposal]:
    """`/hotdata propose` and the Propose button: the proposals posted, and a word to `user`."""
    created = await propose(container, user, analysis_id)
    await reply(f"Proposed {len(created)} index migration(s) in <#{container.settings.channel}> "
                "for a manager's approval." if created
                else "Every recommendation of the latest analysis is already proposed.")
    return created


async def list_for(container: Container, reply: Reply) -> None:
    """`/hotdata proposals`: pending and recent index migrations."""
    await reply(render.listing(await recent(container)))


async def approve_clicked(container: Container, reply: Reply, proposal_id: int | None,
                          user: str, approved: str | None) -> None:
    """Approve: `approved` is the statement digest the button carries (None: it carries
    none)."""
    await reply(NO_ID if proposal_id is None
                else await approve(container, proposal_id, user, approved))


async def apply_now_clicked(container: Container, reply: Reply, proposal_id: int | None,
                            user: str) -> None:
    await reply(NO_ID if proposal_id is None else await apply_now(container, proposal_id, user))


async def rollback_clicked(container: Container, reply: Reply, proposal_id: int | None,
                           user: str) -> None:
    """Propose rollback, under an applied migration's card: anyone may propose it; a manager
    decides, as for any proposal."""
    if proposal_id is None:
        await reply(NO_ID)
        return
    proposal = await propose_rollback(container, proposal_id, user)
    await reply(f"Proposed the rollback of index migration #{proposal_id} as #{proposal['id']} "
                f"in <#{container.settings.channel}> for a manager's approval.")


async def reject_clicked(container: Container, reply: Reply, proposal_id: int | None,
                         user: str, trigger_id: str) -> None:
    """A manager gets the modal that asks why; anyone else is told why not (and audited)."""
    if proposal_id is None:
        await reply(NO_ID)
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
