"""Connection arguments for PostgreSQL's command-line tools: the password goes through the
environment (PGPASSWORD), never the command line where `ps` would show it."""

from __future__ import annotations

from psycopg.conninfo import make_conninfo

from bot import tools
from bot.dsn import parse_dsn


def conninfo_and_env(dsn: str, **override: str) -> tuple[str, dict[str, str]]:
    parts = {**parse_dsn(dsn), **override}
    password = parts.pop("password", None)
    env = tools.clean_env()
    if password:
        env["PGPASSWORD"] = password
    return make_conninfo(**parts), env
