"""Stream enrichment: named entities and sentiment for the text fields of every raw event."""
