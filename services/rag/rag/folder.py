"""`python -m rag.folder DIR (--tenant T | --shared) [--sector S --doc-type D]`: publishes every text file of a folder
to documents.v1 (document id = path relative to the folder), the way ops teams load reference documents, and a
delete for every document indexed from that folder whose file is gone, so the index follows the folder.

`--shared` loads the folder into the reserved shared namespace, which every tenant reads: the only way (with
documents.v1 itself) to put a document there; no API key can."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from pathlib import Path

from platform_common.auth import RESERVED_TENANT, validate_tenant
from platform_common.kafka import DOCUMENTS, Publisher

from .ingest import shared_metadata
from .settings import RagSettings
from .store import Store

SUFFIXES = {".md", ".txt", ".rst"}


def _metadata(tenant: str) -> dict:
    return shared_metadata() if tenant == RESERVED_TENANT else {}


def documents_from_folder(folder: Path, tenant: str = "default", sector: str | None = None,
                          doc_type: str | None = None) -> list[dict]:
    """One upsert per text file; the title is the first non-empty line."""
    changes = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix in SUFFIXES):
        text = path.read_text(encoding="utf-8", errors="replace")
        title = next((line.strip("# ").strip() for line in text.splitlines() if line.strip()), path.stem)
        changes.append({"document_id": path.relative_to(folder).as_posix(), "op": "upsert",
                        "source_uri": path.resolve().as_uri(), "title": title, "content": text, "tenant": tenant,
                        "sector": sector, "doc_type": doc_type, "metadata": _metadata(tenant),
                        "updated_at": datetime.fromtimestamp(path.stat().st_mtime, UTC)})
    return changes


def folder_uri(folder: Path) -> str:
    return Path(folder).resolve().as_uri() + "/"


def deletions(folder: Path, upserts: list[dict], indexed: list[str], tenant: str = "default") -> list[dict]:
    """Deletes of the documents indexed from `folder` (their ids) that it no longer holds."""
    present = {change["document_id"] for change in upserts}
    return [{"document_id": document_id, "op": "delete", "source_uri": folder_uri(folder) + document_id,
             "title": document_id, "content": None, "tenant": tenant, "sector": None, "doc_type": None,
             "metadata": _metadata(tenant), "updated_at": datetime.now(UTC)}
            for document_id in indexed if document_id not in present]


async def indexed_from(settings: RagSettings, folder: Path, tenant: str = "default") -> list[str]:
    store = await Store.connect(settings.database_url, settings.rag_db_schema, max_size=1)
    try:
        return await store.documents_under(tenant, folder_uri(folder))
    finally:
        await store.close()


async def publish_folder(settings: RagSettings, changes: list[dict]) -> None:
    publisher = Publisher(settings)
    await publisher.start()
    try:
        for change in changes:
            await publisher.publish(settings.rag_documents_topic, change["document_id"], change, schema_of=DOCUMENTS)
    finally:
        await publisher.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    owner = parser.add_mutually_exclusive_group()
    owner.add_argument("--tenant", default="default", help="the tenant whose documents these are")
    owner.add_argument("--shared", action="store_true", help="shared reference documents, read by every tenant")
    parser.add_argument("--sector")
    parser.add_argument("--doc-type")
    args = parser.parse_args()
    if not args.folder.is_dir():
        raise SystemExit(f"rag.folder: {args.folder} is not a folder")
    if args.shared:
        tenant = RESERVED_TENANT
    else:
        try:
            tenant = validate_tenant(args.tenant)
        except ValueError as e:
            raise SystemExit(f"rag.folder: {e} (use --shared for shared reference documents)") from None
    settings = RagSettings()
    upserts = documents_from_folder(args.folder, tenant, args.sector, args.doc_type)
    deletes = deletions(args.folder, upserts, asyncio.run(indexed_from(settings, args.folder, tenant)), tenant)
    asyncio.run(publish_folder(settings, upserts + deletes))
    print(f"published {len(upserts)} documents and {len(deletes)} deletions of tenant {tenant} "
          f"to {settings.rag_documents_topic}")


if __name__ == "__main__":
    main()
