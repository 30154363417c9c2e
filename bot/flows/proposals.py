"""Index migrations proposed, shared by Slack and the CLI: from an analysis' recommendations
(posted for approval) or as the rollback of an applied one; their cards and Home tabs kept
true (`refresh`), and expiry. Deciding and applying them is `bot.flows.approvals`. The state
lives in PostgreSQL (`bot.proposals.store`); the approval message shows it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

from bot import squawk
from bot.advisor.model import Candidate, Recommendation
from bot.catalog import kept_beside
from bot.container import Container
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
    keys lead with theirs, the same rows, every column they hold), unless small enough to be
    kept beside it (`catalog.kept_beside`), are superseded by it: their cards lose their
    buttons and say by which."""
    mine = _candidate(newer["evidence"])
    async with container.pools.connection("state") as conn:
        older = [p for p in await store.pending_on(conn, newer["table_name"])
                 if p["id"] != newer["id"] and p["evidence"]["action"] == "create"
                 and mine.widens(_candidate(p["evidence"])) and not kept_beside(
                     p["evidence"].get("size_bytes") or 0,
                     newer["evidence"].get("size_bytes") or 0)]
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
        await refresh(container, final)


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


async def refresh(container: Container, proposal: Proposal) -> None:
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


async def thread(container: Container, proposal: Proposal, text: str) -> None:
    channel, ts = proposal.get("channel"), proposal.get("message_ts")
    if channel and ts:
        try:
            await container.client.chat_postMessage(channel=channel, thread_ts=ts, text=text)
        except Exception as error:  # Slack refused or is unreachable: the state is saved
            log.warning("could not reply in the thread of proposal #%s: %s", proposal["id"],
                        container.settings.scrub(str(error)))


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


async def recent(container: Container) -> list[Proposal]:
    async with container.pools.connection("state") as conn:
        await expire(container, conn)
        return await store.recent(conn)


async def expire_stale(container: Container) -> None:
    """Run every minute by each replica's scheduler, so that a card never shows buttons for a
    proposal past HOTDATA_PROPOSAL_TTL_HOURS, whether or not anyone looks at it (the
    UPDATE … RETURNING gives each expired proposal to one replica)."""
    async with container.pools.connection("state") as conn:
        await expire(container, conn)


async def expire(container: Container, conn: store.Conn) -> None:
    """Expire stale pending proposals and take their buttons off their messages."""
    for proposal in await store.expire(conn, container.settings.proposal_ttl_hours):
        await refresh(container, proposal)


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


