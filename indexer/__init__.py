"""Indexer: folders -> decoded, embedded, stored and indexed items (the only SQL)."""
