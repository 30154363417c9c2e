"""Connection strings: parsing, and showing them without secrets."""

from __future__ import annotations

import re

from psycopg.conninfo import conninfo_to_dict, make_conninfo

_SECRET_KEYS = {"password", "sslpassword"}


def parse_dsn(dsn: str) -> dict[str, str]:
    """Parse a URL or key=value connection string; ValueError when it is neither."""
    try:
        parsed = conninfo_to_dict(dsn)
    except Exception:  # libpq's message quotes the string, password included: not shown
        raise ValueError("not a PostgreSQL connection string") from None
    return {key: str(value) for key, value in parsed.items() if value is not None}


def redact_dsn(dsn: str) -> str:
    """The connection string as it may be shown: `postgresql://user@host:port/db`, no password."""
    try:
        parts = parse_dsn(dsn)
    except ValueError:
        return "<unparseable connection string>"
    user = parts.get("user", "")
    host = parts.get("host", "")
    port = parts.get("port", "")
    netloc = (f"{user}@" if user else "") + (f"[{host}]" if host.startswith("/") else host)
    if port:
        netloc += f":{port}"
    return f"postgresql://{netloc}/{parts.get('dbname', '')}"


def with_options(dsn: str, **options: str) -> str:
    """The same connection string with extra libpq parameters (application_name, options…)."""
    return make_conninfo(dsn, **options)


def scrub(text: str, secrets: list[str]) -> str:
    """Remove secret values, and any password embedded in a URL, from a text before showing it."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return re.sub(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]+@", r"\1***@", text)
