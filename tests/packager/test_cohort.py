"""Cohort rules (packager/cohort.py, docs/targeting.md): every case of the shared vectors
(tests/vectors/cohort.json, which react-native-stub/test/cohort.test.ts runs too), the
device-attribute model, and properties over random rules and random attributes: the
rewrites that must not change a verdict, and totality."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from packager import errors
from packager.cohort import (
    ATTRIBUTES,
    MAX_DEPTH,
    VERSION_ATTRIBUTES,
    AttrMatch,
    CohortRuleError,
    DeviceAttributes,
    matches,
    parse_rule,
    parse_version,
    rule_json,
)

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "cohort.json").read_text(encoding="utf-8")
)


def test_the_vectors_cover_what_they_promise() -> None:
    assert len(VECTORS["valid"]) >= 40 and len(VECTORS["invalid"]) >= 15
    names = [c["name"] for c in VECTORS["valid"] + VECTORS["invalid"]]
    assert len(names) == len(set(names))
    shapes = json.dumps([c["rule"] for c in VECTORS["valid"]])
    for key in ('"all"', '"any"', '"not"', '"eq"', '"in"', '"gte"', '"lt"', '"exists"', '"label"'):
        assert key in shapes, key
    assert {True, False} == {c["expected"] for c in VECTORS["valid"]}


@pytest.mark.parametrize("case", VECTORS["valid"], ids=[c["name"] for c in VECTORS["valid"]])
def test_valid_vector(case: dict[str, Any]) -> None:
    rule = parse_rule(case["rule"])
    assert rule_json(rule) == case["rule"], "the canonical form is the rule as written"
    assert matches(rule, case["attributes"]) is case["expected"]


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=[c["name"] for c in VECTORS["invalid"]])
def test_invalid_vector(case: dict[str, Any]) -> None:
    with pytest.raises(CohortRuleError) as info:
        parse_rule(case["rule"])
    message = str(info.value)
    assert case["error"] in message
    assert "\n" not in message and message.startswith("rule")


def test_a_bad_rule_is_malformed_signed_data() -> None:
    with pytest.raises(errors.FormatError) as info:
        parse_rule({"attr": "region", "eq": "eu"})
    assert info.value.code == "format"
    assert errors.exit_code_of(info.value) == errors.exit_code_of(errors.FormatError("x"))


def test_messages_stay_on_one_line_whatever_the_input() -> None:
    with pytest.raises(CohortRuleError) as info:
        parse_rule({"attr": "a\nb\ud800" + "x" * 100, "eq": "y"})
    message = str(info.value)
    assert "\n" not in message and "\\n" in message and "\\ud800" in message
    assert message.encode("utf-8") and "…" in message


def test_the_tree_is_immutable() -> None:
    rule = parse_rule({"attr": "platform", "in": ["ios", "android"]})
    assert isinstance(rule, AttrMatch) and rule.values == ("ios", "android")
    with pytest.raises(AttributeError):
        rule.op = "eq"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("14", (14, 0, 0, 0)),
        ("14.0", (14, 0, 0, 0)),
        ("14.2.1", (14, 2, 1, 0)),
        ("1.24.3.7", (1, 24, 3, 7)),
        ("007.000010", (7, 10, 0, 0)),
        ("999999", (999999, 0, 0, 0)),
        ("", None),
        ("14.", None),
        (".14", None),
        ("1..2", None),
        ("1.2.3.4.5", None),
        ("1000000", None),
        ("14\n", None),
        ("١٤", None),
        ("+1", None),
        (" 1", None),
        (14, None),
        (None, None),
        (["14"], None),
    ],
)
def test_parse_version(text: object, key: tuple[int, ...] | None) -> None:
    assert parse_version(text) == key


def test_device_attributes_take_what_a_device_declares() -> None:
    attrs = DeviceAttributes(
        platform="android", os_version="14", ort_version="1.24.3", labels={"tier": "beta", "x.y-z_1": ""}
    )
    rule = parse_rule({"all": [{"attr": "os_version", "eq": "14.0"}, {"label": "tier", "exists": True}]})
    assert matches(rule, attrs.model_dump(exclude_none=True))
    assert DeviceAttributes.model_validate_json('{"site": "plant-7", "labels": {}}').site == "plant-7"


@pytest.mark.parametrize(
    "body",
    [
        {"os_version": 14},
        {"os_version": "14-beta"},
        {"app_version": "1.2.3.4.5"},
        {"platform": ""},
        {"site": "s" * 129},
        {"platform": "a\ud800"},
        {"labels": {"Tier": "x"}},
        {"labels": {"tier": "v" * 129}},
        {"labels": {"tier": 1}},
        {"labels": {f"k{i}": "v" for i in range(33)}},
        {"region": "eu"},
    ],
)
def test_device_attributes_refuse_what_no_rule_could_mean(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        DeviceAttributes.model_validate(body)


def test_device_attributes_allow_the_limits() -> None:
    labels = {f"k{i}": "😀" * 128 for i in range(32)}
    DeviceAttributes(site="s" * 128, labels=labels, os_version="999999.999999.999999.999999")


# --------------------------------------------------------------------------- properties

PLATFORMS = ["android", "ios", "linux"]
VERSIONS = ["13", "13.9.9", "14", "14.0", "14.0.1", "1.24.3", "1.25"]
LABEL_KEYS = ["tier", "zone"]
LABEL_VALUES = ["beta", "", "eu"]

_string_leaf = st.builds(
    lambda name, op, vals: {"attr": name, op: vals[0] if op == "eq" else vals},
    st.sampled_from(["platform", "site", "hardware_class"]),
    st.sampled_from(["eq", "in"]),
    st.lists(st.sampled_from([*PLATFORMS, "plant-7"]), min_size=1, max_size=3, unique=True),
)
_version_leaf = st.builds(
    lambda name, op, v: {"attr": name, op: [v] if op == "in" else v},
    st.sampled_from(VERSION_ATTRIBUTES),
    st.sampled_from(["eq", "in", "gte", "lt"]),
    st.sampled_from(VERSIONS),
)
_label_leaf = st.one_of(
    st.builds(lambda k: {"label": k, "exists": True}, st.sampled_from(LABEL_KEYS)),
    st.builds(lambda k, v: {"label": k, "eq": v}, st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES)),
)
LEAVES = st.one_of(_string_leaf, _version_leaf, _label_leaf)


def rules(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    """Valid rules at most ``depth`` deep; two items a list keep them within 64 nodes."""
    if depth == 1:
        return LEAVES
    sub = rules(depth - 1)
    return st.one_of(
        LEAVES,
        sub.map(lambda r: {"not": r}),
        st.lists(sub, min_size=1, max_size=2).map(lambda rs: {"all": rs}),
        st.lists(sub, min_size=1, max_size=2).map(lambda rs: {"any": rs}),
    )


JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
ATTRIBUTE_VALUES = st.one_of(st.sampled_from([*PLATFORMS, *VERSIONS, "plant-7", "14-beta"]), JUNK)
LABELS = st.one_of(
    st.dictionaries(st.sampled_from(LABEL_KEYS), st.one_of(st.sampled_from(LABEL_VALUES), JUNK), max_size=2),
    JUNK,
)
ATTRS = st.one_of(
    st.dictionaries(st.sampled_from([*ATTRIBUTES, "region"]), ATTRIBUTE_VALUES, max_size=7).flatmap(
        lambda d: st.builds(lambda labels: {**d, "labels": labels}, LABELS) | st.just(d)
    ),
    JUNK,
)


@given(rules(MAX_DEPTH - 2), ATTRS)
def test_not_not_is_the_rule(obj: dict[str, Any], attrs: Any) -> None:
    assert matches(parse_rule({"not": {"not": obj}}), attrs) == matches(parse_rule(obj), attrs)


@given(rules(MAX_DEPTH - 1), ATTRS)
def test_all_or_any_of_one_is_the_rule(obj: dict[str, Any], attrs: Any) -> None:
    want = matches(parse_rule(obj), attrs)
    assert matches(parse_rule({"all": [obj]}), attrs) == want
    assert matches(parse_rule({"any": [obj]}), attrs) == want
    assert matches(parse_rule({"not": obj}), attrs) == (not want)


@given(rules(MAX_DEPTH - 2), rules(MAX_DEPTH - 2), ATTRS)
def test_de_morgan(a: dict[str, Any], b: dict[str, Any], attrs: Any) -> None:
    left = parse_rule({"not": {"all": [a, b]}})
    right = parse_rule({"any": [{"not": a}, {"not": b}]})
    assert matches(left, attrs) == matches(right, attrs)


@given(rules(MAX_DEPTH), ATTRS)
def test_evaluation_is_total_and_parsing_the_identity(obj: dict[str, Any], attrs: Any) -> None:
    rule = parse_rule(obj)
    assert rule_json(rule) == obj
    assert parse_rule(rule_json(rule)) == rule
    assert matches(rule, attrs) in (True, False)


@given(st.sampled_from(VERSION_ATTRIBUTES), st.sampled_from(VERSIONS), ATTRIBUTE_VALUES)
def test_gte_and_lt_split_the_versions(name: str, bound: str, value: Any) -> None:
    """Exactly one of gte and lt holds for a device version; neither for anything else."""
    attrs = {name: value}
    gte = matches(parse_rule({"attr": name, "gte": bound}), attrs)
    lt = matches(parse_rule({"attr": name, "lt": bound}), attrs)
    assert (gte != lt) if parse_version(value) is not None else not (gte or lt)


@given(st.lists(st.integers(0, 999999), min_size=1, max_size=3))
def test_a_trailing_zero_changes_no_version(parts: list[int]) -> None:
    text = ".".join(map(str, parts))
    assert parse_version(text) == parse_version(text + ".0")


# a valid rule with one key added or replaced by junk: mostly near misses of a rule
NEAR_MISSES = st.builds(
    lambda r, k, v: {**r, k: v},
    rules(3),
    st.sampled_from(["all", "any", "not", "attr", "label", "eq", "in", "gte", "lt", "exists", "x"]),
    JUNK | LEAVES | st.lists(LEAVES, max_size=2),
)


@settings(max_examples=300)
@given(JUNK | NEAR_MISSES)
def test_parsing_anything_either_gives_a_rule_or_says_why(obj: Any) -> None:
    try:
        rule = parse_rule(obj)
    except CohortRuleError as exc:
        assert str(exc).startswith("rule") and "\n" not in str(exc)
    else:
        assert rule_json(rule) == obj
