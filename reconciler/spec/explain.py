"""`capctl explain KIND[.FIELD]`: what a spec field is (type, default, range, description), read from the JSON
Schema that `capctl schema` prints, as `kubectl explain` reads the API's OpenAPI schema.

Reading the schema, not the models, keeps one source for editors and for this view. Pure: schema in, text out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

from reconciler.spec.errors import did_you_mean, did_you_mean_field
from reconciler.spec.fields import DURATION_FORMS, DURATION_SCHEMA_MARKER, PRINTABLE_PATTERN

__all__ = ["REFERENCE_REF", "Child", "ExplainError", "Node", "completions", "explain", "kinds", "node", "type_name"]

REFERENCE_REF: Final = "#/$defs/Reference"
_RANGE_KEYS: Final = (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))


class ExplainError(ValueError):
    """A kind or field the schema does not have; the message names what it has."""


@dataclass
class Node:
    """One position of the schema with what every schema alternative there says about it."""

    alternatives: list[dict[str, Any]]  # refs resolved; references and null dropped
    meta: dict[str, Any] = field(default_factory=dict)  # title, description, default of the field itself
    reference: bool = False  # a value reference ({env: NAME}) is accepted here
    nullable: bool = False
    duration: bool = False  # a whole number of seconds or a string like 5s


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema and schema["$ref"] != REFERENCE_REF:
        schema = {**defs[schema["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def node(schema: dict[str, Any], defs: dict[str, Any]) -> Node:
    """Flatten the anyOf/oneOf nesting (references and null aside) of the schema at one position."""
    out = Node([], {k: schema[k] for k in ("title", "description", "default") if k in schema})

    def walk(sub: dict[str, Any]) -> None:
        if sub.get("$ref") == REFERENCE_REF:
            out.reference = True
            out.meta.setdefault("description", sub.get("description"))
            return
        sub = _resolve(sub, defs)
        if sub.get(DURATION_SCHEMA_MARKER):  # an integer or a pattern: one type, its range is the field's own
            out.alternatives.append({"type": "duration"})
            out.reference = out.duration = True
            return
        if sub.get("type") == "null":
            out.nullable = True
            return
        branches = sub.get("anyOf") or sub.get("oneOf")
        if branches:
            if sub.get("description"):
                out.meta.setdefault("description", sub["description"])
            for branch in branches:
                walk(branch)
            return
        out.alternatives.append(sub)

    walk(schema)
    if out.meta.get("description") is None:
        out.meta.pop("description", None)
    return out


def type_name(n: Node, defs: dict[str, Any]) -> str:
    names: list[str] = []
    for alt in n.alternatives:
        kind = alt.get("type", "object")
        if "const" in alt:
            name = json.dumps(alt["const"])
        elif kind == "array":
            name = "[]" + type_name(node(alt.get("items", {}), defs), defs)
        elif kind == "object" and isinstance(alt.get("additionalProperties"), dict):
            name = "map[string]" + type_name(node(alt["additionalProperties"], defs), defs)
        elif kind == "object":
            name = alt.get("title", "object")
        else:  # JSON Schema allows a list of types: `{"type": ["integer", "string"]}`
            name = " | ".join(kind) if isinstance(kind, list) else str(kind)
        if name not in names:
            names.append(name)
    if not names and n.reference:
        names.append("reference")
    return " | ".join(names) or "any"


def _range(alt: dict[str, Any]) -> list[str]:
    parts = [f"{sign} {alt[key]}" for key, sign in _RANGE_KEYS if key in alt]
    if "enum" in alt:
        parts.append("one of " + ", ".join(json.dumps(v) for v in alt["enum"]))
    for key, words in (
        ("minLength", "length ≥ {}"),
        ("maxLength", "length ≤ {}"),
        ("minItems", "items ≥ {}"),
        ("maxItems", "items ≤ {}"),
    ):
        if key in alt:
            parts.append(words.format(alt[key]))
    if alt.get("pattern") == PRINTABLE_PATTERN:  # every text's: in words, not as its regex
        parts.append("printable (no control character)")
    elif "pattern" in alt:
        parts.append(f"matches {alt['pattern']}")
    return parts


@dataclass
class Child:
    """One field below a position: its schema in each alternative that has it, and where it is required."""

    schemas: list[dict[str, Any]] = field(default_factory=list)
    present_in: list[str] = field(default_factory=list)  # the titles of the alternatives that have it
    required_in: list[str] = field(default_factory=list)


def _children(n: Node, defs: dict[str, Any]) -> tuple[dict[str, Child], list[str]]:
    """The fields below `n` (through lists and maps, as kubectl goes through lists), and the titles of the
    object alternatives there (a Provider's spec is a Volcengine or a ZEGO one: fields differ)."""
    children: dict[str, Child] = {}
    titles: list[str] = []
    for alt in n.alternatives:
        if alt.get("type") == "array" and "items" in alt:
            inner, inner_titles = _children(node(alt["items"], defs), defs)
            for name, child in inner.items():
                merged = children.setdefault(name, Child())
                merged.schemas += child.schemas
                merged.present_in += child.present_in
                merged.required_in += child.required_in
            titles += inner_titles
            continue
        if isinstance(alt.get("additionalProperties"), dict) and "properties" not in alt:
            return _children(node(alt["additionalProperties"], defs), defs)
        if "properties" not in alt:
            continue
        title = alt.get("title", "object")
        titles.append(title)
        for name, sub in alt["properties"].items():
            child = children.setdefault(name, Child())
            child.schemas.append(sub)
            child.present_in.append(title)
            if name in alt.get("required", ()):
                child.required_in.append(title)
    return children, titles


def _child_node(child: Child, defs: dict[str, Any]) -> Node:
    nodes = [node(sub, defs) for sub in child.schemas]
    merged = Node([alt for n in nodes for alt in n.alternatives], nodes[0].meta)
    merged.reference = any(n.reference for n in nodes)
    merged.nullable = any(n.nullable for n in nodes)
    merged.duration = any(n.duration for n in nodes)
    return merged


def _where(child: Child, titles: list[str]) -> str:
    """`-required-`, and which alternatives have the field when not all of them do."""
    flags = []
    if child.required_in and len(child.required_in) == len(child.present_in):
        flags.append("-required-")
    if len(set(titles)) > 1 and len(set(child.present_in)) < len(set(titles)):
        flags.append("(" + ", ".join(dict.fromkeys(child.present_in)) + ")")
    elif child.required_in and len(child.required_in) < len(child.present_in):
        flags.append("(required in " + ", ".join(child.required_in) + ")")
    return ("  " + " ".join(flags)) if flags else ""


def kinds(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    defs = schema["$defs"]
    documents = [_resolve(ref, defs) for ref in schema["oneOf"]]
    return {doc["properties"]["kind"]["const"]: doc for doc in documents}


def _walk(schema: dict[str, Any], path: str) -> tuple[str, dict[str, Any], Node, str]:
    """(kind, its document schema, the node at `path`, its required/alternatives flags)."""
    defs = schema["$defs"]
    documents = kinds(schema)
    kind_name, *names = path.split(".")
    matched = [k for k in documents if k.lower() == kind_name.lower()]
    if not matched:
        hint = did_you_mean(kind_name, documents)
        raise ExplainError(f"{path!r}: no kind {kind_name!r}{hint}; the kinds are " + ", ".join(documents))
    document = documents[matched[0]]
    current, where, walked = node(document, defs), "  -required-", [matched[0]]
    for name in names:
        fields, titles = _children(current, defs)
        if name not in fields:
            have = ", ".join(fields) or "none: it is a value"
            hint = did_you_mean_field(name, fields)
            raise ExplainError(f"{path!r}: {'.'.join(walked)} has no field {name!r}{hint}; its fields: {have}")
        current, where = _child_node(fields[name], defs), _where(fields[name], titles)
        walked.append(name)
    return matched[0], document, current, where


def completions(schema: dict[str, Any], incomplete: str) -> list[str]:
    """The KIND[.FIELD] paths that extend `incomplete` by one part (for shell completion)."""
    parent, dot, _ = incomplete.rpartition(".")
    if not dot:
        candidates = list(kinds(schema))
    else:
        try:
            _, _, current, _ = _walk(schema, parent)
        except ExplainError:
            return []
        candidates = [f"{parent}.{name}" for name in _children(current, schema["$defs"])[0]]
    return [c for c in candidates if c.lower().startswith(incomplete.lower())]


def explain(schema: dict[str, Any], path: str) -> str:
    """The text of `capctl explain PATH` (KIND, or KIND.field.field...); ExplainError for an unknown part."""
    defs = schema["$defs"]
    kind, document, current, where = _walk(schema, path)
    names = path.split(".")[1:]
    api_version = document["properties"]["apiVersion"].get("const", "")
    lines = [f"KIND:     {kind}", f"VERSION:  {api_version}", ""]
    if names:
        lines.append(f"FIELD:    {names[-1]} <{type_name(current, defs)}>{where}")
        if current.meta.get("default") is not None:
            lines.append(f"DEFAULT:  {json.dumps(current.meta['default'], ensure_ascii=False)}")
        ranges = [part for alt in current.alternatives for part in _range(alt)]
        if ranges:
            lines.append(f"RANGE:    {'; '.join(ranges)}")
        lines.append("")
    description = current.meta.get("description") or _first_description(current)
    lines.append("DESCRIPTION:")
    # On one line: a model's docstring keeps its line break (SnapshotJob's printed its second line unindented).
    description = " ".join(description.split()) if description else None
    lines.append(f"    {description}" if description else "    (none in the schema: see docs/spec-language.md)")
    if current.duration:
        lines.append(f"    A duration: {DURATION_FORMS}.")
    if current.reference and current.alternatives:  # (a secret field says already that it must be one)
        lines.append("    May be a value reference: {env: NAME}, {env: NAME, default: VALUE} or {file: PATH}.")
    fields, titles = _children(current, defs)
    if fields:
        lines += ["", "FIELDS:"]
        for name, child in fields.items():
            child_node = _child_node(child, defs)
            lines.append(f"    {name} <{type_name(child_node, defs)}>{_where(child, titles)}")
            if child_node.meta.get("description"):
                lines.append(f"        {child_node.meta['description']}")
    return "\n".join(lines) + "\n"


def _first_description(n: Node) -> str | None:
    return next((alt["description"] for alt in n.alternatives if alt.get("description")), None)
