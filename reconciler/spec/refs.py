"""Value references (`{env: NAME}`, `{env: NAME, default: V}`, `{file: PATH}`) and secret fields.

References are resolved on the raw document, before the models see it, so every unresolved reference is
reported at its own position in one pass. Secret fields must be references: a literal would put the
secret into git. A resolved secret becomes a `Secret` at once, so its text never reaches a model, an error
message or a repr.

Validation must run where secrets are absent (a pre-commit hook, a pull request from a fork), so secret
references can be checked for their shape only (`read_secrets=False`): the environment and the files they
name are not read, and the field holds an `UnreadSecret`. Other references are always resolved: their
values are needed to check types and ranges.

Any scalar may be a reference, but a value read from one may be a credential the author did not mean to
publish (plans are posted to pull requests). So such text is a `SecretText` (sent as is, shown as a
fingerprint) unless its field is in `SHOWN_FIELDS`, a short list of settings that are harmless and that a
reviewer needs to see (endpoints, app id, region, ...). Numbers, booleans and durations are shown: they are
settings, not credentials. A task key is printed in every plan, log and listing, so a reference that would
name a task (a job's name, a room, a thumbnail file id, a Volcengine `taskId`) is refused, as is one where a
mapping or a list goes: read from text, it could only be text there, or with `default: ~` "not written".
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path as FsPath
from typing import Any, Final, NoReturn

from pydantic import BaseModel

from reconciler.secrets import RUN_KEY, Secret, SecretText
from reconciler.spec.errors import ErrorSink, SpecError, did_you_mean, dotted, quote
from reconciler.spec.fields import RefStr
from reconciler.spec.files import FileRefused, NotText, read_regular, utf8_text, without_newline
from reconciler.spec.models import DOCUMENT_MODELS, field_types
from reconciler.spec.yamlpos import Path, RawDocument

__all__ = ["LITERAL_SECRET", "UnreadSecret", "Unresolved", "is_reference", "reference_typo", "resolve_document"]

SECRET_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "Provider": ("accessKey", "secretKey", "serverSecret", "callbackSecret", "accessToken"),
    "Storage": ("accessKey", "secretKey"),
}
_ANY_SECRET: Final = frozenset(("spec", f) for fields in SECRET_FIELDS.values() for f in fields)
# Fields whose referenced value is shown in plans (as `spec.<field>` of any kind): not credentials, and a
# reviewer must see where calls go. Any other referenced text is shown as a fingerprint only.
SHOWN_FIELDS: Final = frozenset(
    {
        "appId",
        "endpoint",
        "rtcEndpoint",
        "cloudrecordEndpoint",
        "cloudrecordApi",
        "region",
        "businessId",
        "accountId",
        "serviceId",
        "space",
        "bucket",
        "type",
        "provider",
        "storage",
    }
)
KEY_REFERENCE: Final = (
    "a reference cannot name a task: task keys are printed in every plan, log and state listing; write it literally"
)
# The Volcengine TaskId names the vendor task: kept in the state to stop it, printed by `state list` and logs.
TASK_ID_REFERENCE: Final = (
    "a reference cannot name a vendor task: its id is kept in the state and printed by `capctl state list` "
    "and in logs; write it literally"
)
LITERAL_SECRET: Final = (
    "secret fields must be references such as {env: NAME} or {file: PATH} so the value never lands in git"
)
# A reference is one value read from text: set, it is text where a mapping or a list goes; unset with `default: ~`,
# it only ever meant "not written" (walk 53b: validate took it there, the editor schema flagged it).
_CONTAINER_REFERENCE: Final = (
    "a reference stands for one value (text, a number, a boolean), not {0}: write the {1} itself, with a reference "
    "in place of any single value in it"
)
_UNSET_HINT: Final = "; to leave it unset, leave it out"
MAX_REF_FILE_BYTES: Final = 1024 * 1024
_ENV_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABELS: Final = ("metadata", "labels")  # free-form keys: `{env: prod}` there is a label, not a reference


class UnreadSecret(Secret):
    """A secret reference checked for its shape only; it has no value, so it can never reach a vendor."""

    __slots__ = ()

    def __init__(self, reference: str) -> None:
        super().__init__(reference)  # the fingerprint tells references apart; it is not a secret's

    def reveal(self) -> NoReturn:
        raise RuntimeError("an unread secret reference has no value: load the specs with secrets resolved")


class Unresolved:
    """Stands in for a reference that failed; its error is already reported, so models skip it. It keeps that
    error: a reference in an unknown field (`secretKye: {env: X}`) is withdrawn for the unknown field's own."""

    __slots__ = ("error",)

    def __init__(self, error: SpecError) -> None:
        self.error = error

    def __repr__(self) -> str:
        return "<unresolved reference>"


class _Resolver:
    def __init__(
        self,
        doc: RawDocument,
        env: Mapping[str, str],
        errors: ErrorSink,
        read_secrets: bool,
        key: bytes,
        files_read: list[str],
    ) -> None:
        self.doc = doc
        self.files_read = files_read
        self.env = env
        self.errors = errors
        self.read_secrets = read_secrets
        self.key = key
        self.for_kind(None)

    def for_kind(self, kind: Any) -> None:
        """Read the rest of the document as `kind`'s: its secret fields and its fields' types."""
        fields = SECRET_FIELDS.get(kind, ()) if isinstance(kind, str) else ()
        self.model = DOCUMENT_MODELS.get(kind) if isinstance(kind, str) else None
        self.secret_paths: frozenset[Path] = frozenset(("spec", f) for f in fields)
        # Paths whose references are checked for shape only (empty when secrets are read). Of a kind not known
        # (`kind: Provder`, unset) any kind's: its secrets were read offline, a missing one an error (walk 54a).
        self.unread: frozenset[Path] = (
            frozenset() if self.read_secrets else self.secret_paths if self.model is not None else _ANY_SECRET
        )

    def walk(self, value: Any, path: Path) -> Any:
        if isinstance(value, dict):
            if path == () and "kind" in value and not is_reference(value):
                # The kind first, a reference's too (validate reads one there): a Provider's `kind: {env: K}` had
                # its secret references called literals, their values demanded offline (walk 53b).
                kind = self.walk(value["kind"], ("kind",))
                self.for_kind(kind)
                return {k: kind if k == "kind" else self.walk(v, (k,)) for k, v in value.items()}
            if path != _LABELS and is_reference(value):
                if _names_task(path):
                    return self.fail(path, KEY_REFERENCE)
                if path == ("spec", "taskId"):
                    return self.fail(path, TASK_ID_REFERENCE)
                if container := self.container_at(path):
                    unset = _UNSET_HINT if "default" in value and value["default"] is None else ""
                    message = _CONTAINER_REFERENCE.format(container, container.split()[-1])
                    return self.fail(path, message + unset)
                return self.shown_or_hidden(self.reference(value, path, read=path not in self.unread), path)
            return {k: self.walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.walk(v, (*path, i)) for i, v in enumerate(value)]
        return value

    def container_at(self, path: Path) -> str:
        """What the field at `path` is written as where it has no scalar form ("a mapping", "a list"), else "".
        A field the model does not have is left to the unknown-field error (its reference withdrawn there)."""
        types = field_types(self.model, path) if self.model is not None else []
        kinds = {_container(t) for t in types if t is not type(None)}
        return kinds.pop() if len(kinds) == 1 else ""

    def shown_or_hidden(self, value: Any, path: Path) -> Any:
        """Referenced text as `SecretText` unless its field is shown (or a secret field: it becomes a `Secret`).
        Label values are shown: selectors (`-l team=x`) match them and listings print them; so is a kind, named by
        its error if unknown (a fingerprint had no did-you-mean)."""
        shown = (len(path) == 2 and path[1] in SHOWN_FIELDS) or path[:2] == _LABELS or path == ("kind",)
        if not isinstance(value, str) or shown or path in self.secret_paths:
            return value
        return SecretText(value, self.key)

    def fail(self, field: Path, message: str, *, at: Path | None = None, at_key: bool = False) -> Unresolved:
        """Report `message` about the reference in `field` (named in it, as every spec error names its field),
        at the reference or at its part `at` (the key itself with `at_key`)."""
        where = field if at is None else at
        self.errors.add((self.doc.key_at if at_key else self.doc.at)(where), f"{dotted(field)}: {message}")
        return Unresolved(self.errors.errors[-1])

    def reference(self, ref: dict[Any, Any], path: Path, *, read: bool) -> Any:
        """The reference's value; with `read` false, only its shape is checked and an `UnreadSecret` returned."""
        allowed = ("file",) if "file" in ref else ("env", "default")
        if "env" in ref and "file" in ref:
            return self.fail(path, "a reference has either `env` or `file`, not both")
        for key in ref:
            if key not in allowed:
                hint = did_you_mean(str(key), allowed)
                return self.fail(path, f"unknown key {quote(key)} in a reference{hint}", at=(*path, key), at_key=True)
        for key in ("file", "env", "default"):
            if is_reference(ref.get(key)):  # `{env: {env: X}}`: env's name was shown as a Python dict
                return self.fail(path, f"a reference cannot hold another reference (in its `{key}`)", at=(*path, key))
        if "file" in ref:
            name = ref["file"]
            if not isinstance(name, str) or not name:
                return self.fail(path, "`file` needs a path (relative to this spec file)", at=(*path, "file"))
            return self.file(name, path) if read else UnreadSecret(f"file:{name}")
        name = ref["env"]
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            return self.fail(path, f"invalid environment variable name {quote(name)}", at=(*path, "env"))
        if isinstance(ref.get("default"), dict | list):
            return self.fail(path, "a reference default must be a scalar", at=(*path, "default"))
        return self.env_value(ref, name, path) if read else UnreadSecret(f"env:{name}")

    def env_value(self, ref: dict[Any, Any], name: str, path: Path) -> Any:
        value = self.env.get(name)
        if value is not None:
            # A Kubernetes Secret made --from-file of an `echo`ed file: the newline a file reference drops too,
            # which no credential holds (it made every signature wrong, the key looking right)
            return RefStr(without_newline(value) if path in self.secret_paths else value)
        if "default" not in ref:
            # Why validate needs this one when it needs no secret: the value is checked (a type, a range).
            hint = "" if self.read_secrets else " (only secret fields are checked without their values)"
            return self.fail(path, f"environment variable {name} is not set and the reference has no default{hint}")
        default = ref["default"]
        return RefStr(default) if isinstance(default, str) else default

    def file(self, name: str, path: Path) -> Any:
        target = FsPath(self.doc.file).parent / name
        self.files_read.append(str(target))
        try:
            data = read_regular(target, MAX_REF_FILE_BYTES)
        except FileRefused as exc:
            # Where it was looked for, as the command's paths name files: a path read as relative to the working
            # directory (not to the spec file) names another file than the one the user checks (walk 21c).
            where = os.path.normpath(target)
            at = "" if where == name else f" (looked for at {where!r}: a path is relative to its spec file)"
            return self.fail(path, f"cannot read referenced file {quote(name)}{at}: {exc}")
        try:
            text = utf8_text(data)
        except NotText as exc:
            return self.fail(path, f"referenced file {quote(name)} is {exc.reason}: save it as UTF-8")
        return RefStr(without_newline(text))

    def secrets(self, raw: Any, resolved: Any, kind: str) -> None:
        """Turn resolved secret fields into `Secret`s; refuse literals (their text is never echoed)."""
        fields = SECRET_FIELDS.get(kind, ())
        spec, raw_spec = resolved.get("spec"), raw.get("spec")
        if not fields or not isinstance(spec, dict) or not isinstance(raw_spec, dict):
            return
        for name in fields:
            value = spec.get(name)
            if value is None or isinstance(value, Unresolved | UnreadSecret):
                continue
            path = ("spec", name)
            raw_value = raw_spec.get(name)
            if not is_reference(raw_value):
                self.errors.add(self.doc.at(path), f"spec.{name}: {reference_typo(raw_value) or LITERAL_SECRET}")
                spec[name] = Secret("")  # placeholder: the load fails on the error above
            elif not isinstance(value, str):
                spec[name] = self.fail(path, "a secret must resolve to text")
            elif not value:
                spec[name] = self.fail(path, f"the secret resolved to an empty value{_empty(raw_value)}")
            else:
                spec[name] = Secret(str(value), self.key)


def reference_typo(value: Any) -> str:
    """What is wrong with a mapping meant as a reference whose `env` or `file` key is misspelt (`{enV: NAME}`,
    `{Env: NAME}`, `{fiel: PATH}`), else "". Not being a reference, it was read as a literal mapping: a secret
    field said "must be references such as {env: NAME}", another "should be a valid string, got a mapping",
    neither naming the key at fault (walk 27b)."""
    if not isinstance(value, dict) or "env" in value or "file" in value:
        return ""
    near = {k: difflib.get_close_matches(str(k).lower(), ("env", "file"), n=1, cutoff=0.6) for k in value}
    # `default` misspelt too (`{Env: X, Default: Y}`) still reads as a reference (walk 28b)
    defaults = [k for k in value if difflib.get_close_matches(str(k).lower(), ("default",), n=1, cutoff=0.6)]
    if not near or any(not close and key not in defaults for key, close in near.items()):
        return ""  # a key of something else (`{files: …, provider: …}`): not a reference
    misspelt = [(k, c) for k, c in near.items() if c]
    if not misspelt:  # `{default: V}` alone: a reference with its variable left out (it raised StopIteration)
        return "a reference needs `env: NAME` beside its `default` (`{env: NAME, default: V}`)"
    key, close = misspelt[0]
    return f"unknown key {quote(key)} in a reference (did you mean '{close[0]}'?)"


def _empty(ref: Any) -> str:
    """Where an empty secret came from: `VAR=` in a shell or an env file sets the variable, and a set variable,
    empty or not, hides the reference's default (walk 14b: the default looked ignored)."""
    if "file" in ref:
        return f": the file {quote(ref['file'])} is empty"
    unset = " (its default is used only when the variable is unset)" if "default" in ref else ""
    return f": environment variable {ref['env']} is set but empty{unset}"


def is_reference(value: Any) -> bool:
    """Whether a raw YAML value is a value reference (outside `metadata.labels`, whose keys are free-form)."""
    return isinstance(value, dict) and ("env" in value or "file" in value)


def _container(tp: Any) -> str:
    """What a field of type `tp` is written as, where that is not a scalar."""
    if (isinstance(tp, type) and issubclass(tp, BaseModel)) or typing.get_origin(tp) is dict:
        return "a mapping"
    return "a list" if typing.get_origin(tp) is list else ""


def _names_task(path: Path) -> bool:
    """Whether `path` holds a part of a task key: the job's name, a room (or a room selector's glob), a
    thumbnail's file id."""
    return (
        path == ("metadata", "name")
        or (path[:2] == ("spec", "rooms") and path[2:3] != ("maxRooms",))
        or (len(path) == 4 and path[:2] == ("spec", "files") and path[3] == "fileId")
    )


def resolve_document(
    doc: RawDocument,
    env: Mapping[str, str],
    errors: ErrorSink,
    *,
    read_secrets: bool = True,
    key: bytes = RUN_KEY,
    files_read: list[str] | None = None,
) -> Any:
    """The document's value with every reference resolved and secret fields as `Secret`s (or, without
    `read_secrets`, secret references checked for shape only and held as `UnreadSecret`s). Fingerprints
    are keyed with `key` (the state's fingerprint key; a per-run key where there is no state). The path of
    each file a `{file: …}` reference reads is appended to `files_read`."""
    resolver = _Resolver(doc, env, errors, read_secrets, key, [] if files_read is None else files_read)
    resolved = resolver.walk(doc.value, ())
    if isinstance(resolved, dict) and isinstance(doc.value, dict):
        kind = resolved.get("kind")
        if isinstance(kind, str):
            resolver.secrets(doc.value, resolved, kind)
    return resolved
