"""The plain data the analysis steps pass along."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.catalog import Table


@dataclass
class Statement:
    """One query of the workload, however many texts it arrived in."""

    identity: str  # sqltext.identity: fingerprint plus relations
    query: str
    source: str  # "pg_stat_statements" | "watched"
    queryid: str | None = None
    name: str | None = None
    calls: int = 0
    total_ms: float = 0.0
    mean_ms: float = 0.0
    rows: int = 0
    shared_blks_hit: int = 0
    shared_blks_read: int = 0
    temp_blks_written: int = 0
    io_ms: float = 0.0  # reading and writing blocks (with track_io_timing; else 0)
    params: list[str | None] | None = None  # sample values given for a watched query
    bypass_calls: int = 0  # calls made by roles that bypass RLS (superusers, BYPASSRLS)

    @property
    def runs_as_app(self) -> bool:
        """Whether most calls come through RLS, as the application's role would (a watched
        query without statistics is assumed to)."""
        return not self.calls or self.bypass_calls * 2 < self.calls


@dataclass
class Finding:
    kind: str
    table: str | None
    detail: str
    fix: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "table": self.table, "detail": self.detail, "fix": self.fix}


@dataclass
class PlanRun:
    """One EXPLAIN of a statement: as whom, with which values, and what came back."""

    role: str  # "owner" | "app"
    label: str  # "common" | "median" | "rare" | "given" | "none"
    values: list[str | None]
    plan: dict[str, Any] | None = None
    analyzed: bool = False
    ms: float | None = None
    error: str | None = None


@dataclass
class QueryResult:
    statement: Statement
    runs: list[PlanRun] = field(default_factory=list)
    generic_run: PlanRun | None = None  # generic plan: common values, else the slowest run's
    findings: list[Finding] = field(default_factory=list)
    plan_summary: str = ""
    app_plan_differs: bool = False
    app_plan_summary: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    tables: dict[str, Table] = field(default_factory=dict)  # what it reads, behind views too


@dataclass
class OwnerRls:
    """Owner plans that ran under RLS: hotdata's role neither bypasses it (superuser,
    BYPASSRLS) nor owns these tables, so their policies hid rows from it."""

    role: str
    tables: list[str]

    @property
    def note(self) -> str:
        return (f"owner plans ran under row level security as {self.role} (no BYPASSRLS) on "
                f"{', '.join(self.tables)}: rows hidden by policies were not counted, so those "
                "plans, their findings and the recommendations may differ from a role that "
                "sees every row; use a role with BYPASSRLS for owner plans")


@dataclass
class Analysis:
    database: str
    collected_at: str
    results: list[QueryResult] = field(default_factory=list)
    # The advisor's records (bot.advisor.model.Recommendation and Drop, a layer above this
    # one), read here as plain mappings.
    recommendations: Sequence[Mapping[str, Any]] = field(default_factory=list)
    cleanup: Sequence[Mapping[str, Any]] = field(default_factory=list)  # DROP INDEX proposals
    # why no recommendation serves a statement a finding says needs an index (Declined)
    declined: Sequence[Mapping[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # total_s, explain_s
    id: int | None = None
    owner_rls: OwnerRls | None = None
    planner_settings: dict[str, str] = field(default_factory=dict)  # plan-changing settings


def slowest(runs: list[PlanRun]) -> PlanRun | None:
    """The planned run that took longest: the one a statement's plan summary shows."""
    planned = [r for r in runs if r.plan is not None]
    if not planned:
        return None
    return max(planned, key=lambda r: r.ms or 0.0)
