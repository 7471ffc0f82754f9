"""Tests of the state stores (SQLite and PostgreSQL), their codec, URLs and locks."""
