"""Ack latency of `hotdata serve`: how fast the bot answers a signed `/hotdata help`.

What it measures: the wall-clock time from sending a slash-command request, signed exactly as
Slack signs it (v0 HMAC-SHA256), to having read the whole ack, for requests sent at a fixed
concurrency into a real `hotdata serve` subprocess in HTTP mode. The bot talks to a throwaway
PostgreSQL (`bot.pgcluster`) and to the fake Slack Web API (`bot.fake_slack`) on loopback.
`/hotdata help` is answered in the ack itself, so the figure is the cost of the HTTP edge:
aiohttp, signature verification, Bolt's dispatch and the listener.

Target: p99 under 100 ms at concurrency 20 on a 2-core machine (Slack gives an app 3 s to
ack; hotdata acks within 100 ms: listeners hand every piece of work off, see ARCHITECTURE.md).

Usage:

    .venv/bin/python bench/ack_latency.py [--requests 500] [--concurrency 20]
        [--client aiohttp|threads]

Prints one JSON object on stdout:
`{"requests", "concurrency", "p50_ms", "p99_ms", "max_ms", "mean_ms", "errors"}`
(percentiles by nearest rank). Progress and diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from common import logger, nearest_rank, positive

from bot import pgcluster
from bot.fake_slack import FakeSlackServer
from bot.slack_requests import Reply, SlackRequests, signed_headers

WARMUP_REQUESTS = 20
HEALTH_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
EXPECTED_TEXT = "/hotdata analyze"
BOT_TOKEN = "xoxb-bench"


log = logger("ack_latency")


@dataclass
class Sample:
    elapsed_ms: float
    ok: bool
    detail: str = ""


# --- the bot under test ----------------------------------------------------------------------

def serve_command() -> list[str]:
    """`hotdata serve` from this interpreter's environment."""
    script = Path(sys.executable).with_name("hotdata")
    if script.exists():
        return [str(script), "serve", "--host", "127.0.0.1"]
    return [sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1"]


def serve_env(database_url: str, secret: str, api_url: str, port: int) -> dict[str, str]:
    """The caller's environment without any hotdata/Slack setting, plus the bench's own."""
    env = {key: value for key, value in os.environ.items()
           if not key.upper().startswith(("HOTDATA_", "SLACK_"))}
    env.update({
        "HOTDATA_DATABASE_URL": database_url,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": secret,
        "HOTDATA_SLACK_API_URL": api_url,
        "HOTDATA_PORT": str(port),
    })
    return env


def wait_healthy(process: subprocess.Popen[bytes], port: int, timeout: float) -> str | None:
    """None once GET /healthz answers 200, otherwise why it did not."""
    url = f"http://127.0.0.1:{port}/healthz"
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"hotdata serve exited with status {process.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return None
                last = f"status {response.status}"
        except urllib.error.HTTPError as error:
            last = f"status {error.code}"
        except OSError as error:
            last = str(error)
        time.sleep(0.1)
    return f"/healthz did not answer 200 within {timeout:.0f} s ({last})"


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log(f"hotdata serve ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s; killing it")
        process.kill()
        process.wait(timeout=5)


# --- the clients -----------------------------------------------------------------------------

def check(status: int, text: str) -> tuple[bool, str]:
    if status != 200:
        return False, f"status {status}: {text[:120]!r}"
    if EXPECTED_TEXT not in text:
        return False, f"unexpected ack: {text[:120]!r}"
    return True, ""


async def run_aiohttp(requests: SlackRequests, total: int, concurrency: int) -> list[Sample]:
    """`total` requests, at most `concurrency` in flight, from one event loop (keep-alive)."""
    semaphore = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)

    async def one(session: aiohttp.ClientSession) -> Sample:
        async with semaphore:
            form, _ = requests.slash_form("help", "U0ENGINEER")
            body = urlencode(form)
            headers = signed_headers(requests.secret, body)
            started = time.perf_counter()
            try:
                async with session.post(requests.events_url, data=body.encode(),
                                        headers=headers) as response:
                    raw = await response.text()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as error:
                elapsed = (time.perf_counter() - started) * 1000
                return Sample(elapsed, False, f"{type(error).__name__}: {error}")
            elapsed = (time.perf_counter() - started) * 1000
        ok, detail = check(status, Reply(status, raw, elapsed).text)
        return Sample(elapsed, ok, detail)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        return list(await asyncio.gather(*(one(session) for _ in range(total))))


def run_threads(requests: SlackRequests, total: int, concurrency: int) -> list[Sample]:
    """`total` requests from a pool of `concurrency` threads (urllib: a connection each)."""

    def one(_: int) -> Sample:
        started = time.perf_counter()
        try:
            reply = requests.slash("help")
        except OSError as error:
            elapsed = (time.perf_counter() - started) * 1000
            return Sample(elapsed, False, f"{type(error).__name__}: {error}")
        ok, detail = check(reply.status, reply.text)
        return Sample(reply.elapsed_ms, ok, detail)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, range(total)))


def send(client: str, requests: SlackRequests, total: int, concurrency: int) -> list[Sample]:
    if client == "threads":
        return run_threads(requests, total, concurrency)
    return asyncio.run(run_aiohttp(requests, total, concurrency))


# --- figures ---------------------------------------------------------------------------------



def summarize(samples: list[Sample], concurrency: int) -> dict[str, float | int]:
    ordered = sorted(s.elapsed_ms for s in samples)
    return {
        "requests": len(samples),
        "concurrency": concurrency,
        "p50_ms": round(nearest_rank(ordered, 50), 2),
        "p99_ms": round(nearest_rank(ordered, 99), 2),
        "max_ms": round(ordered[-1], 2),
        "mean_ms": round(sum(ordered) / len(ordered), 2),
        "errors": sum(1 for s in samples if not s.ok),
    }


# --- main ------------------------------------------------------------------------------------



def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=positive, default=500,
                        help="measured requests (default 500)")
    parser.add_argument("--concurrency", type=positive, default=20,
                        help="requests in flight at once (default 20)")
    parser.add_argument("--client", choices=("aiohttp", "threads"), default="aiohttp",
                        help="aiohttp: one event loop with keep-alive connections (default); "
                             "threads: urllib in a thread pool, a new connection per request")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    secret = secrets.token_hex(16)
    port = pgcluster.free_port()
    log("starting a throwaway PostgreSQL")
    cluster = pgcluster.create()
    slack: FakeSlackServer | None = None
    process: subprocess.Popen[bytes] | None = None
    workdir = Path(tempfile.mkdtemp(prefix="hotdata-bench-"))
    stderr_path = workdir / "serve.stderr"
    try:
        slack = FakeSlackServer().start()
        command = serve_command()
        log(f"starting {' '.join(command)} on port {port}")
        with open(stderr_path, "wb") as stderr:
            # cwd: an empty directory, so no stray .env changes the configuration.
            process = subprocess.Popen(
                command, env=serve_env(cluster.url(), secret, slack.api_url, port),
                cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        problem = wait_healthy(process, port, HEALTH_TIMEOUT_S)
        if problem is not None:
            log(problem)
            stop_process(process)
            sys.stderr.write(stderr_path.read_text(errors="replace"))
            return 1

        requests = SlackRequests(f"http://127.0.0.1:{port}/slack/events", secret,
                                 slack.slack.url)
        log(f"warming up with {WARMUP_REQUESTS} requests ({args.client} client)")
        warm = send(args.client, requests, WARMUP_REQUESTS, args.concurrency)
        warm_errors = [s for s in warm if not s.ok]
        if warm_errors:
            log(f"{len(warm_errors)} warm-up error(s), first: {warm_errors[0].detail}")
        log(f"sending {args.requests} requests at concurrency {args.concurrency}")
        started = time.perf_counter()
        samples = send(args.client, requests, args.requests, args.concurrency)
        seconds = time.perf_counter() - started
        failed = [s for s in samples if not s.ok]
        log(f"done in {seconds:.2f} s ({len(samples) / seconds:.0f} req/s); "
            f"{len(failed)} error(s)" + (f", first: {failed[0].detail}" if failed else ""))
        print(json.dumps(summarize(samples, args.concurrency)))
        return 0
    finally:
        if process is not None:
            stop_process(process)
        if slack is not None:
            slack.stop()
        cluster.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
