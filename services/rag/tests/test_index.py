"""The source-to-index pipeline against the real PostgreSQL and the real embedder."""

from rag.chunking import ChunkingConfig
from rag.embedder import Embedder
from rag.folder import deletions, documents_from_folder, folder_uri
from rag.ingest import CHUNKS_EMBEDDED, Indexer
from rag.retrieval import Retriever
from rag.store import Filters

DEFAULT = Filters(tenant="default")

DOCS = {
    "aml.md": "# Anti-money laundering\nCash transactions above a threshold require enhanced due diligence. "
              "A suspicious activity report is filed when the source of funds cannot be verified. "
              "Records are kept for five years after the relationship ends.",
    "breach.md": "# Data breach notification\nA firm that discovers a breach of personal data informs the "
                 "supervisory authority within 72 hours. Affected customers are told without undue delay.",
    "outage.md": "# Operational resilience\nCritical payment services are restored within two hours after a "
                 "disruption. Longer disruptions are reported to the regulator as major incidents. "
                 "The incident report names the cause, the customers affected and the remediation.",
}


async def snapshot(store, index):
    rows = await store.pool.fetch(
        f"SELECT chunk_id, document_id, content_hash, ingested_at, embedding::text AS v FROM "
        f"{store.schema}.{index.table} ORDER BY chunk_id")
    return {r["chunk_id"]: tuple(r) for r in rows}


async def registry(store, index):
    return await store.pool.fetchrow(f"SELECT doc_count, chunk_count FROM {store.schema}.indexes "
                                     "WHERE index_version = $1", index.version)


async def ingest(indexer, folder):
    return [await indexer.apply(change) for change in documents_from_folder(folder, sector="finance",
                                                                             doc_type="regulation")]


async def test_ingesting_a_folder_twice_leaves_the_index_unchanged(indexer, store, tmp_path):
    for name, text in DOCS.items():
        (tmp_path / name).write_text(text)
    first = await ingest(indexer, tmp_path)
    assert {r.status for r in first} == {"created"} and all(r.embedded > 0 for r in first)
    before, counts = await snapshot(store, indexer.index), await registry(store, indexer.index)
    assert counts["doc_count"] == 3 and counts["chunk_count"] == len(before) > 3

    embedded = CHUNKS_EMBEDDED._value.get()
    second = await ingest(indexer, tmp_path)
    assert {r.status for r in second} == {"unchanged"}
    assert CHUNKS_EMBEDDED._value.get() == embedded  # nothing re-embedded
    assert await snapshot(store, indexer.index) == before and await registry(store, indexer.index) == counts

    chunk = await store.chunk(indexer.index, "default", next(iter(before)))  # lineage of every chunk
    assert chunk["source_uri"].startswith("file://") and chunk["content_hash"] and chunk["ingested_at"]


async def test_editing_one_document_re_embeds_only_its_chunks(indexer, store, tmp_path):
    for name, text in DOCS.items():
        (tmp_path / name).write_text(text)
    await ingest(indexer, tmp_path)
    before = await snapshot(store, indexer.index)

    (tmp_path / "breach.md").write_text(DOCS["breach.md"] + " Notifications are logged in the breach register.")
    embedded = CHUNKS_EMBEDDED._value.get()
    results = {r.document_id: r for r in await ingest(indexer, tmp_path)}
    assert results["breach.md"].status == "updated"
    assert {r.status for d, r in results.items() if d != "breach.md"} == {"unchanged"}

    after = await snapshot(store, indexer.index)
    new_breach = {c for c, row in after.items() if row[1] == "breach.md"}
    assert CHUNKS_EMBEDDED._value.get() - embedded == len(new_breach) == results["breach.md"].embedded
    untouched = {c: row for c, row in before.items() if row[1] != "breach.md"}
    assert {c: after[c] for c in untouched} == untouched  # same ids, vectors and ingest times
    assert not new_breach & set(before)  # the old breach chunks are gone, the new ones have new ids
    assert (await registry(store, indexer.index))["chunk_count"] == len(after)


async def test_deleting_a_document_removes_every_trace(indexer, store, embedder, tmp_path):
    for name, text in DOCS.items():
        (tmp_path / name).write_text(text)
    await ingest(indexer, tmp_path)
    retriever = Retriever(store, embedder, indexer)
    found = await retriever.search("suspicious activity report", DEFAULT, k=3)
    assert any(h.document_id == "aml.md" for h in found.hits)

    result = await indexer.apply({"document_id": "aml.md", "op": "delete"})
    assert result.status == "deleted"
    s, t = store.schema, indexer.index.table
    assert await store.pool.fetchval(f"SELECT count(*) FROM {s}.documents WHERE document_id = 'aml.md'") == 0
    assert await store.pool.fetchval(f"SELECT count(*) FROM {s}.{t} WHERE document_id = 'aml.md'") == 0
    # neither the keyword index nor the vectors know the words only that document held
    assert await store.pool.fetchval(
        f"SELECT count(*) FROM {s}.{t} WHERE tsv @@ plainto_tsquery('english', 'laundering')") == 0
    for mode in ("keyword", "dense", "hybrid"):
        hits = (await retriever.search("suspicious activity report money laundering", DEFAULT, k=10, mode=mode)).hits
        assert all(h.document_id != "aml.md" for h in hits)
    assert (await registry(store, indexer.index))["doc_count"] == 2
    assert (await indexer.apply({"document_id": "aml.md", "op": "delete"})).status == "absent"


async def test_a_file_removed_from_the_folder_is_deleted_from_the_index_on_the_next_load(indexer, store, tmp_path):
    for name, text in DOCS.items():
        (tmp_path / name).write_text(text)
    # a document loaded from elsewhere is not the folder's to delete
    await indexer.apply({"document_id": "other.md", "content": DOCS["aml.md"], "source_uri": "file:///other/other.md"})
    await ingest(indexer, tmp_path)
    assert await store.documents_under("default", folder_uri(tmp_path)) == sorted(DOCS)

    (tmp_path / "aml.md").unlink()
    upserts = documents_from_folder(tmp_path, sector="finance", doc_type="regulation")
    changes = upserts + deletions(tmp_path, upserts, await store.documents_under("default", folder_uri(tmp_path)))
    results = {r.document_id: r.status for r in [await indexer.apply(c) for c in changes]}
    assert results == {**{name: "unchanged" for name in DOCS if name != "aml.md"}, "aml.md": "deleted"}
    assert await store.documents_under("default", folder_uri(tmp_path)) == sorted(set(DOCS) - {"aml.md"})
    assert await store.get_document("default", "other.md") is not None
    assert not [c for c, row in (await snapshot(store, indexer.index)).items() if row[1] == "aml.md"]


async def test_a_new_embedder_builds_a_new_index_beside_the_old(indexer, store, tmp_path):
    for name, text in DOCS.items():
        (tmp_path / name).write_text(text)
    await ingest(indexer, tmp_path)
    old = indexer.index

    # same model files, another version tag: stands for an upgraded embedder
    newer = Indexer(store, Embedder(version_tag="test-upgrade"), ChunkingConfig(max_words=60, overlap_words=10))
    new = await newer.open()
    assert new.table != old.table and new.version != old.version
    rows = {r["index_version"]: r for r in await store.indexes("default")}
    assert set(rows) == {old.version, new.version}
    assert rows[new.version]["doc_count"] == rows[old.version]["doc_count"] == 3
    assert rows[new.version]["built_at"] is not None and rows[new.version]["active"]
    assert rows[new.version]["chunking"] == {"method": "sentences", "max_words": 60, "overlap_words": 10}
    assert rows[new.version]["embedder_version"] == "test-upgrade"
    assert len(await snapshot(store, old)) == rows[old.version]["chunk_count"]  # the old index stays intact

    # a deletion reaches both indexes
    await newer.apply({"document_id": "outage.md", "op": "delete"})
    for index in (old, new):
        assert not [c for c, row in (await snapshot(store, index)).items() if row[1] == "outage.md"]


async def test_filters_restrict_by_tenant_sector_and_type(indexer, embedder, store):
    text = "Critical payment services are restored within two hours after a disruption."
    for doc_id, tenant, sector, doc_type in [("shared", "_shared", "finance", "regulation"),
                                             ("acme", "acme", "finance", "policy"),
                                             ("globex", "globex", "energy", "regulation"),
                                             ("default", "default", "finance", "regulation")]:
        await indexer.apply({"document_id": doc_id, "content": text, "tenant": tenant, "sector": sector,
                             "doc_type": doc_type, "metadata": {"shared": "true"} if tenant == "_shared" else {}})
    retriever = Retriever(store, embedder, indexer)

    async def docs(**filters):
        return {h.document_id for h in (await retriever.search("payment disruption", Filters(**filters), k=10)).hits}

    # a tenant sees its own and the shared documents; "default" is a tenant like any other, not the shared one
    assert await docs(tenant="acme") == {"shared", "acme"}
    assert await docs(tenant="default") == {"shared", "default"}
    assert await docs(tenant="acme", doc_type="policy") == {"acme"}
    assert await docs(tenant="globex", sector="energy") == {"globex"}
    assert await docs(tenant="acme", sector="energy") == set()  # globex's energy document stays globex's
