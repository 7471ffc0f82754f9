"""JSON Schema (draft 2020-12) of one spec document, for editors (`capctl schema > capctl.schema.json`).

Generated from the same models that validate, then widened where YAML allows more than the model sees:
any scalar may be a value reference, so every scalar position also accepts `#/$defs/Reference`.
Checks that need several documents (vendor ranges, storage types per vendor) are not expressible here; a
Storage's fields per type are (one document), so an editor flags `space` on s3 as validate does.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic.json_schema import models_json_schema

from reconciler.providers.family import VENDORS
from reconciler.spec.checks import STORAGE_FIELDS, ZEGO_RECORDING_APIS
from reconciler.spec.fields import LITERAL_SCHEMA_MARKER, SECRET_SCHEMA_MARKER
from reconciler.spec.models import DOCUMENT_MODELS

__all__ = ["json_schema"]

_SCALARS: Final = {"string", "integer", "number", "boolean"}
_REF: Final = {"$ref": "#/$defs/Reference"}
_NULL: Final = {"type": "null"}
_META: Final = ("title", "description", "default")
# pydantic passes a bound through under its own name where a validator runs before it (`Int`, `Number`: a
# reference's text read as a number): JSON Schema's words, or an editor checks no bound.
_BOUNDS: Final = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}
# Fields that select a schema stay literal here (a oneOf cannot tell a reference's kind): these names where
# they are required, as a document's and a Provider's or Storage's are (a stream's optional `type`, camera or
# screen, picks nothing: walk 47d). Those that name a task carry LITERAL_SCHEMA_MARKER (refs.py refuses a
# reference there).
_NO_REFS: Final = {"kind", "apiVersion", "type"}
_ENV_REFERENCE: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["env"],
    "properties": {
        "env": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        # null too: `default: ~` leaves the field unset, to its own default (refs.py, models.py)
        "default": {"type": ["string", "integer", "number", "boolean", "null"]},
    },
}
REFERENCE: Final = {
    "description": "A value reference: {env: NAME}, {env: NAME, default: VALUE} or {file: PATH} "
    "(relative to the spec file). Secret fields must be references.",
    "oneOf": [
        _ENV_REFERENCE,
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["file"],
            "properties": {"file": {"type": "string", "minLength": 1}},
        },
    ],
}


# What a field that does not apply may hold: null, or a reference that leaves it unset when its variable is
# (`interval: {env: I, default: ~}` on a tencent entry: validate takes it while I is unset; walk 48c).
_UNSET: Final = {
    "anyOf": [
        _NULL,
        {
            **_ENV_REFERENCE,
            "required": ["env", "default"],
            "properties": {**_ENV_REFERENCE["properties"], "default": _NULL},
        },
    ]
}


def _is_scalar(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    kinds = set(kind) if isinstance(kind, list) else {kind}
    return bool(kinds & _SCALARS) or "enum" in schema or "const" in schema


def _secret_description(own: str | None) -> str:
    """What a secret field is (its own description: `explain` showed only the note, walk 43d-2), then that it
    takes a reference only."""
    note = "secret: must be a reference such as {env: NAME}"
    return f"{own}. S{note[1:]}" if own else note


def _allow_refs(schema: Any) -> Any:
    """A copy of `schema` in which every scalar position also accepts a Reference."""
    if not isinstance(schema, dict):
        return schema
    if schema.get(SECRET_SCHEMA_MARKER):
        return {**_REF, "description": _secret_description(schema.get("description"))}
    if schema.get(LITERAL_SCHEMA_MARKER):
        return {k: v for k, v in schema.items() if k != LITERAL_SCHEMA_MARKER}
    out = dict(schema)
    if len(patterns := out.pop("patternProperties", {})) == 1:  # a map whose keys are Text (labels)
        ((pattern, values),) = patterns.items()
        out |= {"propertyNames": {"pattern": pattern}, "additionalProperties": values}
    if "properties" in out:
        required = set(out.get("required", ()))
        out["properties"] = {
            name: _nullable(sub if name in _NO_REFS and name in required else _allow_refs(sub), name in required)
            for name, sub in out["properties"].items()
        }
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _allow_refs(out[key])
    if "anyOf" in out:
        if "description" in out and any(isinstance(s, dict) and s.get(SECRET_SCHEMA_MARKER) for s in out["anyOf"]):
            out["description"] = _secret_description(out["description"])  # an optional secret's own description
        out["anyOf"] = [_allow_refs(s) for s in out["anyOf"]]
        return out
    if _is_scalar(out) and out.get("type") != "object":
        meta = {k: out.pop(k) for k in _META if k in out}
        return {"anyOf": [out, _REF], **meta}
    return out


def _nullable(schema: dict[str, Any], required: bool) -> dict[str, Any]:
    """An optional field may be null (`streams:` left empty): the models read it as not set (models.py)."""
    if required or _NULL in schema.get("anyOf", ()) or schema.get("type") == "null":
        return schema
    if "anyOf" in schema:
        return {**schema, "anyOf": [*schema["anyOf"], _NULL]}
    meta: dict[str, Any] = {k: schema[k] for k in _META if k in schema}
    return {"anyOf": [{k: v for k, v in schema.items() if k not in _META}, _NULL], **meta}


def _standard_bounds(schema: Any) -> Any:
    """A copy of `schema` with pydantic's bound names (`ge`, …) in a number's schema as JSON Schema's."""
    if isinstance(schema, list):
        return [_standard_bounds(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    numeric = schema.get("type") in ("integer", "number")
    return {(_BOUNDS.get(k, k) if numeric else k): _standard_bounds(v) for k, v in schema.items()}


def _storage_types(fields: list[str]) -> list[dict[str, Any]]:
    """Per Storage type (checks.py's table), what validate asks: its required fields set (not null), and the
    others unset (null is unset, models.py)."""
    rules = []
    for kind, (required, optional) in STORAGE_FIELDS.items():
        foreign = [f for f in fields if f not in (*required, *optional, "type")]
        then = {
            "required": list(required),
            "properties": {
                **{f: {"not": _NULL} for f in required},
                **{f: {**_UNSET, "description": f"does not apply to storage type {kind}"} for f in foreign},
            },
        }
        rules.append({"if": {"properties": {"type": {"const": kind}}, "required": ["type"]}, "then": then})
    return rules


def _when(field: str, values: list[Any], *, needs: tuple[str, ...] = (), unset: tuple[str, ...] = ()) -> dict[str, Any]:
    """While `field` is one of `values` (None: unset, so a default counts when it is listed), the fields
    `needs` are set and `unset` are not. A reference in `field` matches no value: its rule is left to validate."""
    matched: dict[str, Any] = {"properties": {field: {"enum": values}}}
    if None not in values:
        matched["required"] = [field]
    then = {
        "required": list(needs),
        "properties": {**{f: {"not": _NULL} for f in needs}, **{f: _UNSET for f in unset}},
    }
    return {"if": matched, "then": then}


# Rules between fields of one object that validate checks (checks.py), for an editor too (walk 47d).
_FIELD_RULES: Final = {
    "ThumbnailFile": [
        _when("cdn", ["tencent"], needs=("definition",), unset=("interval",)),
        _when("cdn", ["huawei"], needs=("interval",), unset=("definition",)),
    ],
    "RecordingJobSpec": [
        _when("mode", ["mixed"], needs=("mix",)),
        _when("mode", ["single", None], unset=("mix",)),  # single is the default
        {
            "if": {"properties": {"format": {"const": "mp3"}}, "required": ["format"]},
            "then": {
                "required": ["media"],
                "properties": {"media": {"not": {"enum": ["video", "audio-video", "separate", None]}}},
            },
        },
    ],
    "MixConfig": [
        {  # custom layout: its regions, at least one (ZEGO's StartRecord page)
            "if": {"properties": {"mixMode": {"const": 1}}, "required": ["mixMode"]},
            "then": {"required": ["mixInputList"], "properties": {"mixInputList": {"type": "array", "minItems": 1}}},
        },
        _when("mixMode", [1, 2, None], unset=("mixMaxResolutionStreamId",)),  # one large stream: 3, 4, 5 only
    ],
    # accessToken and the legacy calls' rate limits with cloudrecordApi: legacy only, the current calls' not then
    "ZegoProvider": [
        {
            "if": {"properties": {"cloudrecordApi": {"enum": ["current", None]}}},
            "then": {
                "properties": {
                    "accessToken": _UNSET,
                    "rateLimits": {"propertyNames": {"not": {"enum": list(ZEGO_RECORDING_APIS["legacy"])}}},
                }
            },
        },
        {
            "if": {"properties": {"cloudrecordApi": {"const": "legacy"}}, "required": ["cloudrecordApi"]},
            "then": {
                "properties": {"rateLimits": {"propertyNames": {"not": {"enum": list(ZEGO_RECORDING_APIS["current"])}}}}
            },
        },
    ],
}


def json_schema() -> dict[str, Any]:
    """The schema of one document: `oneOf` the five kinds, each with its `kind` constant."""
    _, top = models_json_schema([(m, "validation") for m in DOCUMENT_MODELS.values()], ref_template="#/$defs/{model}")
    defs = {name: _allow_refs(_standard_bounds(sub)) for name, sub in top.get("$defs", {}).items()}
    defs["Reference"] = REFERENCE
    storage = defs["StorageConfig"]
    storage["allOf"] = _storage_types(list(storage["properties"]))
    for name, rules in _FIELD_RULES.items():
        defs[name]["allOf"] = rules
    for vendor, name in (("volcengine", "VolcengineProvider"), ("zego", "ZegoProvider")):
        # a rate limit's key is one of the vendor's calls (checks.py), as an editor can tell (walk 47d)
        defs[name]["properties"]["rateLimits"]["propertyNames"] = {"enum": list(VENDORS[vendor].rate_limits)}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://capctl.dev/schema/capctl-v1.json",
        "title": "capctl spec document (apiVersion capctl/v1)",
        "oneOf": [{"$ref": f"#/$defs/{model.__name__}"} for model in DOCUMENT_MODELS.values()],
        "$defs": defs,
    }
