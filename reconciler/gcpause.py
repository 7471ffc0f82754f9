"""`gc_paused()`: run an allocation-heavy, cycle-free pass without the cyclic garbage collector.

Loading 10,000 spec documents, decoding 10,000 state rows or diffing 10,000 tasks allocates hundreds of
thousands of small dicts and dataclasses that never form cycles; each allocation burst triggers generation
scans that find nothing. Pausing the collector for such a pass (and restoring it after) saves a fifth of a
`capctl plan`. Nested use is safe: only the outermost pause re-enables the collector.

`freeze_heap()`: what the daemon just read (a term's records, a spec set) lives until the next such read;
out of the collector's reach, a full pass no longer walks it (2.5-3.2 s of the loop at 100,000 tasks, walk
32b; bench/README.md, "Full collections in the daemon").
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["freeze_heap", "gc_paused"]


@contextmanager
def gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def freeze_heap() -> None:
    """Move every object the collector tracks to its permanent generation (`gc.freeze`), after a read that
    replaced most of the heap. Frozen objects are still freed by reference counting when the next read
    replaces them, so what is frozen stays about one read's worth (the records, the spec set: neither forms
    cycles); a cycle frozen while alive is not collected once it dies, a bound measured in bench/README.md.
    The young generations are collected first (milliseconds): their garbage would be frozen for good, and a
    daemon freezes at each reload (walk 33b-2)."""
    gc.collect(1)
    gc.freeze()
