"""`hotdata serve`: HTTP mode (aiohttp, /slack/events, /healthz) or Socket Mode."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp

from bot import migrate
from bot.app import build_app
from bot.container import Container
from bot.db import connect
from bot.drills.runner import clean_leftovers
from bot.flows.proposals import reconcile
from bot.schedule import Scheduler
from bot.schema import sandbox
from bot.settings import ConfigError, Settings
from bot.slack import web_client

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"


def http_app(app: AsyncApp | None, container: Container) -> web.Application:
    """The aiohttp application: Slack requests at /slack/events (unless Socket Mode), /healthz."""
    web_app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "tasks": container.tasks.running})

    web_app.router.add_get("/healthz", healthz)
    if app is not None:
        async def events(request: web.Request) -> web.Response:
            response = await app.async_dispatch(await to_bolt_request(request))
            return await to_aiohttp_response(response)

        web_app.router.add_post(EVENTS_PATH, events)

    async def drain(_: web.Application) -> None:
        await container.tasks.drain()

    web_app.on_shutdown.append(drain)
    return web_app


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
