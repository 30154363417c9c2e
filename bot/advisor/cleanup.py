"""Cleanup: indexes that cost writes and space and serve nothing another index does not.

`redundant` and `unused` decide which indexes can go; lint reports its duplicate_index and
unused_index findings from the same two functions, so a drop is proposed exactly when lint
reports one, with the same evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import Any

import psycopg
from psycopg import sql

from bot import catalog
from bot.advisor.model import Drop
from bot.catalog import Index, Snapshot, Table

UNUSED_MIN_AGE_DAYS = 7


def _sql(template: str, *identifiers: sql.Composable) -> str:
    return sql.SQL(template).format(*identifiers).as_string(None)


def drop_sql(schema: str, index: str) -> str:
    """`DROP INDEX CONCURRENTLY IF EXISTS "schema"."index"` for catalog names."""
    return _sql("DROP INDEX CONCURRENTLY IF EXISTS {}", sql.Identifier(schema, index))


@dataclass
class Redundancy:
    """`index` can go: `keeper` serves every lookup it serves."""

    index: Index
    keeper: Index
    exact: bool

    @property
    def reason(self) -> str:
        keys = ", ".join(self.index.keys)
        where = f" WHERE {self.index.predicate}" if self.index.predicate else ""
        if self.exact:
            return (f"{self.index.name} duplicates {self.keeper.name}: same keys ({keys}){where}")
        return (f"{self.index.name} ({keys}) is a prefix of {self.keeper.name} "
                f"({', '.join(self.keeper.keys)}){where}, which serves the same lookups")


def _keep_rank(index: Index) -> tuple[bool, bool, bool, int, int]:
    """Which of two equivalent indexes to keep: the constrained, the unique, the used, the older."""
    return (index.protected is not None, index.unique, index.scans is not None,
            index.scans or 0, -index.oid)


def _covers(keeper: Index, index: Index) -> bool | None:
    """True: `index` is an exact duplicate of `keeper`; False: a redundant prefix of it;
    None: `keeper` does not make `index` redundant (a prefix at most half its size is not:
    `catalog.kept_beside`)."""
    if not (keeper.valid and index.valid and keeper.method == index.method
            and keeper.predicate == index.predicate):
        return None
    if index.identity == keeper.identity and index.include == keeper.include:
        return True
    if (index.method == "btree" and not index.unique
            and keeper.identity[:len(index.identity)] == index.identity
            and (len(keeper.identity) > len(index.identity)
                 or set(index.include) < set(keeper.include))
            and set(index.include) <= set(keeper.columns)
            and not catalog.kept_beside(index.size_bytes, keeper.size_bytes)):
        return False
    return None


def redundant(table: Table) -> list[Redundancy]:
    """Duplicate and prefix-redundant indexes of `table`, each with the index that stays.

    The widest indexes are considered first, so every keeper stays; primary keys, indexes
    behind constraints and the replica identity are never the one to drop. Partitioned tables
    are left out: their indexes cannot be dropped CONCURRENTLY.
    """
    if table.partitioned:
        return []
    order = sorted(table.indexes, key=lambda i: (len(i.columns), _keep_rank(i)), reverse=True)
    kept: list[Index] = []
    found = []
    for index in order:
        keeper = None
        if index.protected is None:
            for candidate in kept:
                exact = _covers(candidate, index)
                if exact is not None:
                    keeper = candidate
                    found.append(Redundancy(index, candidate, exact))
                    break
        if keeper is None:
            kept.append(index)
    return found


def unused(table: Table, snapshot: Snapshot,
           min_age_days: int = UNUSED_MIN_AGE_DAYS) -> list[Index]:
    """Indexes never scanned in statistics at least `min_age_days` old. Not reported: unique and
    constrained indexes (they enforce something), the keeper of a redundant index, and the only
    index serving a foreign key (deletes on the referenced table need it)."""
    if snapshot.stats_days < min_age_days or table.partitioned:
        return []
    redundancies = redundant(table)
    keepers = {r.keeper.oid for r in redundancies}
    dropped = {r.index.oid for r in redundancies}
    found = []
    for index in table.indexes:
        if (index.scans != 0 or not index.valid or index.unique or index.protected
                or index.oid in keepers):
            continue
        others = [i for i in table.indexes if i.oid != index.oid and i.oid not in dropped]
        if any(index.serves_foreign_key(fk) and not any(o.serves_foreign_key(fk) for o in others)
               for fk in table.foreign_keys):
            continue
        found.append(index)
    return found




def _write_cost(table: Table, snapshot: Snapshot) -> str:
    since = snapshot.stats_since.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{table.index_writes:,} writes since {since} each also updated this index "
            f"({table.inserts:,} inserts, {table.updates - table.hot_updates:,} non-HOT updates, "
            f"{table.deletes:,} deletes)")


def _proposal(table: Table, index: Index, reasons: list[str],
              snapshot: Snapshot) -> Drop:
    return {"action": "drop", "table": table.qualified, "index": index.name,
            "sql": drop_sql(table.schema, index.name), "size_bytes": index.size_bytes,
            "reason": "; ".join(reasons), "write_cost": _write_cost(table, snapshot),
            "writes": table.index_writes, "scans": index.scans,
            "columns": index.keys, "include": index.include,
            "where": index.predicate}


def proposals(snapshot: Snapshot,
              unused_min_age_days: int = UNUSED_MIN_AGE_DAYS) -> list[Drop]:
    """One drop per redundant or unused index, largest first."""
    found = []
    for table in snapshot.tables:
        reasons: dict[int, tuple[Index, list[str]]] = {}
        for r in redundant(table):
            reasons.setdefault(r.index.oid, (r.index, []))[1].append(r.reason)
        for index in unused(table, snapshot, unused_min_age_days):
            reasons.setdefault(index.oid, (index, []))[1].append(
                f"{index.name} has not been scanned in {snapshot.stats_window}")
        found += [_proposal(table, index, why, snapshot) for index, why in reasons.values()]
    return sorted(found, key=lambda p: (-p["size_bytes"], p["table"], p["index"]))


async def cleanup(conn: psycopg.AsyncConnection[dict[str, Any]],
                  unused_min_age_days: int = UNUSED_MIN_AGE_DAYS,
                  schemas: list[str] | None = None) -> list[Drop]:
    """Drop proposals for the connected database: `{"action": "drop", "table", "index", "sql",
    "size_bytes", "reason", "write_cost", …}`, `sql` always DROP INDEX CONCURRENTLY IF EXISTS."""
    return proposals(await catalog.snapshot(conn, schemas), unused_min_age_days)
