"""A proposal as the state schema holds it: one row of `hotdata.proposals`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NotRequired, TypedDict

from bot.advisor.model import Recommendation


class Proposal(TypedDict):
    """A row of hotdata.proposals (migrations/0001_init.sql), as `RETURNING *` gives it."""

    id: int
    analysis_id: int | None
    table_name: str
    index_name: str
    sql: str
    sql_sha256: str  # of `sql` when proposed: what the card shows and Approve carries
    file_sha256: str | None  # of its migration file (`migration.content`)
    # pending | approved | applying | applied | rejected | failed | expired | unneeded |
    # superseded
    status: str
    table_bytes: int | None  # the table's size when proposed (or last asked again)
    approvals_required: int  # distinct managers it needs (the proposer never counts)
    proposed_by: str | None
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None
    evidence: Recommendation  # the recommendation it was proposed from, with squawk's lint
    # the figures once applied, the error, the note (unneeded), or why it is asked again
    result: dict[str, Any] | None
    channel: str | None
    message_ts: str | None
    created_at: datetime
    updated_at: datetime
    file: NotRequired[str]  # the migration file written for it (`hotdata propose --out`)
    approvers: NotRequired[list[str]]  # who approved its current statement so far
    prisma_patch: NotRequired[str]  # the schema.prisma patch written with it (`--out`)
