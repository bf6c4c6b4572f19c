"""recall@5 of hybrid, dense-only and keyword-only retrieval on the labelled set in data/retrieval_set.json:
paraphrased questions, identifier look-ups among look-alike passages, and questions that need two passages."""

import pytest

from rag.retrieval import Retriever

MODES = ("hybrid", "dense", "keyword")


@pytest.fixture
async def recall(indexer, store, embedder, retrieval_set) -> dict[str, float]:
    for doc in retrieval_set["documents"]:
        await indexer.apply(doc)
    retriever = Retriever(store, embedder, indexer)
    scores = {}
    for mode in MODES:
        total = 0.0
        for q in retrieval_set["questions"]:
            found = {h.document_id for h in await retriever.search(q["question"], k=5, mode=mode)}
            total += len(found & set(q["relevant"])) / len(q["relevant"])
        scores[mode] = total / len(retrieval_set["questions"])
    return scores


async def test_recall_at_5_is_reported_and_hybrid_beats_keyword_and_matches_dense(recall, capsys, retrieval_set):
    with capsys.disabled():
        print(f"\nrecall@5 over {len(retrieval_set['questions'])} questions, "
              f"{len(retrieval_set['documents'])} documents: "
              + ", ".join(f"{m} {recall[m]:.3f}" for m in MODES))
    assert recall["hybrid"] > recall["keyword"]
    assert recall["hybrid"] >= recall["dense"]  # fusion must not lose what the vectors found
    assert recall["dense"] > 0.8 and recall["hybrid"] > 0.8  # the set is answerable at all


@pytest.mark.xfail(strict=True, reason="measured: all-MiniLM-L6-v2 alone already finds the rare names and codes of "
                                       "this set, so hybrid ties dense-only (0.992 each) instead of beating it")
async def test_hybrid_recall_at_5_beats_dense_only(recall):
    assert recall["hybrid"] > recall["dense"]
