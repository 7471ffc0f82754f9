"""Webhook delivery: events from the world, signed as each vendor signs them, POSTed with its retry rules.

Deliveries wait in a heap keyed by sim time, so a fake clock drives retries exactly: Volcengine retries up
to twice when the answer is not 200 within the timeout, ZEGO cloud recording twice, 5 s apart
(vendor-apis.md); ZEGO room and stream callbacks up to 5 times after 2, 4, 8, 16 and 32 s (ZEGO's callback
pages). Every attempt is logged for tests; the queue is bounded and counts what it had to drop. A scenario
can make delivery unreliable (`CallbackChaos`: lost, duplicated, delayed, reordered), from its own seeded
random stream so the same scenario loses the same callbacks.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import random
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reconciler.clock import Clock
from reconciler.sim.config import VOLC, SimConfig
from reconciler.sim.scenario import CallbackChaos
from reconciler.sim.senders import CallbackSender, HttpSender, SendError, encode_body
from reconciler.sim.signing import volc_callback_signature, zego_callback_signature
from reconciler.sim.world import SimTask

__all__ = ["CallbackQueue"]

RETRIES = (5.0, 5.0)  # seconds before each retry: Volcengine, ZEGO cloud recording
ROOM_RETRIES = (2.0, 4.0, 8.0, 16.0, 32.0)  # ZEGO room/stream callbacks, and thumbnail results
VOLC_CALLBACK_VERSION = "2020-12-01"
_CONCURRENCY = 32


@dataclass
class Delivery:
    vendor: str
    event: str
    url: str
    body: dict[str, Any]
    attempts: int = 0
    retries: tuple[float, ...] = RETRIES


class CallbackQueue:
    """Implements the world's EventSink; `deliver_due()` sends whatever is due on the sim clock."""

    def __init__(self, config: SimConfig, clock: Clock, rng: random.Random) -> None:
        self._config = config
        self._clock = clock
        self._rng = rng
        self._network: HttpSender | None = None  # the sender when the config names none
        self._seq = itertools.count()
        self._sequence: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        self._heap: list[tuple[float, int, Delivery]] = []
        self.log: deque[dict[str, Any]] = deque(maxlen=self._config.callback_log_size)
        self.dropped = 0
        self.set_chaos(CallbackChaos(), seed=0)

    def set_chaos(self, chaos: CallbackChaos, *, seed: int) -> None:
        self.chaos = chaos
        self._chaos_rng = random.Random(f"{seed}:callbacks")
        self.lost = self.duplicated = 0

    def counts(self) -> dict[str, int]:
        return {"pending": self.pending, "dropped": self.dropped, "lost": self.lost, "duplicated": self.duplicated}

    # --- EventSink ------------------------------------------------------------------------------------

    def wants_images(self, vendor: str) -> bool:
        return vendor == VOLC and self._config.volcengine_callback_url is not None

    def volc_event(self, app_id: str, event_type: str, data: dict[str, Any], at: float) -> None:
        url = self._config.volcengine_callback_url
        app = self._config.volc_app(app_id)
        if url is None or app is None:
            return
        body: dict[str, Any] = {
            "EventType": event_type,
            "EventData": json.dumps(data, separators=(",", ":")),
            "EventTime": datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds"),
            "EventId": f"{self._rng.getrandbits(128):032x}",
            "AppId": app_id,
            "Version": VOLC_CALLBACK_VERSION,
            "Nonce": f"{self._rng.getrandbits(32):08x}",
        }
        body["Signature"] = volc_callback_signature([str(v) for v in body.values()], app.callback_secret)
        self._send(at, Delivery(VOLC, event_type, url, body))

    def zego_record_event(self, task: SimTask, event_type: int, detail: dict[str, Any], at: float) -> None:
        body: dict[str, Any] = {
            "app_id": int(task.app_id),
            "task_id": task.task_id,
            "room_id": task.room_id,
            "event_type": event_type,
            "message": _ZEGO_MESSAGES.get(event_type, ""),
            "sequence": self._next_sequence(task.app_id),
            "detail": detail,
        }
        # ZEGO's recording-status callback page types `timestamp` as a String (`nonce` too) and numbers
        # `sequence` from 0 (zegocloud.com/docs/cloud-recording-server/recording-status-callback).
        self._push_zego(task.app_id, f"event_type {event_type}", body, at, url=task.callback_url, text_time=True)

    def zego_thumbnail(
        self, app_id: str, task_id: str, vendor: str, pics: list[dict[str, Any]], at: float, file_id: str = ""
    ) -> None:
        # ZEGO's thumbnail callback page (docs_all core_products/real-time-voice-video/zh/server/callback/cdn/
        # media-thumbnails-completed.mdx): appid, timestamp and nonce are strings, `field_id` (sic) names the source
        # file for Tencent, and a failed delivery is retried 5 times, 2, 4, 8, 16 and 32 s apart.
        body: dict[str, Any] = {"event": "snapshot", "appid": app_id, "task_id": task_id, "vendor": vendor}
        if vendor == "tencent":
            body["field_id"] = file_id
        body["snapshot_pic_list"] = json.dumps(pics, separators=(",", ":"))
        self._push_zego(app_id, "snapshot", body, at, ROOM_RETRIES, text_time=True)

    def zego_room_event(self, app_id: str, event: str, fields: dict[str, Any], at: float) -> None:
        # The room callback pages give appid as a string, except room_create/room_close (an integer).
        appid: int | str = int(app_id) if event in ("room_create", "room_close") else app_id
        self._push_zego(app_id, event, {"event": event, "appid": appid, **fields}, at, ROOM_RETRIES)

    def _push_zego(
        self,
        app_id: str,
        event: str,
        body: dict[str, Any],
        at: float,
        retries: tuple[float, ...] = RETRIES,
        *,
        url: str | None = None,
        text_time: bool = False,
    ) -> None:
        url = url or self._config.zego_callback_url
        app = self._config.zego_app(int(app_id))
        if url is None or app is None:
            return
        timestamp = int(at)
        nonce = str(self._rng.randrange(10**8))
        body.update(
            timestamp=str(timestamp) if text_time else timestamp,
            nonce=nonce,
            signature=zego_callback_signature(app.callback_secret, timestamp, nonce),
        )
        self._send(at, Delivery("zego", event, url, body, retries=retries))

    def _next_sequence(self, app_id: str) -> int:
        self._sequence[app_id] = self._sequence.get(app_id, -1) + 1
        return self._sequence[app_id]

    def _send(self, at: float, delivery: Delivery) -> None:
        """Queue a new callback, through the configured unreliability."""
        chaos, rng = self.chaos, self._chaos_rng
        if chaos.loss and rng.random() < chaos.loss:
            self.lost += 1
            return
        due = at + chaos.delay.draw(rng)
        if chaos.reorder and rng.random() < chaos.reorder:
            due += rng.uniform(0, chaos.reorder_window)
        self._push(due, delivery)
        if chaos.duplicate and rng.random() < chaos.duplicate:
            self.duplicated += 1
            self._push(
                due, Delivery(delivery.vendor, delivery.event, delivery.url, delivery.body, retries=delivery.retries)
            )

    def _push(self, due: float, delivery: Delivery) -> None:
        if len(self._heap) >= self._config.max_pending_callbacks:
            self.dropped += 1
            return
        heapq.heappush(self._heap, (due, next(self._seq), delivery))

    # --- delivery -------------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._heap)

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    async def deliver_due(self) -> int:
        """Attempt every delivery due by now (concurrently); returns how many attempts were made."""
        now = self._clock.now()
        due: list[Delivery] = []
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap)[2])
        if not due:
            return 0
        limit = asyncio.Semaphore(_CONCURRENCY)

        async def attempt(delivery: Delivery) -> None:
            async with limit:
                await self._attempt(delivery, now)

        await asyncio.gather(*(attempt(d) for d in due))
        return len(due)

    async def _attempt(self, delivery: Delivery, now: float) -> None:
        delivery.attempts += 1
        status: int | None = None
        error: str | None = None
        try:
            status = await self._sender().post(delivery.url, encode_body(delivery.body))
        except SendError as exc:
            error = str(exc)
        ok = status == 200 if delivery.vendor == VOLC else status is not None and 200 <= status < 300
        self.log.append(
            {
                "time": now,
                "vendor": delivery.vendor,
                "event": delivery.event,
                "url": delivery.url,
                "attempt": delivery.attempts,
                "status": status,
                "error": error,
                "ok": ok,
                "body": delivery.body,
            }
        )
        if not ok and delivery.attempts <= len(delivery.retries):
            self._push(now + delivery.retries[delivery.attempts - 1], delivery)

    def _sender(self) -> CallbackSender:
        if self._config.callback_sender is not None:
            return self._config.callback_sender
        if self._network is None:
            self._network = HttpSender(self._config.callback_timeout)
        return self._network

    async def aclose(self) -> None:
        for sender in (self._config.callback_sender, self._network):
            if sender is not None:
                await sender.aclose()


_ZEGO_MESSAGES = {
    2: "task ended abnormally",
    4: "room has no stream",
    5: "task exited normally",
}
