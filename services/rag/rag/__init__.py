"""rag: a governed document index and retrieval-augmented context for the event stream."""
