"""A stand-in for Slack's Web API on 127.0.0.1 that records every call.

Used by the tests, the benchmarks and the demo (which renders what the bot "posted").
It answers the methods hotdata uses, a `response_url` endpoint and the file-upload URL, and
can be told to fail a method with 429 (with Retry-After) or 5xx a number of times.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import BodyPartReader, web

TEAM = {"team": "HotDash", "team_id": "T0HOTDASH", "user": "hotdata", "user_id": "U0HOTDATA",
        "bot_id": "B0HOTDATA", "url": "https://hotdash.slack.com/"}


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    status: int
    at: float = field(default_factory=time.monotonic)


@dataclass
class Failure:
    status: int
    times: int
    retry_after: int = 1


class FakeSlack:
    """The server's state: recorded calls, planned failures, user groups, uploaded files."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.failures: dict[str, Failure] = {}
        self.usergroups: dict[str, list[str]] = {}
        self.uploads: dict[str, bytes] = {}
        self.url = ""
        self._ts = itertools.count(1)
        self._lock = threading.Lock()

    # --- what tests use -------------------------------------------------------------------
    def fail(self, method: str, status: int = 429, times: int = 1, retry_after: int = 1) -> None:
        self.failures[method] = Failure(status, times, retry_after)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.failures.clear()
            self.uploads.clear()
            self.usergroups.clear()

    def answered(self, method: str) -> list[Call]:
        """Calls of `method` that were answered with success."""
        return [c for c in list(self.calls) if c.method == method and c.status == 200]

    def attempts(self, method: str) -> list[Call]:
        return [c for c in list(self.calls) if c.method == method]

    def response_url(self, key: str) -> str:
        return f"{self.url}response_url/{key}"

    def responses(self, key: str) -> list[dict[str, Any]]:
        return [c.params for c in self.answered(f"response_url/{key}")]

    def wait_for(self, method: str, count: int = 1, timeout: float = 10.0) -> list[Call]:
        """Block until `count` successful calls of `method` were recorded (or fail)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.answered(method)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        seen = sorted({c.method for c in self.calls})
        raise AssertionError(f"expected {count} call(s) of {method} within {timeout}s; "
                             f"got {len(self.answered(method))}; methods seen: {seen}")

    # --- the HTTP side --------------------------------------------------------------------
    def application(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)  # e.g. chat.getPermalink
        app.router.add_post("/response_url/{key}", self._response_url)
        app.router.add_post("/upload/{file_id}", self._upload)
        return app

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        body = await request.read()
        kind = request.content_type
        if kind == "application/json" and body:
            params.update(json.loads(body))
        elif kind == "application/x-www-form-urlencoded":
            params.update(parse_qsl(body.decode()))
        for key in ("blocks", "attachments"):
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            params.setdefault("token", auth[7:])
        return params

    def _planned_failure(self, method: str) -> web.Response | None:
        failure = self.failures.get(method)
        if failure is None or failure.times <= 0:
            return None
        failure.times -= 1
        if failure.status == 429:
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                     headers={"Retry-After": str(failure.retry_after)})
        return web.Response(status=failure.status, text="upstream failure")

    def _record(self, method: str, params: dict[str, Any], status: int) -> None:
        with self._lock:
            self.calls.append(Call(method, params, status))

    async def _served(self, method: str, request: web.Request) -> dict[str, Any] | web.Response:
        """The call recorded; the request's parameters, or the planned failure to answer."""
        params = await self._params(request)
        failure = self._planned_failure(method)
        self._record(method, params, 200 if failure is None else failure.status)
        return params if failure is None else failure

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        served = await self._served(method, request)
        if isinstance(served, web.Response):
            return served
        return web.json_response(self._answer(method, served))

    def _answer(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel", "C0HOTDATA")
        if method == "auth.test":
            return {"ok": True, **TEAM}
        if method == "chat.postMessage":
            ts = f"{int(time.time())}.{next(self._ts):06d}"
            return {"ok": True, "channel": channel, "ts": ts,
                    "message": {"text": params.get("text"), "ts": ts}}
        if method == "chat.update":
            return {"ok": True, "channel": channel, "ts": params.get("ts")}
        if method == "chat.getPermalink":
            ts = str(params.get("message_ts", "")).replace(".", "")
            return {"ok": True, "channel": channel,
                    "permalink": f"https://hotdata-test.slack.com/archives/{channel}/p{ts}"}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": f"{int(time.time())}.{next(self._ts):06d}"}
        if method == "views.open":
            return {"ok": True, "view": {"id": f"V{next(self._ts):08d}"}}
        if method == "usergroups.users.list":
            users = self.usergroups.get(str(params.get("usergroup")))
            if users is None:
                return {"ok": False, "error": "no_such_subteam"}
            return {"ok": True, "users": users}
        if method == "files.getUploadURLExternal":
            file_id = f"F{next(self._ts):08d}"
            return {"ok": True, "upload_url": f"{self.url}upload/{file_id}", "file_id": file_id}
        if method == "files.completeUploadExternal":
            files = params.get("files")
            if isinstance(files, str):
                files = json.loads(files)
            return {"ok": True, "files": [{"id": f.get("id"), "title": f.get("title")}
                                          for f in files or []]}
        return {"ok": True}

    async def _response_url(self, request: web.Request) -> web.Response:
        served = await self._served(f"response_url/{request.match_info['key']}", request)
        return served if isinstance(served, web.Response) else web.Response(text="ok")

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        if request.content_type == "multipart/form-data":
            data = b""
            async for part in await request.multipart():
                assert isinstance(part, BodyPartReader)  # Slack's uploads are not nested
                data += await part.read()
        else:
            data = await request.read()
        self.uploads[file_id] = data
        self._record("upload", {"file_id": file_id, "bytes": len(data)}, 200)
        return web.Response(text="OK")


class LoopThread:
    """An asyncio loop in a daemon thread, so synchronous code can host async servers."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, work: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


class FakeSlackServer:
    """Runs a FakeSlack on 127.0.0.1 in its own thread; `.slack` holds what it recorded."""

    def __init__(self) -> None:
        self.slack = FakeSlack()
        self._thread = LoopThread("fake-slack")
        self._runner: web.AppRunner | None = None

    def start(self) -> FakeSlackServer:
        self._runner, port = self._thread.run(self._start())
        self.slack.url = f"http://127.0.0.1:{port}/"
        return self

    async def _start(self) -> tuple[web.AppRunner, int]:
        runner = web.AppRunner(self.slack.application(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, runner.addresses[0][1]  # the bound socket's (host, port)

    @property
    def api_url(self) -> str:
        return f"{self.slack.url}api/"

    def stop(self) -> None:
        if self._runner is not None:
            self._thread.run(self._runner.cleanup())
        self._thread.close()
