"""The plain data of a drill, and its JSON shape (`DrillResult.as_dict`, listed in
ARCHITECTURE.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Phase:
    name: str
    seconds: float


@dataclass
class Facts:
    """What must survive a restore, read from one database (source or copy)."""

    counts: dict[str, int] = field(default_factory=dict)  # schema.table → rows
    fingerprints: dict[str, str] = field(default_factory=dict)  # schema.table → md5
    rls: dict[str, tuple[bool, bool]] = field(default_factory=dict)  # enabled, forced
    owners: dict[str, str] = field(default_factory=dict)  # schema.table → owning role
    policies: set[tuple[str, ...]] = field(default_factory=set)
    grants: set[tuple[str, str, str]] = field(default_factory=set)  # table, grantee, privilege
    probes: dict[str, str] = field(default_factory=dict)  # probe → outcome
    heartbeat: datetime | None = None


@dataclass
class Backup:
    """A backup ready to restore, and what is known about its contents."""

    source: str  # dump | directory
    path: Path  # a directory-format dump, or a custom-format file
    globals_sql: Path | None
    taken_at: datetime | None
    facts: Facts | None  # the source's facts in the dump's own snapshot, when known
    bytes: int


@dataclass
class DrillResult:
    source: str
    status: str = "failed"
    rto_seconds: float | None = None
    rpo_seconds: float | None = None
    backup_age_seconds: float | None = None
    bytes_restored: int = 0
    phases: list[Phase] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    tables_verified: int = 0
    rows_verified: int = 0
    policies_verified: int = 0
    scratch_database: str | None = None
    recovery_target: datetime | None = None  # a point-in-time drill's target
    id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "status": self.status, "source": self.source,
            "rto_seconds": self.rto_seconds, "rpo_seconds": self.rpo_seconds,
            "backup_age_seconds": self.backup_age_seconds,
            "bytes_restored": self.bytes_restored,
            "phases": [{"name": p.name, "seconds": p.seconds} for p in self.phases],
            "tables_verified": self.tables_verified, "rows_verified": self.rows_verified,
            "policies_verified": self.policies_verified,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "scratch_database": self.scratch_database,
            "recovery_target": (self.recovery_target.isoformat() if self.recovery_target
                                else None),
        }
