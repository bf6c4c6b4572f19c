"""`python -m rag.folder DIR [--tenant T --sector S --doc-type D]`: publishes every text file of a folder to
documents.v1 (document id = path relative to the folder), the way ops teams load reference documents."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from pathlib import Path

from platform_common.kafka import DOCUMENTS, Publisher

from .settings import RagSettings

SUFFIXES = {".md", ".txt", ".rst"}


def documents_from_folder(folder: Path, tenant: str = "default", sector: str | None = None,
                          doc_type: str | None = None) -> list[dict]:
    """One upsert per text file; the title is the first non-empty line."""
    changes = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix in SUFFIXES):
        text = path.read_text(encoding="utf-8", errors="replace")
        title = next((line.strip("# ").strip() for line in text.splitlines() if line.strip()), path.stem)
        changes.append({"document_id": path.relative_to(folder).as_posix(), "op": "upsert",
                        "source_uri": path.resolve().as_uri(), "title": title, "content": text, "tenant": tenant,
                        "sector": sector, "doc_type": doc_type, "metadata": {},
                        "updated_at": datetime.fromtimestamp(path.stat().st_mtime, UTC)})
    return changes


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
    parser.add_argument("--tenant", default="default")
    parser.add_argument("--sector")
    parser.add_argument("--doc-type")
    args = parser.parse_args()
    changes = documents_from_folder(args.folder, args.tenant, args.sector, args.doc_type)
    asyncio.run(publish_folder(RagSettings(), changes))
    print(f"published {len(changes)} documents to {RagSettings().rag_documents_topic}")


if __name__ == "__main__":
    main()
