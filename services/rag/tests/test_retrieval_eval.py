"""recall@5 of hybrid, dense-only and keyword-only retrieval on the labelled set in data/retrieval_set.json
(paraphrased questions, identifier look-ups among look-alike passages, names mentioned in passing, questions that
need two passages), indexed among 400 unlabelled background passages of the same domain, as in a real index."""

import random

from rag.chunking import ChunkingConfig
from rag.ingest import Indexer
from rag.retrieval import Retriever
from rag.store import Filters

MODES = ("hybrid", "dense", "keyword")
VOCABULARY = ("payment settlement card account loan mortgage deposit fraud breach outage complaint refund sanction "
              "screening custody crypto climate emission grid telecom subscriber patient record claim policy premium "
              "branch cash liquidity capital reporting audit vendor outsourcing resilience incident regulator "
              "deadline customer supplier invoice contract privacy consent marketing pricing disclosure").split()


def background(count: int) -> list[dict]:
    """Domain-flavoured passages that answer none of the labelled questions (no names, codes or figures)."""
    rng = random.Random(5)

    def sentence() -> str:
        w = rng.sample(VOCABULARY, 10)
        return (f"The {w[0]} {w[1]} team reviews {w[2]} and {w[3]} for {w[4]} cases, reporting {w[5]} "
                f"{w[6]} issues to the {w[7]} owner before the {w[8]} {w[9]} review.")

    return [{"document_id": f"background-{i}", "title": f"Procedure {i}",
             "content": " ".join(sentence() for _ in range(3))} for i in range(count)]


async def test_hybrid_recall_at_5_beats_dense_only_and_keyword_only(store, embedder, retrieval_set, capsys):
    indexer = Indexer(store, embedder, ChunkingConfig())  # the service's chunking
    await indexer.open()
    for doc in retrieval_set["documents"] + background(400):
        await indexer.apply(doc)
    retriever = Retriever(store, embedder, indexer)
    recall = {}
    for mode in MODES:
        total = 0.0
        for q in retrieval_set["questions"]:
            found = {h.document_id for h in await retriever.search(q["question"], Filters("default"), k=5, mode=mode)}
            total += len(found & set(q["relevant"])) / len(q["relevant"])
        recall[mode] = total / len(retrieval_set["questions"])
    with capsys.disabled():
        print(f"\nrecall@5 over {len(retrieval_set['questions'])} questions, {len(retrieval_set['documents'])} "
              "labelled + 400 background documents: " + ", ".join(f"{m} {recall[m]:.3f}" for m in MODES))
    assert recall["hybrid"] > recall["dense"]
    assert recall["hybrid"] > recall["keyword"]
