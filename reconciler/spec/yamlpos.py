"""YAML to plain Python values that remember where every value came from.

Pydantic reports problems by path (`("spec", "rooms", 2)`); users need `file:line:col`. This module
builds documents straight from the YAML event stream (one pass, no recursion, libyaml when present) and
records the position of every value and every mapping key under its path. Building from events rather
than from composed nodes lets it refuse what a spec never needs and an attacker might send: duplicate
keys, custom tags, nesting deeper than `MAX_DEPTH` and alias bombs (`MAX_WEIGHT`); the file's size is
bounded where it is read (`loader.SpecLimits`).
"""

from __future__ import annotations

import codecs
import functools
import re
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

import yaml
import yaml.constructor
import yaml.resolver

from reconciler.jsonlimits import MAX_INT_DIGITS
from reconciler.spec.errors import ErrorSink, quote
from reconciler.spec.files import NotText, utf8_text

__all__ = ["Path", "RawDocument", "load_documents"]

try:
    _LOADER: type[Any] = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _LOADER = yaml.SafeLoader


def _char_offset(text: str, position: int) -> int:
    """A ReaderError's position in `text`: libyaml counts UTF-8 bytes (its marks count characters), so a
    control character after `教室` was placed lines past where it is (walk 16B-2)."""
    if _LOADER is yaml.SafeLoader:  # pragma: no cover - PyYAML built without libyaml counts characters
        return position
    return len(text.encode("utf-8")[:position].decode("utf-8", "ignore"))


Path = tuple[str | int, ...]
Pos = tuple[int, int]
Where = tuple[str, int, int]

MAX_DEPTH: Final = 64
MAX_WEIGHT: Final = 1_000_000  # values in one document, counting each alias expansion

_YAML = "tag:yaml.org,2002:"
_SCALAR_TAGS: Final = {f"{_YAML}{t}" for t in ("str", "int", "float", "bool", "null")}
_SEQ_TAGS: Final = {None, "!", f"{_YAML}seq"}
_MAP_TAGS: Final = {None, "!", f"{_YAML}map"}
_RESOLVER: Final[Any] = yaml.resolver.Resolver()
_CONSTRUCTOR: Final = yaml.constructor.SafeConstructor()
_INT_BITS: Final = (10**MAX_INT_DIGITS).bit_length()
_BUILD: Final = {
    f"{_YAML}int": _CONSTRUCTOR.construct_yaml_int,
    f"{_YAML}float": _CONSTRUCTOR.construct_yaml_float,
    f"{_YAML}bool": _CONSTRUCTOR.construct_yaml_bool,
    f"{_YAML}null": _CONSTRUCTOR.construct_yaml_null,
}


class _Merge:
    """The `<<` merge key (a plain scalar resolved to the merge tag)."""


_MERGE: Final = _Merge()


@dataclass(slots=True)
class RawDocument:
    """One YAML document as plain values, with the position of every value and key by path.

    `line`, `col` are those of the document's content (its root value), after any `---` and comments.
    """

    file: str
    index: int
    line: int
    col: int
    value: Any
    values: dict[Path, Pos] = field(default_factory=dict)
    keys: dict[Path, Pos] = field(default_factory=dict)

    @property
    def where(self) -> Where:
        return (self.file, self.line, self.col)

    def at(self, path: Path) -> Where:
        """Position of the value at `path`, or of its nearest ancestor that has one (aliases, merges)."""
        for end in range(len(path), -1, -1):
            pos = self.values.get(path[:end])
            if pos is not None:
                return (self.file, *pos)
        return self.where

    def key_at(self, path: Path) -> Where:
        """Position of the mapping key that ends `path` (for unknown-field errors), else of its value."""
        pos = self.keys.get(path)
        return (self.file, *pos) if pos is not None else self.at(path)

    @property
    def source(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(slots=True)
class _Frame:
    container: dict[Any, Any] | list[Any]
    path: Path
    pos: Pos
    anchor: str | None
    weight: int = 1
    key: Any = None
    key_pos: Pos = (0, 0)
    has_key: bool = False
    merges: list[tuple[Any, Pos]] = field(default_factory=list)


class _DocumentAbort(Exception):
    """The current document cannot be built (too deep, too big, bad alias); skip to its end."""


def _pos(mark: Any) -> Pos:
    return (mark.line + 1, mark.column + 1)


@functools.lru_cache(maxsize=4096)
def _plain_tag(value: str) -> str:
    """The implicit tag of a plain scalar; cached because spec sets repeat the same words thousands of times."""
    tag: str = _RESOLVER.resolve(yaml.ScalarNode, value, (True, False))
    return tag


def _as_written(tag: str) -> str:
    """`!!set` as the spec spells it, not PyYAML's `tag:yaml.org,2002:set`."""
    return f"!!{tag.removeprefix(_YAML)}" if tag.startswith(_YAML) else tag


def _scalar(event: Any) -> Any:
    tag = event.tag
    plain = event.implicit[0]
    if tag is None or tag == "!":
        if not plain:
            return event.value
        tag = _plain_tag(event.value)
        if tag == f"{_YAML}merge":
            return _MERGE
        if tag not in _BUILD:  # strings, and timestamps: a spec has no dates, so "2024-01-02" stays text
            return event.value
    elif tag not in _SCALAR_TAGS:
        raise ValueError(
            f"unsupported tag {_as_written(tag)!r}: only standard YAML tags (str, int, float, bool, null) are allowed"
        )
    build = _BUILD.get(tag)
    if build is None:
        return event.value
    try:
        value = build(yaml.ScalarNode(tag, event.value))
    except (ValueError, LookupError, yaml.YAMLError) as exc:  # `!!int ""` indexes, `!!bool maybe` looks up
        raise ValueError(f"{quote(event.value)} is not a valid {tag.removeprefix(_YAML)}") from exc
    # As JSON's: a hex, octal or binary literal has no digit limit in Python, and 0x + 5,000 digits made every
    # message that printed it in decimal (an out-of-range value) a traceback; no spec number is that long.
    if isinstance(value, int) and value.bit_length() > _INT_BITS:
        raise ValueError(f"{quote(event.value)} is a number of more than {MAX_INT_DIGITS} digits")
    return value


class _Builder:
    """Turns the events of one file into `RawDocument`s, reporting problems into the sink."""

    def __init__(self, file: str, errors: ErrorSink) -> None:
        self.file = file
        self.errors = errors
        self.docs: list[RawDocument] = []
        self._index = 0

    def _start_document(self, event: Any) -> None:
        self._doc = RawDocument(self.file, self._index, *_pos(event.start_mark), None)
        self._index += 1
        self._stack: list[_Frame] = []
        self._anchors: dict[str, tuple[Any, int]] = {}
        self._weight = 0
        self._root_set = False

    def _fail(self, pos: Pos, message: str) -> NoReturn:
        self.errors.add((self.file, *pos), message)
        raise _DocumentAbort

    def _child_path(self, parent: _Frame) -> Path:
        if isinstance(parent.container, list):
            return (*parent.path, len(parent.container))
        return (*parent.path, parent.key)

    def _emit(self, value: Any, pos: Pos, anchor: str | None, weight: int, path: Path | None) -> None:
        self._weight += weight
        if self._weight > MAX_WEIGHT:
            self._fail(pos, f"document too large: more than {MAX_WEIGHT} values (after alias expansion)")
        if anchor is not None:
            self._anchors[anchor] = (value, weight)
        if not self._stack:
            # A document is where its content starts (its first key), not its `---` line or a comment above it.
            self._doc.value, (self._doc.line, self._doc.col) = value, pos
            self._root_set = True
            return
        parent = self._stack[-1]
        parent.weight += weight
        if isinstance(parent.container, list):
            self._doc.values[path if path is not None else self._child_path(parent)] = pos
            parent.container.append(value)
            return
        if not parent.has_key:
            if isinstance(value, dict | list):
                self._fail(pos, "a mapping key must be a scalar")
            parent.key, parent.key_pos, parent.has_key = value, pos, True
            return
        key, parent.has_key = parent.key, False
        if key is _MERGE:
            sources = value if isinstance(value, list) else [value]
            if not all(isinstance(s, dict) for s in sources):
                self._fail(pos, "a merge key (<<) needs a mapping or a list of mappings")
            parent.merges.extend((s, pos) for s in sources)
            return
        assert isinstance(parent.container, dict)
        key_path = path if path is not None else (*parent.path, key)
        if key in parent.container:
            first = self._doc.keys.get(key_path, parent.key_pos)
            self.errors.add((self.file, *parent.key_pos), f"duplicate key {key!r} (first at line {first[0]})")
            return
        self._doc.keys[key_path] = parent.key_pos
        self._doc.values[key_path] = pos
        parent.container[key] = value

    def _open(self, event: Any, container: dict[Any, Any] | list[Any], allowed: set[str | None]) -> None:
        pos = _pos(event.start_mark)
        if event.tag not in allowed:
            self._fail(pos, f"unsupported tag {_as_written(event.tag)!r}: only standard YAML tags are allowed")
        if len(self._stack) >= MAX_DEPTH:
            self._fail(pos, f"nesting deeper than {MAX_DEPTH} levels")
        if self._stack:
            parent = self._stack[-1]
            if isinstance(parent.container, dict) and not parent.has_key:
                self._fail(pos, "a mapping key must be a scalar")
            path = self._child_path(parent)
        else:
            path = ()
        self._stack.append(_Frame(container, path, pos, event.anchor))

    def _close(self) -> None:
        frame = self._stack.pop()
        container = frame.container
        if isinstance(container, dict):
            for source, pos in frame.merges:  # explicit keys win, then earlier merge sources
                for key, value in source.items():
                    if key not in container:
                        container[key] = value
                        self._doc.values[(*frame.path, key)] = pos
                        self._doc.keys[(*frame.path, key)] = pos
        self._weight -= frame.weight - 1  # children were counted already; _emit adds the whole frame
        self._emit(container, frame.pos, frame.anchor, frame.weight, frame.path)

    def _alias(self, event: Any) -> None:
        pos = _pos(event.start_mark)
        found = self._anchors.get(event.anchor)
        if found is None:
            self._fail(
                pos,
                f"unknown alias *{event.anchor} (an anchor must be defined before it is used;"
                f" {_GLOB_HINT}'*{event.anchor}')",
            )
        value, weight = found
        self._emit(value, pos, None, weight, None)

    def feed(self, event: Any) -> None:
        if isinstance(event, yaml.ScalarEvent):
            try:
                value = _scalar(event)
            except ValueError as exc:
                self._fail(_pos(event.start_mark), str(exc))
            self._emit(value, _pos(event.start_mark), event.anchor, 1, None)
        elif isinstance(event, yaml.MappingStartEvent):
            self._open(event, {}, _MAP_TAGS)
        elif isinstance(event, yaml.SequenceStartEvent):
            self._open(event, [], _SEQ_TAGS)
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            self._close()
        elif isinstance(event, yaml.AliasEvent):
            self._alias(event)

    def run(self, text: str) -> None:
        skipping, line = False, 0
        try:
            try:
                for event in yaml.parse(text, Loader=_LOADER):
                    if isinstance(event, yaml.DocumentStartEvent):
                        self._start_document(event)
                        skipping, line = False, self._doc.line - 1
                    elif isinstance(event, yaml.DocumentEndEvent):
                        if not skipping and self._root_set and self._doc.value is not None:
                            self.docs.append(self._doc)
                    elif not skipping and not isinstance(event, yaml.StreamStartEvent | yaml.StreamEndEvent):
                        try:
                            self.feed(event)
                        except _DocumentAbort:
                            skipping = True
            except yaml.YAMLError:
                self.errors.unread.append(text.split("\n", line)[-1])  # that document on: its names unknown
                raise
        except yaml.MarkedYAMLError as exc:
            detail = "; ".join(p for p in (exc.context, exc.problem) if p)
            if "exceeded maximum nesting depth" in detail:  # libyaml's own limit (1000 levels), past ours
                if not skipping:  # reached before our count did (the scanner reads ahead): ours, named once
                    self.errors.add((self.file, *_pos(exc.problem_mark)), f"nesting deeper than {MAX_DEPTH} levels")
                return
            long_key = _long_key(text, exc.problem_mark, flow="flow" in detail)
            if long_key is not None:
                line, col, length = long_key
                self.errors.add(
                    (self.file, line, col),
                    f"YAML syntax error: a mapping key of {length:,} characters, over YAML's limit of {_KEY_CHARS:,}: "
                    "a key this long usually means a missing ':' or quote earlier on the line",
                )
                return
            mark, detail = _to_fix(text, exc)
            where = (self.file, *_pos(mark)) if mark is not None else (self.file, 0, 0)
            if mark is not None and _char_at(text, mark.line, mark.column) == "\t":
                detail += " (a tab: YAML indents with spaces only)"
            elif exc.context == "while scanning an alias" and exc.context_mark is not None:
                detail += (
                    f" (a `*` that starts a value begins a YAML alias; {_GLOB_HINT}{_glob_at(text, exc.context_mark)})"
                )
            elif "mapping values are not allowed" in detail:  # PyYAML says "here", libyaml "in this context"
                detail += " (is this line indented deeper than the key above it? Or quote a value holding ': ')"
            self.errors.add(where, f"YAML syntax error: {detail}")
        except yaml.reader.ReaderError as exc:  # a character YAML does not allow anywhere: no mark, a position
            at = min(_char_offset(text, exc.position), len(text))
            line, col = text.count("\n", 0, at) + 1, at - (text.rfind("\n", 0, at) + 1) + 1
            char = exc.character if isinstance(exc.character, int) else ord(exc.character)
            # No escape is advised: text in the specs holds no control character either (fields.py).
            self.errors.add(
                (self.file, line, col),
                f"YAML syntax error: the character U+{char:04X} is not allowed in YAML, nor in spec text: remove it",
            )
        except yaml.YAMLError as exc:
            self.errors.add((self.file, 0, 0), f"YAML error: {exc}")


# A glob that starts with `*` (`match: *`, `match: *-live`) is, unquoted, a YAML alias: an error in YAML's words
# alone (`while scanning an alias`, `unknown alias *-live`) did not say what to write instead (walk 55b).
_GLOB_HINT: Final = "a glob that starts with `*` is written quoted: "
_GLOB_END: Final = re.compile(r"[\s,\]}#]")


def _glob_at(text: str, mark: Any) -> str:
    """The text that starts at `mark` (an alias's `*`) up to where a plain value ends, quoted: `'*.live'`."""
    line = text.split("\n", mark.line + 1)[mark.line] if mark.line < text.count("\n") + 1 else ""
    rest = line[mark.column :]
    end = _GLOB_END.search(rest, 1)
    return "'" + (rest[: end.start()] if end else rest) + "'"


def load_documents(file: str, data: bytes, errors: ErrorSink) -> list[RawDocument]:
    """Every non-empty document of one file. Problems go to `errors`; what could be built is returned."""
    try:
        text = utf8_text(data)
    except NotText as exc:
        start = data.rfind(b"\n", 0, exc.offset) + 1
        line = data.count(b"\n", 0, exc.offset) + 1
        col = len(data[start : exc.offset].removeprefix(codecs.BOM_UTF8).decode("utf-8", "replace")) + 1  # characters
        errors.add((file, line, col), f"{exc.reason}: save the file as UTF-8")
        return []
    if "\ufeff" in text:  # files joined with `cat`, one saved by a Windows editor: its mark opens a line inside
        text = _LINE_BOM_RE.sub("", text)  # (a document may start with one in YAML 1.2; libyaml took it for text)
    builder = _Builder(file, errors)
    builder.run(text)
    return builder.docs


_LINE_BOM_RE: Final = re.compile("^\ufeff", re.MULTILINE)


def _char_at(text: str, line: int, column: int) -> str:
    """The character at a 0-based (line, column) of `text`, or '' past its end."""
    lines = text.split("\n", line + 1)
    return lines[line][column : column + 1] if line < len(lines) else ""


_KEY_CHARS: Final = 1024  # YAML's limit on an implicit key, from its start to its ':'
_BLOCK_LEAD: Final = re.compile(r" *(?:[-?][ \t]+)*")  # indentation, then `- ` and `? ` before a key in a block


def _long_key(text: str, mark: Any, *, flow: bool) -> tuple[int, int, int] | None:
    """(line, col, length) of the key ending at the ':' YAML refused at `mark` when it is over `_KEY_CHARS`
    (walk 35b: libyaml then says `mapping values are not allowed in this context`, whose hint is about
    indentation, or `could not find expected ':'` at the very ':'). A `: ` before it on the line makes it a value
    holding ': ', left to that hint."""
    if mark is None or _char_at(text, mark.line, mark.column) != ":":
        return None
    before = text.split("\n", mark.line + 1)[mark.line][: mark.column]
    if flow:  # a key of `{a: 1, key: …}` starts after its `{`, `[` or `,`
        start = max(before.rfind(c) for c in "{[,") + 1
        start += len(before[start:]) - len(before[start:].lstrip(" \t"))
    else:
        start = lead.end() if (lead := _BLOCK_LEAD.match(before)) else 0
    key = before[start:]
    if len(key) <= _KEY_CHARS or ": " in key or ":\t" in key:
        return None
    return (mark.line + 1, start + 1, len(key))


_OPENERS: Final = ("while parsing a flow sequence", "while parsing a flow mapping", "while scanning a quoted scalar")
_FLOW_NAMES: Final = {yaml.FlowSequenceStartToken: "a flow sequence", yaml.FlowMappingStartToken: "a flow mapping"}


def _to_fix(text: str, exc: yaml.MarkedYAMLError) -> tuple[Any, str]:
    """The mark and the words of a YAML syntax error: where the thing to fix is, not only where libyaml gave up.

    An unclosed `[`, `{` or quote is named where it opened (walk 32d-2); at the end of the file that is all the
    error would name. Only those open: a block mapping's context is where it began (`1:1` for a mis-indented
    key), and a key without its `:` is the key itself, with libyaml's words (walk 35a-1).
    """
    mark, opened = exc.problem_mark or exc.context_mark, exc.context_mark
    detail = "; ".join(p for p in (exc.context, exc.problem) if p)
    if mark is None:
        return None, detail
    at_end = _at_end(text, mark.line, mark.column)
    if exc.context in _OPENERS and opened is not None and opened.line != mark.line:
        if at_end:
            return opened, f"{exc.context} that is not closed by the end of the file"
        return mark, f"{detail} (opened at {opened.line + 1}:{opened.column + 1})"
    if exc.context == "while scanning a simple key" and opened is not None:
        return opened, detail
    if at_end and (unclosed := _unclosed_flow(text)) is not None:  # `[x,` last: libyaml's context is the end too
        what, start = unclosed
        return start, f"while parsing {what} that is not closed by the end of the file"
    return mark, detail


def _unclosed_flow(text: str) -> tuple[str, Any] | None:
    """The innermost `[` or `{` still open at the end of `text` (what it is and its mark), or None."""
    open_: list[tuple[str, Any]] = []
    try:
        for token in yaml.scan(text, Loader=_LOADER):
            if (what := _FLOW_NAMES.get(type(token))) is not None:
                open_.append((what, token.start_mark))
            elif isinstance(token, yaml.FlowSequenceEndToken | yaml.FlowMappingEndToken) and open_:
                open_.pop()
    except yaml.YAMLError:  # a scanner error of its own: the parser's stands
        return None
    return open_[-1] if open_ else None


def _at_end(text: str, line: int, column: int) -> bool:
    """Whether a 0-based (line, column) is the end of `text` (libyaml marks the end after a final line break)."""
    lines = text.split("\n")
    return line >= len(lines) or (line == len(lines) - 1 and column >= len(lines[-1]))
