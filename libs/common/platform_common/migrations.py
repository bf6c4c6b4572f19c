"""Numbered SQL migrations per service, applied at start by one function.

A service keeps `migrations/NNNN_what.sql` beside its code. Each file is applied once, in order, all of a start's
in one transaction (a failure applies none of them), and recorded in `<schema>.schema_migrations` with its checksum.
`{s}` in a file is the service's schema (tests give each run a schema of its own). An advisory lock per schema lets
several replicas start at once; a recorded migration whose file changed afterwards stops the start, since the
database no longer matches the code.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(folder: Path) -> list[Migration]:
    found = []
    for path in sorted(Path(folder).glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNNN_what.sql")
        found.append(Migration(int(match.group(1)), path.name, path.read_text()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"{folder}: migrations must be numbered 1..n without gaps, found {versions}")
    return found


async def migrate(conn: asyncpg.Connection, schema: str, folder: Path) -> list[str]:
    """Applies the migrations of `folder` that `schema` lacks; returns the names of those applied."""
    migrations = load_migrations(folder)
    applied: list[str] = []
    async with conn.transaction():
        # one migrator per schema at a time; the lock ends with the transaction
        await conn.execute("select pg_advisory_xact_lock(hashtext($1))", f"migrations:{schema}")
        await conn.execute(f"create schema if not exists {schema}")
        await conn.execute(f"""create table if not exists {schema}.schema_migrations (
            version integer primary key, name text not null, checksum text not null,
            applied_at timestamptz not null default now())""")
        done = {r["version"]: r for r in await conn.fetch(f"select * from {schema}.schema_migrations")}
        for migration in migrations:
            row = done.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise MigrationError(f"{schema}: migration {migration.name} changed after it was applied; "
                                         "add a new migration instead of editing an applied one")
                continue
            await conn.execute(migration.sql.replace("{s}", schema))
            await conn.execute(f"insert into {schema}.schema_migrations (version, name, checksum) "
                               "values ($1, $2, $3)", migration.version, migration.name, migration.checksum)
            applied.append(migration.name)
            log.info("%s: applied migration %s", schema, migration.name)
    return applied
