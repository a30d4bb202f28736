"""The log index: the search language, the store protocol, SQLite FTS5 and PostgreSQL implementations."""
