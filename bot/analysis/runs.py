"""Analyses in the state schema: one running per channel (claimed, then finished or failed),
and analyses run outside Slack recorded as done."""

from __future__ import annotations

import json

import psycopg
from psycopg.types.json import Jsonb

from bot.db import Conn
from bot.errors import UserError

STALE_AFTER = "15 minutes"


class AnalysisBusy(UserError):
    """An analysis is already running in this channel."""


async def claim(conn: Conn, channel: str, user: str) -> int:
    """Record a running analysis for `channel`, or raise AnalysisBusy naming the one running."""
    await conn.execute(
        "UPDATE hotdata.analyses SET status = 'failed', finished_at = now(), "
        "error = 'abandoned: no result after " + STALE_AFTER + "' "
        "WHERE status = 'running' AND started_at < now() - %s::interval", (STALE_AFTER,))
    try:
        cur = await conn.execute(
            "INSERT INTO hotdata.analyses (channel, requested_by) VALUES (%s, %s) "
            "RETURNING id", (channel, user))
    except psycopg.errors.UniqueViolation:
        cur = await conn.execute(
            "SELECT requested_by, extract(epoch FROM now() - started_at)::int AS age "
            "FROM hotdata.analyses WHERE channel = %s AND status = 'running'", (channel,))
        row = await cur.fetchone()
        who = f"<@{row['requested_by']}>" if row else "someone"
        age = f" {row['age']} s ago" if row else ""
        raise AnalysisBusy(f"An analysis is already running in this channel (started by "
                           f"{who}{age}); its results will appear here.") from None
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def finish(conn: Conn, analysis_id: int, report: str, markdown: str,
                 message_ts: str | None = None) -> None:
    """Store a claimed analysis' report (its JSON) and markdown, and the message it is
    posted as: done."""
    await conn.execute(
        "UPDATE hotdata.analyses SET status = 'done', finished_at = now(), report = %s, "
        "markdown = %s, message_ts = %s WHERE id = %s",
        (Jsonb(json.loads(report)), markdown, message_ts, analysis_id))


async def record(conn: Conn, report: str, markdown: str, requested_by: str) -> int:
    """Store an analysis run outside Slack (the CLI) as done; its id."""
    cur = await conn.execute(
        "INSERT INTO hotdata.analyses (requested_by, status, finished_at, report, markdown) "
        "VALUES (%s, 'done', now(), %s, %s) RETURNING id",
        (requested_by, Jsonb(json.loads(report)), markdown))
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def fail(conn: Conn, analysis_id: int, error: str) -> None:
    await conn.execute(
        "UPDATE hotdata.analyses SET status = 'failed', finished_at = now(), error = %s "
        "WHERE id = %s", (error, analysis_id))
