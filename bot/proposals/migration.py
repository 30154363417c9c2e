"""Migration files for proposals: Supabase's naming (or Prisma's layout), a header with the
evidence, and the session settings that keep the build from blocking."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bot.advisor.model import Recommendation
from bot.proposals import binding


def filename(index: str, at: datetime, layout: str) -> Path:
    stamp = at.astimezone(UTC).strftime("%Y%m%d%H%M%S")
    if layout == "prisma":
        return Path("prisma") / "migrations" / f"{stamp}_hotdata_{index}" / "migration.sql"
    return Path(f"{stamp}_hotdata_{index}.sql")


def _evidence(rec: Recommendation) -> list[str]:
    lines = [f"-- Serves: {', '.join(rec.get('queries') or ['(no statement recorded)'])}",
             f"-- Planner cost of those statements: {rec.get('cost_before')} -> "
             f"{rec.get('cost_after')} (HypoPG)"]
    if rec.get("measured_before_ms") is not None:
        lines.append(f"-- Measured on a scratch copy: {rec['measured_before_ms']} ms -> "
                     f"{rec['measured_after_ms']} ms")
    size = rec.get("size_bytes") or 0
    lines.append(f"-- Size: {size / 1024 / 1024:.1f} MB"
                 f"{' (estimated)' if rec.get('size_estimated') else ''}; write cost about "
                 f"{rec.get('write_penalty_ms', 0)} ms over the same window")
    return lines


def content(proposal_id: int, rec: Recommendation, lock_timeout_ms: int) -> str:
    return "\n".join([
        f"-- hotdata proposal #{proposal_id}: {rec['index']} on {rec['table']}",
        f"-- Approved statement: sha256 {binding.digest(rec['sql'])}",
        *_evidence(rec),
        "-- Run this file OUTSIDE a transaction: CREATE INDEX CONCURRENTLY cannot run inside",
        "-- one (psql: plain `psql -f`; Supabase: keep it as its own migration file).",
        f"SET lock_timeout = '{int(lock_timeout_ms)}ms';",
        "SET statement_timeout = 0;",
        rec["sql"].rstrip(";") + ";",
        "",
    ])


def write(directory: Path, proposal_id: int, rec: Recommendation, lock_timeout_ms: int,
          layout: str, at: datetime | None = None) -> Path:
    """Write the migration file under `directory`; its path."""
    path = directory / filename(rec["index"], at or datetime.now(UTC), layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content(proposal_id, rec, lock_timeout_ms))
    return path
