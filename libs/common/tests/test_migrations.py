"""platform_common.migrations against the real PostgreSQL: an old database is upgraded, each file runs once, an
edited applied migration stops the start, and a failing migration leaves nothing half-applied."""

import asyncpg
import pytest

from platform_common.migrations import MigrationError, migrate


@pytest.fixture
async def conn(settings, run_id):
    conn = await asyncpg.connect(settings.database_url)
    yield conn, f"mig_{run_id}"
    await conn.execute(f"drop schema if exists mig_{run_id} cascade")
    await conn.close()


def write(folder, name, sql):
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(sql)


async def test_upgrades_a_database_made_by_the_previous_release(conn, tmp_path):
    conn, schema = conn
    # the previous release created its table directly, without a version table
    await conn.execute(f"create schema {schema}; create table {schema}.items (id text primary key)")
    await conn.execute(f"insert into {schema}.items values ('old')")
    folder = tmp_path / "migrations"
    write(folder, "0001_items.sql", "create table if not exists {s}.items (id text primary key);")
    write(folder, "0002_tenant.sql", "alter table {s}.items add column tenant text not null default 'default';")
    assert await migrate(conn, schema, folder) == ["0001_items.sql", "0002_tenant.sql"]
    assert await conn.fetchval(f"select tenant from {schema}.items where id = 'old'") == "default"
    assert await migrate(conn, schema, folder) == []  # applied once only
    assert await conn.fetchval(f"select count(*) from {schema}.schema_migrations") == 2


async def test_an_edited_migration_stops_the_start(conn, tmp_path):
    conn, schema = conn
    folder = tmp_path / "migrations"
    write(folder, "0001_items.sql", "create table {s}.items (id text);")
    await migrate(conn, schema, folder)
    write(folder, "0001_items.sql", "create table {s}.items (id text, extra int);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(conn, schema, folder)


async def test_a_failing_migration_applies_nothing_and_gaps_are_refused(conn, tmp_path):
    conn, schema = conn
    folder = tmp_path / "migrations"
    write(folder, "0001_items.sql", "create table {s}.items (id text);")
    write(folder, "0002_broken.sql", "alter table {s}.items add column x int; select no_such_function();")
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await migrate(conn, schema, folder)
    assert await conn.fetchval("select to_regclass($1)", f"{schema}.schema_migrations") is None
    gap = tmp_path / "gap"
    write(gap, "0002_items.sql", "select 1;")
    with pytest.raises(MigrationError, match="without gaps"):
        await migrate(conn, schema, gap)
