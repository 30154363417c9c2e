"""`hotdata serve`: HTTP mode (aiohttp, /slack/events, /healthz) or Socket Mode."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import signal
import time

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest

from bot import migrate
from bot.app import build_app
from bot.container import Container
from bot.db import connect
from bot.drills.runner import clean_leftovers
from bot.flows.approvals import reconcile
from bot.schedule import Scheduler
from bot.schema import sandbox
from bot.settings import ConfigError, Settings
from bot.slack import web_client

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
SIGNATURE_MAX_AGE_S = 5 * 60  # what Slack and Bolt allow


def http_app(app: AsyncApp | None, container: Container) -> web.Application:
    """The aiohttp application: Slack requests at /slack/events (unless Socket Mode), /healthz."""
    web_app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "tasks": container.tasks.running})

    web_app.router.add_get("/healthz", healthz)
    if app is not None:
        secret = container.settings.slack_signing_secret
        assert secret is not None, "HTTP mode needs the signing secret (require_for_serve)"
        key = secret.get_secret_value().encode()

        async def events(request: web.Request) -> web.Response:
            return await answer_slack(app, key, request)

        web_app.router.add_post(EVENTS_PATH, events)

    async def drain(_: web.Application) -> None:
        await container.tasks.drain()

    web_app.on_shutdown.append(drain)
    return web_app


def signed_by_slack(key: bytes, body: bytes, timestamp: str | None,
                    signature: str | None, now: float) -> bool:
    """Slack's v0 signature over the raw bytes, at most five minutes old. (slack_sdk's
    verifier decodes the body first, so signed bytes that are not UTF-8 would look unsigned.)"""
    if not timestamp or not signature or not timestamp.isascii() or not timestamp.isdigit():
        return False
    if abs(now - int(timestamp)) > SIGNATURE_MAX_AGE_S:
        return False
    digest = hmac.new(key, b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256)
    return hmac.compare_digest("v0=" + digest.hexdigest(), signature)


async def answer_slack(app: AsyncApp, key: bytes, request: web.Request) -> web.Response:
    """Only a request signed with the signing secret, and fresh, is read at all (401
    otherwise); a signed one that Bolt cannot read, or that no listener could take, is
    malformed (400). Bolt checks the signature again."""
    body = await request.read()
    if not signed_by_slack(key, body, request.headers.get("X-Slack-Request-Timestamp"),
                           request.headers.get("X-Slack-Signature"), time.time()):
        return web.Response(status=401, text="unsigned or stale request")
    try:
        bolt_request = AsyncBoltRequest(body=body.decode("utf-8"), query=request.query_string,
                                        headers=dict(request.headers))
        response = await app.async_dispatch(bolt_request)
    except Exception as error:  # Bolt could not parse it, or failed on its shape
        log.warning("malformed signed request: %s", type(error).__name__)
        return web.Response(status=400, text="malformed request")
    if response.status in (404, 500):  # no listener for it, or one failed before its ack
        return web.Response(status=400, text="malformed request")
    return await to_aiohttp_response(response)


async def start_http(web_app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving; port 0 picks a free one. Returns the runner and the bound port; a port
    that cannot be bound is a ConfigError naming HOTDATA_PORT."""
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        raise ConfigError(f"HOTDATA_PORT {port} cannot be used on {host}: "
                          f"{error.strerror or error}: choose a free port") from None
    addresses = runner.addresses  # the bound sockets' names: (host, port, …)
    return runner, addresses[0][1] if addresses else port


async def upgrade_state(settings: Settings) -> list[str]:
    async with connect(settings, "state") as conn:
        return await migrate.upgrade(conn)


def start_housekeeping(container: Container) -> None:
    """What a start settles first: proposals left `applying` by a stopped bot (from the
    catalog), scratch databases a crashed drill left, and review sandboxes a crashed review
    left."""
    container.tasks.spawn(reconcile(container), name="reconcile")
    if container.settings.drills_configured:
        container.tasks.spawn(clean_leftovers(container.settings), name="drill-cleanup")
    container.tasks.spawn(sandbox.drop_leftovers(container.settings), name="review-cleanup")


async def serve(settings: Settings, host: str = "0.0.0.0") -> None:
    """Run until SIGINT/SIGTERM; running tasks get time to finish."""
    settings.require_for_serve()
    applied = await upgrade_state(settings)
    if applied:
        log.info("state schema upgraded: %s", ", ".join(applied))
    container = Container(settings, web_client(settings))
    app = build_app(settings, container)
    # The port first: a port in use stops hotdata before it starts any work.
    runner, port = await start_http(http_app(None if settings.socket_mode else app, container),
                                    host, settings.port)
    start_housekeeping(container)
    scheduler = Scheduler(container)
    await scheduler.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    socket_handler = None
    if settings.socket_mode:
        assert settings.slack_app_token is not None
        socket_handler = AsyncSocketModeHandler(
            app, settings.slack_app_token.get_secret_value(), web_client=container.client)
        # slack_bolt's Socket Mode handler has no annotations
        await socket_handler.connect_async()  # type: ignore[no-untyped-call]
        log.info("hotdata connected in Socket Mode; health on port %s", port)
    else:
        log.info("hotdata listening on port %s (%s, /healthz)", port, EVENTS_PATH)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await scheduler.stop()
        if socket_handler is not None:
            await socket_handler.close_async()  # type: ignore[no-untyped-call]  # unannotated
        await runner.cleanup()  # drains the running tasks first
        await container.pools.close()
