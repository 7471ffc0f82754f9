"""The provider families: one place that says what the daemon, the metrics and the spec checks need."""

from __future__ import annotations

from reconciler.model import ApiFamily
from reconciler.providers import CLASSES
from reconciler.providers.callbacks import CallbackEvent
from reconciler.providers.family import FAMILIES, VENDORS, family, vendor
from reconciler.providers.volcengine import DEFAULT_RATE_LIMITS as VOLC_LIMITS
from reconciler.providers.zego_client import DEFAULT_RATE_LIMITS as ZEGO_LIMITS


def test_every_api_family_with_a_provider_class_is_described() -> None:
    assert set(FAMILIES) == set(CLASSES) == set(ApiFamily)
    for described in FAMILIES.values():
        assert set(described.apis) == {"start", "update", "stop", "observe", "rooms"}
        # Every API a family calls has a documented limit its budgets and `rateLimits` use.
        assert set(described.apis.values()) <= set(described.vendor.rate_limits)


def test_the_providers_budget_by_the_families_limits() -> None:
    assert VOLC_LIMITS is VENDORS["volcengine"].rate_limits and ZEGO_LIMITS is VENDORS["zego"].rate_limits


def test_the_query_rate_is_the_documented_one_unless_overridden() -> None:
    volc = family(ApiFamily.VOLC_SNAPSHOT)
    assert volc.api("observe") == "GetSnapshotTask" and volc.query_rate(None) == 60
    assert volc.query_rate({"GetSnapshotTask": 20}) == 20 and volc.query_rate({"StartSnapshot": 1}) == 60
    assert family(ApiFamily.ZEGO_RECORD_LEGACY).query_rate({}) == 10


def test_a_vendor_names_its_callback_parser_and_unknown_vendors_have_none() -> None:
    assert vendor("tencent") is None
    for name, described in VENDORS.items():
        parser = described.parse_callback()
        assert callable(parser) and parser.__name__ == f"parse_{name}"
    assert "run_id" in CallbackEvent.__dataclass_fields__
