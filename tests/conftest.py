"""Shared test set-up: the repository root on sys.path (tests import `tests.*` helpers)."""
