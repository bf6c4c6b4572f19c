"""Pure logic: chunking, the number check, prompt versions, document validation."""

import pytest

from rag.chunking import ChunkingConfig, chunk_text
from rag.grounding import strip_ungrounded, ungrounded_numbers
from rag.ingest import InvalidDocument, content_hash, normalise
from rag.prompts import load_prompt


def test_chunks_cover_the_text_with_overlap_and_offsets():
    text = " ".join(f"Sentence number {i} says something about topic {i}." for i in range(30))
    chunks = chunk_text(text, ChunkingConfig(max_words=40, overlap_words=10))
    assert len(chunks) > 3
    assert all(len(c.text.split()) <= 40 for c in chunks)
    assert all(text[c.start:c.end].strip() == c.text for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].text.endswith("topic 29.")
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.start < b.start < a.end  # consecutive chunks share their boundary sentences


def test_a_long_sentence_is_its_own_chunk_and_chunking_ends():
    text = "word " * 500 + ". Short one."
    chunks = chunk_text(text, ChunkingConfig(max_words=50, overlap_words=10))
    assert [c.ordinal for c in chunks] == list(range(len(chunks))) and len(chunks) == 2


def test_numbers_absent_from_the_sources_are_stripped():
    sources = ["Services are restored within 2 hours; fines reach 1,000 euros.", "Event: outage of 3 hours"]
    assert ungrounded_numbers("Within 2 hours, 1000 euros, 3 hours.", sources) == set()
    text, changed = strip_ungrounded("An outage of 3 hours. It cost 4321 euros. Rules apply.", sources)
    assert changed and text == "An outage of 3 hours. Rules apply."
    assert strip_ungrounded("Nothing to change.", sources) == ("Nothing to change.", False)


def test_prompt_versions_name_the_file_and_its_content():
    prompt = load_prompt("category_summary.v1")
    assert prompt.version.startswith("category_summary.v1@") and len(prompt.version) == len("category_summary.v1@") + 10
    messages = prompt.render(passages="[1] P", event="E")
    assert [m.role for m in messages] == ["system", "user"] and "[1] P" in messages[1].content


@pytest.mark.parametrize("change, reason", [
    ({"document_id": " ", "content": "x"}, "document_id"),
    ({"document_id": "a", "op": "merge", "content": "x"}, "op must be"),
    ({"document_id": "a", "content": "   "}, "non-empty content"),
    # naming the reserved tenant is not enough to publish to every tenant: the flag must say so
    ({"document_id": "a", "content": "x", "tenant": "_shared"}, "needs metadata shared=true"),
    ({"document_id": "a", "op": "delete", "tenant": "_shared", "metadata": {"shared": "yes"}}, "shared=true"),
])
def test_invalid_documents_are_refused_with_a_reason(change, reason):
    with pytest.raises(InvalidDocument, match=reason):
        normalise(change)


def test_the_hash_covers_title_and_content():
    assert content_hash("T", "body") == content_hash("T", "body") != content_hash("T2", "body")
    assert normalise({"document_id": "d", "op": "delete"})["op"] == "delete"


def test_the_tenant_defaults_to_default_and_the_shared_namespace_needs_its_flag():
    assert normalise({"document_id": "d", "content": "x"})["tenant"] == "default"
    shared = normalise({"document_id": "d", "content": "x", "tenant": "_shared", "metadata": {"shared": "true"}})
    assert shared["tenant"] == "_shared"
