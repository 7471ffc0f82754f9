"""Provider registry: which class serves which API family, and a cache of live provider instances.

Provider modules are imported only when a family is first used, so commands that never talk to a
vendor (validate, schema, plan --no-refresh) never import httpx.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from reconciler.model import ApiFamily, ProviderConfig
from reconciler.providers.base import ErrorKind, Provider, VendorError

if TYPE_CHECKING:
    import httpx

    from reconciler.budget import BudgetRegistry
    from reconciler.clock import Clock

__all__ = ["CLASSES", "ErrorKind", "Provider", "ProviderPool", "VendorError", "record_missing_sniffio"]

CLASSES: dict[ApiFamily, tuple[str, str]] = {
    ApiFamily.VOLC_SNAPSHOT: ("reconciler.providers.volcengine", "VolcengineSnapshotProvider"),
    ApiFamily.ZEGO_RECORD: ("reconciler.providers.zego", "ZegoRecordProvider"),
    ApiFamily.ZEGO_RECORD_LEGACY: ("reconciler.providers.zego", "ZegoLegacyRecordProvider"),
    ApiFamily.ZEGO_THUMBNAIL: ("reconciler.providers.zego", "ZegoThumbnailProvider"),
}


def record_missing_sniffio() -> None:
    """httpcore (1.0) runs `import sniffio` inside every request, several times, to tell asyncio from trio,
    and falls back to asyncio when it is missing. When it is not installed (it is optional), each of those
    imports searches the whole `sys.path` again: ~30 µs each, ~0.25 s of CPU over a 2,000-change apply, in
    the event loop that paces the vendor calls. Recording its absence in `sys.modules` makes them fail at
    once; an installed sniffio is left alone."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


class ProviderPool:
    """Builds one provider per (Provider document, API family) on first use and closes them all."""

    def __init__(
        self, configs: Mapping[str, ProviderConfig], *, budgets: BudgetRegistry, clock: Clock, http: httpx.AsyncClient
    ) -> None:
        self._configs = dict(configs)
        self._budgets = budgets
        self._clock = clock
        self._http = http
        self._live: dict[tuple[str, ApiFamily], Provider] = {}
        record_missing_sniffio()  # every vendor call goes through `http`

    def update_configs(self, configs: Mapping[str, ProviderConfig]) -> None:
        """New spec set: providers whose document changed are rebuilt on next use."""
        for name, config in configs.items():
            if self._configs.get(name) != config:
                for key in [k for k in self._live if k[0] == name]:
                    del self._live[key]
        self._configs = dict(configs)

    def __call__(self, name: str, family: ApiFamily) -> Provider:
        live = self._live.get((name, family))
        if live is not None:
            return live
        config = self._configs.get(name)
        if config is None:
            raise VendorError(
                ErrorKind.TERMINAL,
                "ProviderMissing",
                f"Provider {name!r} is not in the specs: keep its Provider document until "
                "the tasks it started are deleted or moved (renamed: declare the new one beside it until "
                "every task is replaced)",
            )
        if not config.serves(family):
            raise VendorError(
                ErrorKind.TERMINAL,
                "ProviderApiChanged",
                f"Provider {name!r} now declares cloudrecordApi {config.cloudrecord_api}, but this recording was "
                "started on the other API, whose endpoint the document no longer names: keep that API in a "
                "Provider document of its own until the recordings it started are replaced (docs/providers-zego.md)",
            )
        module, cls_name = CLASSES[family]
        cls = getattr(importlib.import_module(module), cls_name)
        provider: Provider = cls(config, budgets=self._budgets, clock=self._clock, http=self._http)
        self._live[(name, family)] = provider
        return provider

    async def aclose(self) -> None:
        for provider in self._live.values():
            await provider.aclose()
        self._live.clear()
