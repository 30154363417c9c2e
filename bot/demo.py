"""`hotdata demo`: the real bot on a throwaway PostgreSQL with the HotDash sample, driven
through signed Slack requests against a local stand-in for Slack, drawn in the terminal."""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import psycopg
from rich.console import Console

from bot import pgcluster
from bot.app import build_app
from bot.fake_slack import FakeSlack, FakeSlackServer
from bot.render.terminal import print_message
from bot.sample import hotdash
from bot.server import http_app, start_http, upgrade_state
from bot.services import Services
from bot.settings import Settings
from bot.slack import web_client
from bot.slack_requests import SlackRequests

CHANNEL = "C0DBOPS"
DATABASE = "hotdash"


async def _wait(slack: FakeSlack, method: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not slack.answered(method):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the bot did not call {method} within {timeout:.0f} s")
        await asyncio.sleep(0.1)


def _prepare(cluster: pgcluster.Cluster, scale: float, console: Console) -> str:
    """Load the sample, run the dashboard's workload; the id of the heaviest user."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DATABASE}")
    with psycopg.connect(cluster.dsn(DATABASE), autocommit=True) as conn:
        for name in ("pg_stat_statements", "hypopg"):
            available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = %s",
                                     (name,)).fetchone()
            if available:
                conn.execute(f"CREATE EXTENSION {name}")
            else:
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
        return str(row[0]) if row else ""


async def run(scale: float = 0.25, console: Console | None = None) -> int:
    console = console or Console()
    console.rule("hotdata demo")
    cluster = pgcluster.create()
    fake = FakeSlackServer().start()
    runner = None
    try:
        console.print(f"throwaway PostgreSQL on 127.0.0.1:{cluster.port} "
                      f"[dim](data in {cluster.root})[/]")
        heavy_user = await asyncio.to_thread(_prepare, cluster, scale, console)
        watched = cluster.root / "watched.toml"
        watched.write_text(hotdash.watched_queries_toml())
        secret = secrets.token_hex(16)
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=cluster.url(DATABASE), slack_bot_token="xoxb-demo",
            slack_signing_secret=secret, slack_api_url=fake.api_url, channel=CHANNEL,
            manager_ids=["U0MANAGER"], app_role="authenticated",
            app_jwt_claims=json.dumps({"sub": heavy_user, "role": "authenticated"}),
            watched_queries=watched)
        await upgrade_state(settings)
        services = Services(settings, web_client(settings))
        runner, port = await start_http(http_app(build_app(settings, services), services),
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
        console.rule("and /hotdata status")
        reply = await asyncio.to_thread(slack.slash, "status")
        await _wait(fake.slack, f"response_url/{reply.response_key}", timeout=30)
        status = fake.slack.responses(reply.response_key)[-1]
        print_message(console, status.get("blocks"), status.get("text", ""))
        return 0
    finally:
        if runner is not None:
            await runner.cleanup()
        fake.stop()
        cluster.destroy()
        console.print("[dim]demo database and servers removed[/]")
