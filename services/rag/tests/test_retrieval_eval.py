"""recall@5 of hybrid, dense-only and keyword-only retrieval on the labelled set in data/retrieval_set.json
(paraphrased questions, identifier look-ups among look-alike passages, names mentioned in passing, questions that
need two passages), indexed among 400 unlabelled background passages of the same domain, as in a real index."""

from rag.chunking import ChunkingConfig
from rag.ingest import Indexer
from rag.retrieval import Retriever
from rag.store import Filters

MODES = ("hybrid", "dense", "keyword")


async def test_hybrid_recall_at_5_beats_dense_only_and_keyword_only(store, embedder, retrieval_set, background,
                                                                     capsys):
    indexer = Indexer(store, embedder, ChunkingConfig())  # the service's chunking
    await indexer.open()
    for doc in retrieval_set["documents"] + background(400):
        await indexer.apply(doc)
    retriever = Retriever(store, embedder, indexer)
    recall = {}
    for mode in MODES:
        total = 0.0
        for q in retrieval_set["questions"]:
            hits = (await retriever.search(q["question"], Filters("default"), k=5, mode=mode)).hits
            found = {h.document_id for h in hits}
            total += len(found & set(q["relevant"])) / len(q["relevant"])
        recall[mode] = total / len(retrieval_set["questions"])
    with capsys.disabled():
        print(f"\nrecall@5 over {len(retrieval_set['questions'])} questions, {len(retrieval_set['documents'])} "
              "labelled + 400 background documents: " + ", ".join(f"{m} {recall[m]:.3f}" for m in MODES))
    assert recall["hybrid"] > recall["dense"]
    assert recall["hybrid"] > recall["keyword"]
