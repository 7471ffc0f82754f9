"""The spec language: YAML documents → validated models → desired tasks (pure, apart from reading files).

Public API: `load_spec_set`, `SpecSet`, `SpecError`, `SpecErrors`, `json_schema`.
"""

from reconciler.spec.errors import SpecError, SpecErrors
from reconciler.spec.loader import SpecSet, load_spec_set
from reconciler.spec.models import StorageConfig
from reconciler.spec.schema import json_schema

__all__ = ["SpecError", "SpecErrors", "SpecSet", "StorageConfig", "json_schema", "load_spec_set"]
