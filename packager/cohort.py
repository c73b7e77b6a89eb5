"""Cohort rules: which devices a channel-index entry is meant for (docs/targeting.md).

A rule travels inside signed data and is evaluated twice, by the device on its own
attributes and by the service for its statistics, so both must reach the same answer from
the same JSON. That is why the language is a fixed tree of JSON objects rather than an
expression string (nothing to eval, nothing to tokenise), why parsing is strict (a node
the device does not understand must be refused, not half-read) and why evaluation is total
(a device's odd attributes make a comparison false; they never make it throw). The
TypeScript client's core/cohort.ts is the same code; tests/vectors/cohort.json holds both
to it.

Only stdlib and pydantic: packager.manifest will import this to check the rules it signs,
so this module must not import it (or anything heavy) back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import rfc8785
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from packager.errors import FormatError

MAX_DEPTH = 8
MAX_NODES = 64
MAX_RULE_BYTES = 4096
MAX_RULES = 16  # items of one all / any
MAX_VALUES = 64  # strings of one in
MAX_TEXT = 128  # characters (code points) of a compared string
MAX_LABELS = 32

STRING_ATTRIBUTES = ("platform", "hardware_class", "site")
VERSION_ATTRIBUTES = ("os_version", "app_version", "ort_version")
ATTRIBUTES = ("platform", "os_version", "app_version", "ort_version", "hardware_class", "site")
LABEL_KEY = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
LABEL_KEY_TEXT = "^[a-z0-9][a-z0-9_.-]{0,62}$"
# ASCII digits only: Python's \d and str.isdigit take other scripts' digits too, which the
# TypeScript client would not.
_VERSION = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,6}){0,3}")
VERSION_TEXT = "1 to 4 dot-separated numbers of 1 to 6 digits, e.g. 14.2.1"

Version = tuple[int, int, int, int]
AttrOp = Literal["eq", "in", "gte", "lt"]
LabelOp = Literal["eq", "in", "exists"]
_KINDS = ("all", "any", "not", "attr", "label")
_OPS = ("eq", "in", "gte", "lt", "exists")


class CohortRuleError(FormatError):
    """A cohort rule that is not one; the message names the offending node's JSON path.

    It keeps FormatError's ``format`` code: to a device a bad rule is malformed signed data,
    reported like any other (docs/device.md, Error classes)."""


def parse_version(text: object) -> Version | None:
    """The comparison key of a dotted version, missing components 0 ("14" and "14.0" are
    one key), or None for anything that is not a version (including a non-string)."""
    if not isinstance(text, str) or not _VERSION.fullmatch(text):
        return None
    a, b, c, d = (*(int(p) for p in text.split(".")), 0, 0, 0)[:4]
    return (a, b, c, d)


# --------------------------------------------------------------------------- the tree


@dataclass(frozen=True, slots=True)
class AllOf:
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class Not:
    rule: Rule


@dataclass(frozen=True, slots=True)
class AttrMatch:
    attr: str
    op: AttrOp
    values: tuple[str, ...]  # eq, gte, lt: one; in: 1..64, as written
    versions: tuple[Version, ...] | None  # the values' keys on a version attribute, else None


@dataclass(frozen=True, slots=True)
class LabelMatch:
    key: str
    op: LabelOp
    values: tuple[str, ...]  # exists: none


Rule = AllOf | AnyOf | Not | AttrMatch | LabelMatch


# --------------------------------------------------------------------------- parsing


def _type_name(value: object) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else type(value).__name__


def _quote(value: object) -> str:
    """A name or value as a message shows it: one line, at most 40 characters."""
    text = json.dumps(value, ensure_ascii=False)[1:-1] if isinstance(value, str) else str(value)
    # a lone surrogate as \udXXX, as JSON.stringify writes it, so the message can be printed
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return f"'{text[:40]}…'" if len(text) > 40 else f"'{text}'"


def _quoted(names: list[Any]) -> str:
    return ", ".join(_quote(n) for n in names)


def _sorted_keys(keys: Any) -> list[Any]:
    # sorted so a message is the same whatever order the object's keys came in
    return sorted(keys, key=lambda k: (not isinstance(k, str), str(k)))


class _Parser:
    def __init__(self) -> None:
        self.nodes = 0

    def node(self, obj: Any, path: str, depth: int) -> Rule:
        if depth > MAX_DEPTH:
            raise CohortRuleError(f"{path}: nested deeper than {MAX_DEPTH} levels")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise CohortRuleError(f"{path}: more than {MAX_NODES} nodes in one rule")
        if not isinstance(obj, dict):
            raise CohortRuleError(f"{path}: expected a rule object, got {_type_name(obj)}")
        kinds = [k for k in _KINDS if k in obj]
        if not kinds:
            raise CohortRuleError(
                f"{path}: not a rule node: expected one of the keys {', '.join(_KINDS)}"
            )
        if len(kinds) > 1:
            raise CohortRuleError(
                f"{path}: more than one node kind ({_quoted(kinds)}); a node has exactly one"
            )
        kind = kinds[0]
        if kind in ("all", "any", "not"):
            extra = _sorted_keys(k for k in obj if k != kind)
            if extra:
                raise CohortRuleError(f"{path}: unexpected key {_quote(extra[0])} in {_article(kind)} node")
            if kind == "not":
                return Not(self.node(obj["not"], f"{path}.not", depth + 1))
            items = obj[kind]
            if not isinstance(items, list):
                raise CohortRuleError(f"{path}: '{kind}' must be an array of rules, got {_type_name(items)}")
            if not items:
                raise CohortRuleError(f"{path}: '{kind}' is empty; it takes 1 to {MAX_RULES} rules")
            if len(items) > MAX_RULES:
                raise CohortRuleError(
                    f"{path}: '{kind}' has {len(items)} rules; it takes at most {MAX_RULES}"
                )
            rules = tuple(self.node(r, f"{path}.{kind}[{i}]", depth + 1) for i, r in enumerate(items))
            return AllOf(rules) if kind == "all" else AnyOf(rules)
        return _attr(obj, path) if kind == "attr" else _label(obj, path)


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _operator(obj: dict[Any, Any], kind: str, path: str, takes: tuple[str, ...]) -> str:
    extra = _sorted_keys(k for k in obj if k != kind and k not in _OPS)
    if extra:
        raise CohortRuleError(f"{path}: unexpected key {_quote(extra[0])} in {_article(kind)} node")
    ops = [k for k in _OPS if k in obj]
    if not ops:
        raise CohortRuleError(f"{path}: no operator; {_article(kind)} node takes one of {', '.join(takes)}")
    if len(ops) > 1:
        raise CohortRuleError(
            f"{path}: more than one operator ({_quoted(ops)}); a node takes exactly one"
            " (a range is an all of a gte and a lt)"
        )
    return ops[0]


def _attr(obj: dict[Any, Any], path: str) -> AttrMatch:
    name = obj["attr"]
    if not isinstance(name, str):
        raise CohortRuleError(f"{path}: 'attr' must be a string naming an attribute, got {_type_name(name)}")
    if name not in ATTRIBUTES:
        hint = '; a label is matched by {"label": KEY, ...}' if name == "labels" else ""
        raise CohortRuleError(
            f"{path}: unknown attribute {_quote(name)}; known: {', '.join(ATTRIBUTES)}{hint}"
        )
    op = _operator(obj, "attr", path, ("eq", "in", "gte", "lt"))
    if op == "exists":
        raise CohortRuleError(f"{path}: 'exists' is for labels; an attr node takes one of eq, in, gte, lt")
    is_version = name in VERSION_ATTRIBUTES
    if op in ("gte", "lt") and not is_version:
        raise CohortRuleError(
            f"{path}: '{op}' compares versions and {_quote(name)} is not a version attribute"
            f" ({', '.join(VERSION_ATTRIBUTES)})"
        )
    values = _operands(obj, op, path, min_length=1)
    if not is_version:
        return AttrMatch(name, op, values, None)  # type: ignore[arg-type]
    versions: list[Version] = []
    for i, value in enumerate(values):
        where = f"{path}.in[{i}]: value" if op == "in" else f"{path}: '{op}' value"
        key = parse_version(value)
        if key is None:
            raise CohortRuleError(f"{where} {_quote(value)} is not a version ({VERSION_TEXT})")
        if key in versions:
            first = versions.index(key)
            raise CohortRuleError(
                f"{where} {_quote(value)} duplicates in[{first}] {_quote(values[first])} as a version"
            )
        versions.append(key)
    return AttrMatch(name, op, values, tuple(versions))  # type: ignore[arg-type]


def _label(obj: dict[Any, Any], path: str) -> LabelMatch:
    key = obj["label"]
    if not isinstance(key, str):
        raise CohortRuleError(f"{path}: 'label' must be a string, got {_type_name(key)}")
    if not LABEL_KEY.fullmatch(key):
        raise CohortRuleError(f"{path}: label key {_quote(key)} does not match {LABEL_KEY_TEXT}")
    op = _operator(obj, "label", path, ("eq", "in", "exists"))
    if op in ("gte", "lt"):
        raise CohortRuleError(f"{path}: '{op}' compares versions; a label node takes one of eq, in, exists")
    if op == "exists":
        got = obj["exists"]
        if got is not True:
            shown = "false" if got is False else _type_name(got)
            raise CohortRuleError(f"{path}: 'exists' must be true, got {shown}; absence is a not of exists")
        return LabelMatch(key, "exists", ())
    return LabelMatch(key, op, _operands(obj, op, path, min_length=0))  # type: ignore[arg-type]


def _operands(obj: dict[Any, Any], op: str, path: str, min_length: int) -> tuple[str, ...]:
    """The strings an eq / in / gte / lt compares with: each one a device could declare
    (well-formed, min_length..128 characters), an in's distinct, 1 to 64 of them."""
    raw = obj[op]
    if op != "in":
        if not isinstance(raw, str):
            raise CohortRuleError(f"{path}: '{op}' must be a string, got {_type_name(raw)}")
        _text(raw, f"{path}: '{op}' value", min_length)
        return (raw,)
    if not isinstance(raw, list):
        raise CohortRuleError(f"{path}: 'in' must be an array of strings, got {_type_name(raw)}")
    if not raw:
        raise CohortRuleError(f"{path}: 'in' is empty; it takes 1 to {MAX_VALUES} strings")
    if len(raw) > MAX_VALUES:
        raise CohortRuleError(f"{path}: 'in' has {len(raw)} strings; it takes at most {MAX_VALUES}")
    seen: dict[str, int] = {}
    for i, value in enumerate(raw):
        if not isinstance(value, str):
            raise CohortRuleError(f"{path}.in[{i}]: expected a string, got {_type_name(value)}")
        _text(value, f"{path}.in[{i}]: value", min_length)
        if value in seen:
            raise CohortRuleError(f"{path}.in[{i}]: value {_quote(value)} duplicates in[{seen[value]}]")
        seen[value] = i
    return tuple(raw)


def _text(value: str, where: str, min_length: int) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # no UTF-8 form, so no canonical JSON and no signature over it
        raise CohortRuleError(f"{where} is not well-formed Unicode (a lone surrogate)") from None
    if len(value) < min_length:
        raise CohortRuleError(f"{where} is empty")
    if len(value) > MAX_TEXT:
        raise CohortRuleError(f"{where} is {len(value)} characters; at most {MAX_TEXT}")


def parse_rule(obj: Any) -> Rule:
    """The rule a JSON value (as json.loads returns it) spells, or CohortRuleError."""
    rule = _Parser().node(obj, "rule", 1)
    size = len(rfc8785.dumps(rule_json(rule)))
    if size > MAX_RULE_BYTES:
        raise CohortRuleError(f"rule: canonical JSON is {size} bytes, over the {MAX_RULE_BYTES}-byte limit")
    return rule


def rule_json(rule: Rule) -> dict[str, Any]:
    """The rule as JSON, as it is signed: exactly the object it was parsed from (strings as
    written, in's order kept), so rule_json(parse_rule(x)) == x."""
    match rule:
        case AllOf(rules):
            return {"all": [rule_json(r) for r in rules]}
        case AnyOf(rules):
            return {"any": [rule_json(r) for r in rules]}
        case Not(inner):
            return {"not": rule_json(inner)}
        case AttrMatch(attr, op, values, _):
            return {"attr": attr, op: list(values) if op == "in" else values[0]}
        case LabelMatch(key, "exists", _):
            return {"label": key, "exists": True}
        case LabelMatch(key, op, values):
            return {"label": key, op: list(values) if op == "in" else values[0]}
    raise TypeError(f"not a rule: {rule!r}")  # pragma: no cover - the match is exhaustive


# --------------------------------------------------------------------------- evaluation


def matches(rule: Rule, attributes: Mapping[str, Any]) -> bool:
    """Whether a device with these attributes is in the rule's cohort. Total: an absent or
    ill-typed attribute (or attributes that are not a mapping at all) makes each comparison
    on it false, and `not` turns that false into true."""
    return _eval(rule, attributes if isinstance(attributes, Mapping) else {})


def _eval(rule: Rule, attrs: Mapping[Any, Any]) -> bool:
    match rule:
        case AllOf(rules):
            return all(_eval(r, attrs) for r in rules)
        case AnyOf(rules):
            return any(_eval(r, attrs) for r in rules)
        case Not(inner):
            return not _eval(inner, attrs)
        case AttrMatch(attr, op, values, versions):
            value = attrs.get(attr)
            if not isinstance(value, str):
                return False
            if versions is None:
                return value in values
            key = parse_version(value)
            if key is None:
                return False
            if op == "gte":
                return key >= versions[0]
            if op == "lt":
                return key < versions[0]
            return key in versions
        case LabelMatch(key, op, values):
            labels = attrs.get("labels")
            label = labels.get(key) if isinstance(labels, Mapping) else None
            if not isinstance(label, str):
                return False
            return op == "exists" or label in values
    return False  # pragma: no cover - the match is exhaustive


# --------------------------------------------------------------------------- what a device declares


def _well_formed(value: str) -> str:
    value.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError, a ValueError
    return value


def _version_text(value: str) -> str:
    if parse_version(value) is None:
        raise ValueError(f"not a version ({VERSION_TEXT})")
    return value


def _label_key(value: str) -> str:
    if not LABEL_KEY.fullmatch(value):
        raise ValueError(f"label key does not match {LABEL_KEY_TEXT}")
    return value


AttrText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT), AfterValidator(_well_formed)]
VersionText = Annotated[str, AfterValidator(_version_text)]
LabelKey = Annotated[str, AfterValidator(_label_key)]
LabelValue = Annotated[str, StringConstraints(max_length=MAX_TEXT), AfterValidator(_well_formed)]


class DeviceAttributes(BaseModel):
    """The attributes a device declares, as the service takes them at registration.

    Strict and closed: a number where a version belongs, or a misspelt attribute, is refused
    here rather than silently never matching a rule. Evaluate with
    ``matches(rule, attrs.model_dump(exclude_none=True))``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    platform: AttrText | None = None
    os_version: VersionText | None = None
    app_version: VersionText | None = None
    ort_version: VersionText | None = None
    hardware_class: AttrText | None = None
    site: AttrText | None = None
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=MAX_LABELS)
