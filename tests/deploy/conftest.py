"""The end-to-end harness (a `capctl sim` per module, a spec directory and SQLite state per test), shared with
tests/e2e: the observability test runs a real daemon against it."""

from tests.e2e.conftest import sim, sim_server, work

__all__ = ["sim", "sim_server", "work"]
