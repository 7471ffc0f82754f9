"""Everything the rest of capctl needs to know about a vendor and its API families, in one place.

The spec checks (which `rateLimits` keys exist), the daemon (query budgets, callback routes, how a
callback names a run) and the metrics (the `api` label) ask these objects instead of branching on the
vendor. Adding an API family means describing it here, next to its provider class, its spec model and
its simulator part; nothing in the daemon, the metrics or the spec checks changes. Pure and light: no
HTTP client is imported, so `capctl validate` stays fast; a vendor's callback parser is imported on
first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.model import ApiFamily, TaskRecord

if TYPE_CHECKING:
    from reconciler.providers.callbacks import CallbackParser, RunId

__all__ = ["FAMILIES", "VENDORS", "VOLCENGINE", "ZEGO", "Family", "Vendor", "family", "listing_family", "vendor"]

METHODS = ("start", "update", "stop", "observe", "rooms")  # the provider methods (base.Provider)


@dataclass(frozen=True, slots=True)
class Vendor:
    """One vendor: its documented rate limits and its callbacks. (Its stop codes are mapped to capctl's
    phrases, `reconciler.stopreasons`, by its provider modules: `volcengine.stop_reason_of`,
    `zego_client.recording_stop_reason`, `zego_callbacks.callback_stop_reason`.)"""

    name: str
    # Documented per-second limits by the API names its budgets use and `rateLimits` may override.
    rate_limits: Mapping[str, float]
    callback_parser: str  # "module:function" of its webhook parser (`callbacks.CallbackParser`)

    def parse_callback(self) -> CallbackParser:
        module, _, name = self.callback_parser.partition(":")
        parser: CallbackParser = getattr(importlib.import_module(module), name)
        return parser


@dataclass(frozen=True, slots=True)
class Family:
    """One API family of a vendor = one provider class (`providers.CLASSES`)."""

    family: ApiFamily
    vendor: Vendor
    apis: Mapping[str, str]  # provider method -> the vendor API it calls (metrics label, budget name)

    def api(self, method: str) -> str:
        return self.apis[method]

    def query_rate(self, overrides: Mapping[str, float] | None) -> float:
        """The documented status-query limit, or the Provider document's `rateLimits` override of it."""
        api = self.apis["observe"]
        return (overrides.get(api) if overrides else None) or self.vendor.rate_limits[api]

    def run_id(self, record: TaskRecord) -> RunId | None:
        """How this vendor's callbacks name the record's current run (`CallbackEvent.run_id`)."""
        if record.vendor_task_id is None:
            return None
        if self.family is ApiFamily.VOLC_SNAPSHOT:  # Volcengine names a run by (AppId, RoomId, TaskId)
            ref = record.vendor_ref
            return (self.vendor.name, ref.get("AppId", ""), ref.get("RoomId", record.target), record.vendor_task_id)
        return (self.vendor.name, record.vendor_task_id)


VOLCENGINE = Vendor(
    "volcengine",
    # Seed page, vendor-apis.md.
    # GetRoomOnlineUsers: 40 QPS (docs/providers-volcengine.md, "Room listing").
    {"StartSnapshot": 150, "UpdateSnapshot": 150, "StopSnapshot": 150, "GetSnapshotTask": 60, "GetRoomOnlineUsers": 40},
    "reconciler.providers.volc_callbacks:parse_volcengine",
)
ZEGO = Vendor(
    "zego",
    # Per AppId. The legacy calls have no surviving limits except /access_token: vendor-apis.md applies
    # the Action API's.
    {
        "StartRecord": 50,
        "StopRecord": 50,
        "DescribeRecordStatus": 10,
        "MediaThumbnails": 20,
        "DescribeSimpleStreamList": 50,  # and 1 per 10 s per room (docs/providers-zego.md, "Room listing")
        "start": 50,
        "stop": 50,
        "query": 10,
        "access_token": 10,
    },
    "reconciler.providers.zego_callbacks:parse_zego",
)
VENDORS: dict[str, Vendor] = {v.name: v for v in (VOLCENGINE, ZEGO)}

FAMILIES: dict[ApiFamily, Family] = {
    f.family: f
    for f in (
        Family(
            ApiFamily.VOLC_SNAPSHOT,
            VOLCENGINE,
            {
                "start": "StartSnapshot",
                "update": "UpdateSnapshot",
                "stop": "StopSnapshot",
                "observe": "GetSnapshotTask",
                "rooms": "GetRoomOnlineUsers",
            },
        ),
        Family(
            ApiFamily.ZEGO_RECORD,
            ZEGO,
            {
                "start": "StartRecord",
                "update": "StartRecord",
                "stop": "StopRecord",
                "observe": "DescribeRecordStatus",
                "rooms": "DescribeSimpleStreamList",
            },
        ),
        Family(
            ApiFamily.ZEGO_RECORD_LEGACY,
            ZEGO,
            {
                "start": "start",
                "update": "start",
                "stop": "stop",
                "observe": "query",
                "rooms": "DescribeSimpleStreamList",
            },
        ),
        Family(
            ApiFamily.ZEGO_THUMBNAIL,
            ZEGO,
            {**dict.fromkeys(METHODS, "MediaThumbnails"), "rooms": "DescribeSimpleStreamList"},
        ),
    )
}


def family(api_family: ApiFamily) -> Family:
    return FAMILIES[api_family]


def listing_family(vendor_name: str) -> ApiFamily:
    """The family whose provider answers the vendor's room listing (`Provider.room_streams`): any family of
    the vendor signs the same way; this one is always configured for a Provider document of that type."""
    return ApiFamily.VOLC_SNAPSHOT if vendor_name == VOLCENGINE.name else ApiFamily.ZEGO_RECORD


def vendor(name: str) -> Vendor | None:
    """The vendor called `name` (a Provider document's `type`, a callback route), or None."""
    return VENDORS.get(name)
