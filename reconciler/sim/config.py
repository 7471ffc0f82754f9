"""What a simulator instance knows before it starts: its apps, credentials, limits and callback targets.

The built-in apps are fixed values (the quickstart specs and `GET /_sim/config` use them), so a fresh
`capctl sim` works with no setup. Extra apps can be added for multi-account tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.sim.senders import CallbackSender

__all__ = [
    "API_NAMES",
    "BUILTIN_VOLC_APP",
    "BUILTIN_ZEGO_APP",
    "VOLC",
    "VOLC_PREFIX",
    "VOLC_SERVICE",
    "VOLC_VERSION",
    "ZEGO",
    "ZEGO_CLOUDRECORD_PREFIX",
    "ZEGO_LEGACY",
    "ZEGO_LEGACY_PREFIX",
    "ZEGO_RTC_PREFIX",
    "SimConfig",
    "VolcApp",
    "ZegoApp",
    "parse_zego_app",
]

VOLC = "volcengine"
ZEGO = "zego"
ZEGO_LEGACY = "zego-legacy"

VOLC_VERSION = "2023-11-01"
VOLC_SERVICE = "rtc"


@dataclass(frozen=True)
class VolcApp:
    """A Volcengine RTC app and the account key pair allowed to call for it."""

    app_id: str
    access_key: str
    secret_key: str
    region: str = "cn-north-1"
    callback_secret: str = ""


@dataclass(frozen=True)
class ZegoApp:
    """A ZEGO app: the server secret signs API calls, the callback secret signs webhooks."""

    app_id: int
    server_secret: str
    callback_secret: str = ""


BUILTIN_VOLC_APP = VolcApp(
    app_id="capctl-sim-volc",
    access_key="AKCAPCTLSIM0000000001",
    secret_key="capctl-sim-volc-secret",
    region="cn-north-1",
    callback_secret="capctl-sim-volc-callback",
)
BUILTIN_ZEGO_APP = ZegoApp(
    app_id=1234567890,
    server_secret="0123456789abcdef0123456789abcdef",
    callback_secret="capctl-sim-zego-callback",
)


def parse_zego_app(text: str) -> ZegoApp:
    """`APPID:SERVER_SECRET:CALLBACK_SECRET` (`capctl sim --zego-app`): one more ZEGO app to serve."""
    app_id, _, secrets = text.partition(":")
    server_secret, _, callback_secret = secrets.partition(":")
    numeric = app_id.isascii() and app_id.isdigit()  # not "²" (int() refuses it) nor "１２３" (int() reads 123)
    if not (numeric and 1 <= int(app_id) <= 0xFFFFFFFF) or not server_secret or not callback_secret:
        # Only a numeric APPID is echoed: the rest holds secrets (or is one, in a value given out of order).
        shown = f"'{app_id}:…'" if numeric else "the value (not shown: it may hold secrets)"
        raise ValueError(
            f"{shown} is not APPID:SERVER_SECRET:CALLBACK_SECRET with an APPID from 1 to 4294967295 "
            "(e.g. 222:my-server-secret:my-callback-secret)"
        )
    return ZegoApp(int(app_id), server_secret, callback_secret)


VOLC_PREFIX = "/volc"
ZEGO_RTC_PREFIX = "/zego/rtc"
ZEGO_CLOUDRECORD_PREFIX = "/zego/cloudrecord"
ZEGO_LEGACY_PREFIX = "/zego/legacy"

# Documented per-app limits (vendor-apis.md); the legacy API has only /access_token documented, the rest
# use the Action API's values as vendor-apis.md decides.
DEFAULT_RATE_LIMITS: dict[tuple[str, str], int] = {
    (VOLC, "StartSnapshot"): 150,
    (VOLC, "UpdateSnapshot"): 150,
    (VOLC, "StopSnapshot"): 150,
    (VOLC, "GetSnapshotTask"): 60,
    (VOLC, "GetRoomOnlineUsers"): 40,
    (ZEGO, "StartRecord"): 50,
    (ZEGO, "StopRecord"): 50,
    (ZEGO, "DescribeRecordStatus"): 10,
    (ZEGO, "MediaThumbnails"): 20,
    (ZEGO, "DescribeSimpleStreamList"): 50,
    (ZEGO_LEGACY, "access_token"): 10,
    (ZEGO_LEGACY, "start"): 50,
    (ZEGO_LEGACY, "stop"): 50,
    (ZEGO_LEGACY, "query"): 10,
}

# Every API the simulator serves, by the name its request log and fault scoping (`apis`) use.
API_NAMES = frozenset(api for _, api in DEFAULT_RATE_LIMITS)


@dataclass
class SimConfig:
    """Everything configurable about a simulator; the defaults are the documented vendor values."""

    volcengine_apps: list[VolcApp] = field(default_factory=lambda: [BUILTIN_VOLC_APP])
    zego_apps: list[ZegoApp] = field(default_factory=lambda: [BUILTIN_ZEGO_APP])
    # Overrides of DEFAULT_RATE_LIMITS, keyed (vendor, api) with vendor one of VOLC, ZEGO, ZEGO_LEGACY.
    rate_limits: dict[tuple[str, str], int] = field(default_factory=dict)
    volcengine_callback_url: str | None = None
    zego_callback_url: str | None = None
    callback_timeout: float = 5.0
    # How callbacks are sent (senders.py); None: over HTTP, with callback_timeout. Tests and the day benchmark
    # hand them to the daemon's app in-process (AsgiSender) or to a mock (HttpSender with a transport).
    callback_sender: CallbackSender | None = None
    request_log_size: int = 10_000
    callback_log_size: int = 10_000
    max_pending_callbacks: int = 100_000
    volc_clock_skew: float = 15 * 60
    zego_clock_skew: float = 10 * 60
    seed: int | None = None

    def rate_limit(self, vendor: str, api: str) -> int | None:
        return self.rate_limits.get((vendor, api), DEFAULT_RATE_LIMITS.get((vendor, api)))

    def volc_app_by_key(self, access_key: str) -> list[VolcApp]:
        return [a for a in self.volcengine_apps if a.access_key == access_key]

    def volc_app(self, app_id: str) -> VolcApp | None:
        return next((a for a in self.volcengine_apps if a.app_id == app_id), None)

    def zego_app(self, app_id: int) -> ZegoApp | None:
        return next((a for a in self.zego_apps if a.app_id == app_id), None)

    def public_view(self) -> dict[str, object]:
        """The `GET /_sim/config` answer: the first app of each vendor (design.md shape + callback keys)."""
        v, z = self.volcengine_apps[0], self.zego_apps[0]
        return {
            "volcengine": {
                "appId": v.app_id,
                "accessKey": v.access_key,
                "secretKey": v.secret_key,
                "region": v.region,
                "callbackSecret": v.callback_secret,
                "callbackUrl": self.volcengine_callback_url,
                "pathPrefix": VOLC_PREFIX,
            },
            "zego": {
                "appId": z.app_id,
                "serverSecret": z.server_secret,
                "callbackSecret": z.callback_secret,
                "callbackUrl": self.zego_callback_url,
                "rtcPathPrefix": ZEGO_RTC_PREFIX,
                "cloudrecordPathPrefix": ZEGO_CLOUDRECORD_PREFIX,
                "legacyPathPrefix": ZEGO_LEGACY_PREFIX,
            },
        }
