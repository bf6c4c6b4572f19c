"""recall@5 of hybrid, dense-only and keyword-only retrieval on the labelled set in data/retrieval_set.json
(paraphrased questions, identifier look-ups among look-alike passages, names mentioned in passing, questions that
need two passages), indexed among 400 unlabelled background passages of the same domain, as in a real index; and
what the grounding rule lets through.

The questions alternate between a tuning half (even positions), on which KEYWORD_GROUNDING_COVERAGE was chosen, and
a held-out half (odd positions) that no threshold was chosen on. KEYWORD_MIN_COVERAGE predates the split (it was
chosen on the whole set) and was not changed since."""

from rag.chunking import ChunkingConfig
from rag.ingest import Indexer
from rag.retrieval import Retriever
from rag.store import Filters

MODES = ("hybrid", "dense", "keyword")
MIN_SCORE = 0.3  # the service's default RAG_MIN_SCORE


async def test_hybrid_recall_at_5_beats_dense_only_and_keyword_only(store, embedder, retrieval_set, background,
                                                                     capsys):
    indexer = Indexer(store, embedder, ChunkingConfig())  # the service's chunking
    await indexer.open()
    for doc in retrieval_set["documents"] + background(400):
        await indexer.apply(doc)
    retriever = Retriever(store, embedder, indexer)
    questions = retrieval_set["questions"]
    recall = {(mode, half): 0.0 for mode in MODES for half in ("tuning", "held-out")}
    # grounding on the held-out half: (relevant, irrelevant) hybrid hits let through, by the cosine cut alone and
    # by the service's rule (the cut, or most of the query's BM25 mass)
    grounded = {"cosine": [0, 0], "rule": [0, 0]}
    for i, q in enumerate(questions):
        half = "tuning" if i % 2 == 0 else "held-out"
        for mode in MODES:
            result = await retriever.search(q["question"], Filters("default"), k=5, mode=mode)
            found = {h.document_id for h in result.hits}
            recall[mode, half] += len(found & set(q["relevant"])) / len(q["relevant"])
            if mode == "hybrid" and half == "held-out":
                for h in result.hits:
                    irrelevant = int(h.document_id not in q["relevant"])
                    grounded["cosine"][irrelevant] += h.similarity >= MIN_SCORE
                    grounded["rule"][irrelevant] += h.grounds(MIN_SCORE)
    sizes = {"tuning": len(questions[::2]), "held-out": len(questions[1::2])}
    recall = {key: total / sizes[key[1]] for key, total in recall.items()}
    overall = {mode: (recall[mode, "tuning"] * sizes["tuning"] + recall[mode, "held-out"] * sizes["held-out"])
               / len(questions) for mode in MODES}
    with capsys.disabled():
        print(f"\nrecall@5, {len(retrieval_set['documents'])} labelled + 400 background documents: "
              + "; ".join(f"{m} {overall[m]:.3f} (tuning {recall[m, 'tuning']:.3f}, held-out "
                          f"{recall[m, 'held-out']:.3f})" for m in MODES)
              + f"\nheld-out hybrid hits grounded (relevant, irrelevant): cosine cut {tuple(grounded['cosine'])}, "
              f"rule {tuple(grounded['rule'])}")
    assert overall["hybrid"] > overall["dense"]
    assert overall["hybrid"] > overall["keyword"]
    # keyword-only grounding lets no irrelevant passage through on questions it was not tuned on
    assert grounded["rule"][1] == grounded["cosine"][1] and grounded["rule"][0] >= grounded["cosine"][0]
