"""The one way hotdata runs external tools (squawk, pg_dump, pg_restore, pgbackrest):
with a timeout, cancellable, stderr captured."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from psycopg.conninfo import make_conninfo

from bot.dsn import parse_dsn


class ToolMissing(Exception):
    """The tool is not installed where hotdata looks for it."""


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def find(name: str) -> str:
    """An absolute path as is; else the tool beside this Python first (a virtualenv's
    squawk), then on PATH."""
    if Path(name).is_absolute():
        if not Path(name).exists():
            raise ToolMissing(f"{name} does not exist")
        return name
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ToolMissing(f"{name} is not installed (not beside {sys.executable} nor on PATH)")
    return found


def clean_env() -> dict[str, str]:
    """This process's environment without hotdata's settings and Slack's tokens (database
    URLs carry passwords): what a tool gets, plus what it needs (PGPASSWORD)."""
    return {key: value for key, value in os.environ.items()
            if not key.upper().startswith(("HOTDATA_", "SLACK_"))}


class RunAs(TypedDict, total=False):
    """subprocess arguments that run a child as another user."""

    user: int
    group: int
    extra_groups: list[int]


def as_user(user: str | None) -> RunAs:
    """subprocess arguments that run a child as `user` with that user's groups only (not
    root's); nothing when `user` is None."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


async def run(name: str, *args: str, timeout: float = 60.0, stdin: str | None = None,
              env: dict[str, str] | None = None, user: str | None = None) -> Result:
    """Run a tool to completion (as `user` when given: PostgreSQL's own tools refuse root);
    on timeout or cancellation the process is killed."""
    # Its own process group: a timeout or cancellation kills its workers too (pg_dump -j,
    # pgbackrest process-max), not only the process we started.
    process = await asyncio.create_subprocess_exec(
        find(name), *args, stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env if env is not None else clean_env(), start_new_session=True,
        **as_user(user))
    try:
        out, err = await asyncio.wait_for(
            process.communicate(stdin.encode() if stdin is not None else None), timeout)
    except BaseException:  # timeout, cancellation: never leave the process behind
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        raise
    return Result(process.returncode or 0, out.decode(errors="replace"),
                  err.decode(errors="replace"))


def conninfo_and_env(dsn: str, **override: str) -> tuple[str, dict[str, str]]:
    """Connection arguments for PostgreSQL's command-line tools: the password goes through the
    environment (PGPASSWORD), never the command line where `ps` would show it."""
    parts = {**parse_dsn(dsn), **override}
    password = parts.pop("password", None)
    env = clean_env()
    if password:
        env["PGPASSWORD"] = password
    return make_conninfo(**parts), env
