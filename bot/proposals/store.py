"""Proposals and the audit log in the state schema. Postgres owns the state: every decision is
one `UPDATE … WHERE status = 'pending' RETURNING`, so only one click ever wins."""

from __future__ import annotations

from typing import Any, cast

import psycopg
from psycopg.types.json import Jsonb

from bot.advisor.model import Recommendation
from bot.proposals import binding
from bot.proposals.model import Proposal

Conn = psycopg.AsyncConnection[dict[str, Any]]
Cursor = psycopg.AsyncCursor[dict[str, Any]]


async def _one(cur: Cursor) -> Proposal | None:
    """The proposal a `RETURNING *` or `SELECT *` of hotdata.proposals returned, if any."""
    return cast(Proposal | None, await cur.fetchone())


async def _all(cur: Cursor) -> list[Proposal]:
    return cast(list[Proposal], await cur.fetchall())


async def audit(conn: Conn, actor: str, action: str, proposal_id: int | None,
                sql: str | None = None, outcome: str | None = None,
                detail: dict[str, Any] | None = None) -> None:
    """Append to hotdata.audit_log (which refuses UPDATE and DELETE)."""
    await conn.execute(
        "INSERT INTO hotdata.audit_log (actor, action, proposal_id, sql, outcome, detail) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (actor, action, proposal_id, sql, outcome, Jsonb(detail or {})))


async def create(conn: Conn, rec: Recommendation, analysis_id: int | None, proposed_by: str,
                 channel: str | None, table_bytes: int | None = None,
                 approvals_required: int = 1) -> Proposal | None:
    """A pending proposal, audited; None when the index already has an open one (the state
    schema holds one open proposal per index, whatever the concurrency). It is bound to the
    SHA-256 of its statement (`binding`); `table_bytes`: the table's size the card shows."""
    cur = await conn.execute(
        "INSERT INTO hotdata.proposals (analysis_id, table_name, index_name, sql, sql_sha256, "
        "proposed_by, evidence, channel, table_bytes, approvals_required) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (table_name, index_name) WHERE status IN ('pending', 'approved', "
        "'applying') DO NOTHING RETURNING *",
        (analysis_id, rec["table"], rec["index"], rec["sql"], binding.digest(rec["sql"]),
         proposed_by, Jsonb(rec), channel, table_bytes, approvals_required))
    row = await _one(cur)
    if row is not None:
        await audit(conn, proposed_by, "proposed", row["id"], rec["sql"], "pending",
                    {"sql_sha256": row["sql_sha256"]})
    return row


async def set_file_digest(conn: Conn, proposal_id: int, file_sha256: str) -> None:
    """The SHA-256 of the migration file written for the proposal (`migration.content`)."""
    await conn.execute("UPDATE hotdata.proposals SET file_sha256 = %s WHERE id = %s",
                       (file_sha256, proposal_id))


async def get(conn: Conn, proposal_id: int) -> Proposal | None:
    cur = await conn.execute("SELECT * FROM hotdata.proposals WHERE id = %s", (proposal_id,))
    return await _one(cur)


async def open_for(conn: Conn, table: str, index_name: str) -> Proposal | None:
    """The index's open (pending, approved or applying) proposal, if any."""
    cur = await conn.execute(
        "SELECT * FROM hotdata.proposals WHERE table_name = %s AND index_name = %s "
        "AND status IN ('pending', 'approved', 'applying')", (table, index_name))
    return await _one(cur)


async def add_approval(conn: Conn, proposal: Proposal, manager: str) -> tuple[bool, list[str]]:
    """Record `manager`'s approval of the proposal's current statement: (whether it is new,
    the managers who approved that statement, first first)."""
    cur = await conn.execute(
        "INSERT INTO hotdata.approvals (proposal_id, manager, sql_sha256) VALUES (%s, %s, %s) "
        "ON CONFLICT DO NOTHING RETURNING manager",
        (proposal["id"], manager, proposal["sql_sha256"]))
    new = await cur.fetchone() is not None
    return new, await approvers(conn, proposal)


async def approvers(conn: Conn, proposal: Proposal) -> list[str]:
    """The managers who approved the proposal's current statement, first first."""
    cur = await conn.execute(
        "SELECT manager FROM hotdata.approvals WHERE proposal_id = %s AND sql_sha256 = %s "
        "ORDER BY at, manager", (proposal["id"], proposal["sql_sha256"]))
    return [row["manager"] for row in await cur.fetchall()]


async def decide(conn: Conn, proposal_id: int, status: str, user: str,
                 reason: str | None = None) -> Proposal | None:
    """Move a pending proposal to `status`; None when someone decided first (or it expired)."""
    cur = await conn.execute(
        "UPDATE hotdata.proposals SET status = %s, decided_by = %s, decided_at = now(), "
        "reason = %s, updated_at = now() WHERE id = %s AND status = 'pending' RETURNING *",
        (status, user, reason, proposal_id))
    return await _one(cur)


async def mark(conn: Conn, proposal_id: int, status: str, result: dict[str, Any],
               expect: str | None = None) -> Proposal | None:
    """Set a proposal's status and result (only from `expect` when given)."""
    query = ("UPDATE hotdata.proposals SET status = %s, result = %s, updated_at = now() "
             "WHERE id = %s")
    params: list[Any] = [status, Jsonb(result), proposal_id]
    if expect is not None:
        query += " AND status = %s"
        params.append(expect)
    cur = await conn.execute(query + " RETURNING *", params)
    return await _one(cur)


async def ask_again(conn: Conn, proposal_id: int, reason: str,
                    table_bytes: int | None) -> Proposal | None:
    """An approved proposal back to pending (from `applying`): what the approver saw no longer
    holds; `table_bytes`, when given, is the table's size the card now shows."""
    cur = await conn.execute(
        "UPDATE hotdata.proposals SET status = 'pending', decided_by = NULL, decided_at = NULL, "
        "result = %s, table_bytes = coalesce(%s, table_bytes), updated_at = now() "
        "WHERE id = %s AND status = 'applying' RETURNING *",
        (Jsonb({"asked_again": reason}), table_bytes, proposal_id))
    row = await _one(cur)
    if row is not None:  # every manager decides again, on what the card now shows
        await conn.execute("DELETE FROM hotdata.approvals WHERE proposal_id = %s",
                           (proposal_id,))
    return row


async def set_message(conn: Conn, proposal_id: int, channel: str, ts: str) -> None:
    await conn.execute("UPDATE hotdata.proposals SET channel = %s, message_ts = %s "
                       "WHERE id = %s", (channel, ts, proposal_id))


async def expire(conn: Conn, ttl_hours: float) -> list[Proposal]:
    """Pending proposals older than the time-to-live become `expired`."""
    cur = await conn.execute(
        "UPDATE hotdata.proposals SET status = 'expired', updated_at = now() "
        "WHERE status = 'pending' AND created_at < now() - make_interval(secs => %s) "
        "RETURNING *", (ttl_hours * 3600,))
    rows = await _all(cur)
    for row in rows:
        await audit(conn, "hotdata", "expired", row["id"], row["sql"], "expired")
    return rows


async def pending_on(conn: Conn, table: str) -> list[Proposal]:
    """The pending proposals of a table (schema.table)."""
    cur = await conn.execute("SELECT * FROM hotdata.proposals WHERE status = 'pending' "
                             "AND table_name = %s ORDER BY id", (table,))
    return await _all(cur)


async def queued(conn: Conn) -> list[Proposal]:
    """Approved proposals waiting for the apply window, oldest first."""
    cur = await conn.execute("SELECT * FROM hotdata.proposals WHERE status = 'approved' "
                             "AND result ? 'queued_for' ORDER BY decided_at, id")
    return await _all(cur)


async def stuck(conn: Conn) -> list[Proposal]:
    cur = await conn.execute("SELECT * FROM hotdata.proposals WHERE status = 'applying'")
    return await _all(cur)


async def build_rates(conn: Conn, limit: int = 10) -> list[float]:
    """Bytes of table built per second by this server's last `limit` index builds."""
    cur = await conn.execute(
        "SELECT table_bytes / (result->>'build_seconds')::float AS rate "
        "FROM hotdata.proposals WHERE status = 'applied' AND evidence->>'action' = 'create' "
        "AND table_bytes > 0 AND (result->>'build_seconds')::float > 0 "
        "ORDER BY updated_at DESC LIMIT %s", (limit,))
    return [float(row["rate"]) for row in await cur.fetchall()]


async def recent(conn: Conn, limit: int = 15) -> list[Proposal]:
    cur = await conn.execute(
        "SELECT * FROM hotdata.proposals ORDER BY (status = 'pending') DESC, id DESC LIMIT %s",
        (limit,))
    return await _all(cur)
