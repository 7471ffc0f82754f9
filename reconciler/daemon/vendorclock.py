"""How far a vendor account's clock is from the daemon's, measured from its callbacks' own times.

A room callback carries the vendor's time of the event; the room book orders reports by it (a late leave
must not undo a newer entry) but also weighs it against the room-listing resync's reports and its own
timers, which are on the daemon's clock. A vendor clock minutes off would then make a listing hide every
entry of the next minutes (vendor behind) or a lost leave outlive the listing that repairs it (vendor
ahead). So each callback time is put on the daemon's clock first (docs/daemon.md "Two clocks").

A callback sent at vendor time `v` arrives after a delay `d >= 0`: `v - arrival = offset - d`, a lower bound
of the offset (vendor minus daemon). As NTP's clock filter keeps the sample of least delay, the estimate is
the largest bound among the callbacks of the last `WINDOW` (a drift of 100 ppm moves the offset 60 ms in
it), and of the last `KEEP` callbacks at least: after a quiet spell, one retried callback (delayed a minute)
alone does not move the estimate. It is only taken up when it differs from the one in use by more than
`AGREE`: clocks that agree within delivery delays are left uncorrected (the order of callbacks is the
vendor's exactly), and a correction in use does not change, nor reorder two close callbacks, at every faster
delivery. The daemon's own clock stepping (NTP) moves every offset by the step at once (`step`): its bounds
would otherwise keep the old offset for a whole `WINDOW`.
"""

from __future__ import annotations

from collections import deque

__all__ = ["AGREE", "KEEP", "WINDOW", "VendorClocks"]

WINDOW = 600.0  # seconds of daemon time whose callbacks bound the offset
KEEP = 16  # ... and at least this many of the last callbacks
AGREE = 2.0  # seconds: an offset within this of the one in use changes nothing


class VendorClocks:
    """Per vendor account: the offset of its clock, from its callbacks (`heard`)."""

    def __init__(self) -> None:
        # Per account: (number, arrival, bound) with the bounds decreasing, so the first is the largest kept.
        self._bounds: dict[str, deque[tuple[int, float, float]]] = {}
        self._heard: dict[str, int] = {}  # callbacks numbered per account
        self._offsets: dict[str, float] = {}

    def heard(self, account: str, vendor_at: float, now: float) -> float:
        """A callback of `account` stamped `vendor_at` arrived (at the latest) at `now`: the event's time on
        the daemon's clock."""
        bound, number = vendor_at - now, self._heard.get(account, 0) + 1
        self._heard[account] = number
        bounds = self._bounds.setdefault(account, deque())
        while bounds and bounds[-1][2] <= bound:
            bounds.pop()
        bounds.append((number, now, bound))
        while bounds[0][1] < now - WINDOW and bounds[0][0] <= number - KEEP:
            bounds.popleft()
        estimate, used = bounds[0][2], self._offsets.get(account, 0.0)
        if abs(estimate - used) > AGREE:
            used = self._offsets[account] = estimate
        return vendor_at - used

    def step(self, seconds: float) -> None:
        """The daemon's wall clock stepped by `seconds`: each vendor's offset from it moved by as much."""
        for account, bounds in self._bounds.items():
            self._bounds[account] = deque((n, at + seconds, bound - seconds) for n, at, bound in bounds)
        self._offsets = {account: self._offsets.get(account, 0.0) - seconds for account in self._bounds}
