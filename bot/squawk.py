"""squawk, the migration linter: its findings on a migration's SQL (proposals and schema
reviews lint theirs)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from bot import tools


async def lint(text: str) -> list[dict[str, str]]:
    """squawk's findings on a migration: [{rule, level, message, help}]."""
    with tempfile.TemporaryDirectory(prefix="hotdata-squawk-") as directory:
        path = Path(directory) / "migration.sql"
        path.write_text(text)
        try:
            result = await tools.run("squawk", "--reporter", "json", str(path), timeout=30)
        except tools.ToolMissing as missing:
            return [{"rule": "squawk-missing", "level": "Warning", "message": str(missing),
                     "help": "pip install squawk-cli"}]
    try:
        found = json.loads(result.stdout or "[]")
    except ValueError:
        return [{"rule": "squawk-error", "level": "Warning",
                 "message": (result.stderr or result.stdout).strip()[:300], "help": ""}]
    return [{"rule": f.get("rule_name", ""), "level": f.get("level", ""),
             "message": f.get("message", ""), "help": f.get("help", "")} for f in found]
