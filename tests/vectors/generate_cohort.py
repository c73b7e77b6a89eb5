"""Write tests/vectors/cohort.json, the cohort-rule vectors (docs/targeting.md), deterministically.

    .venv/bin/python tests/vectors/generate_cohort.py            # rewrite tests/vectors/cohort.json
    .venv/bin/python tests/vectors/generate_cohort.py --out DIR  # write DIR/cohort.json

Every ``expected`` and ``error`` here is written by hand from the specification, never
computed by packager/cohort.py: the vectors judge both evaluators (tests/packager/
test_cohort.py, react-native-stub/test/cohort.test.ts), so neither may be their source.
Only the sizes of the boundary rules are measured, with rfc8785 itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import rfc8785

HERE = Path(__file__).resolve().parent
NOTICE = (
    "Written by tests/vectors/generate_cohort.py; read by tests/packager/test_cohort.py and "
    "react-native-stub/test/cohort.test.ts. Each valid case: rule_json(parse_rule(rule)) == rule "
    "and matches(rule, attributes) == expected; each invalid case: parse_rule raises a format "
    "error whose message contains `error`."
)

ANDROID = {
    "platform": "android",
    "os_version": "14",
    "app_version": "3.2.0",
    "ort_version": "1.24.3",
    "hardware_class": "pump-v2",
    "site": "plant-7",
    "labels": {"tier": "beta", "zone": "eu-west", "empty": ""},
}
IOS = {
    "platform": "ios",
    "os_version": "17.4.1",
    "app_version": "3.1.9",
    "ort_version": "1.24.3",
    "labels": {},
}


def attr(name: Any, op: str, value: Any) -> dict[str, Any]:
    return {"attr": name, op: value}


def label(key: str, op: str, value: Any = True) -> dict[str, Any]:
    return {"label": key, op: value}


def nots(rule: dict[str, Any], n: int) -> dict[str, Any]:
    for _ in range(n):
        rule = {"not": rule}
    return rule


IS_ANDROID = attr("platform", "eq", "android")


def sized(total: int) -> dict[str, Any]:
    """A rule whose canonical JSON is exactly ``total`` bytes: an `in` of distinct
    128-character strings, two bytes each for é, so that bytes and characters differ."""
    values: list[str] = []
    rule = attr("site", "in", values)
    while len(rfc8785.dumps(rule)) <= total:
        values.append(f"{len(values):03d}" + "é" * 125)
    # trim the last string until the rule fits, then pad with one-byte characters
    while len(rfc8785.dumps(rule)) > total:
        values[-1] = values[-1][:-1]
    values[-1] += "x" * (total - len(rfc8785.dumps(rule)))
    assert len(rfc8785.dumps(rule)) == total and all(len(v) <= 128 for v in values)
    return rule


def wide(nodes: int) -> dict[str, Any]:
    """A rule of exactly ``nodes`` nodes: an any of 4 alls sharing the leaves."""
    leaves = nodes - 1 - 4
    groups = [{"all": [IS_ANDROID] * (leaves // 4 + (1 if g < leaves % 4 else 0))} for g in range(4)]
    return {"any": groups}


def valid() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []

    def add(name: str, rule: dict[str, Any], attributes: Any, expected: bool) -> None:
        cases.append({"name": name, "rule": rule, "attributes": attributes, "expected": expected})

    # strings: exact and case-sensitive
    add("platform eq matches", IS_ANDROID, ANDROID, True)
    add("platform eq other platform", IS_ANDROID, IOS, False)
    add("platform eq is case-sensitive", attr("platform", "eq", "Android"), ANDROID, False)
    add("platform eq does not trim", IS_ANDROID, {"platform": "android "}, False)
    add("platform in matches one", attr("platform", "in", ["ios", "linux"]), IOS, True)
    add("platform in matches none", attr("platform", "in", ["ios", "linux"]), ANDROID, False)
    add("hardware_class eq", attr("hardware_class", "eq", "pump-v2"), ANDROID, True)
    add("site in", attr("site", "in", ["plant-3", "plant-7"]), ANDROID, True)
    add(
        "string attribute compares text, not versions",
        attr("hardware_class", "eq", "14"),
        {"hardware_class": "14.0"},
        False,
    )
    # absent attributes, and not over them
    add("absent platform is false", IS_ANDROID, {}, False)
    add("not over absent platform is true", {"not": IS_ANDROID}, {}, True)
    add("not over a match is false", {"not": IS_ANDROID}, ANDROID, False)
    add("site absent: in is false", attr("site", "in", ["plant-7"]), IOS, False)
    add("app_version absent: lt is false", attr("app_version", "lt", "4"), {"platform": "android"}, False)
    add("app_version absent: not lt is true", {"not": attr("app_version", "lt", "4")}, {}, True)
    # versions: missing components are 0, numbers compare as numbers
    add("version eq 14 matches 14.0", attr("os_version", "eq", "14"), {"os_version": "14.0"}, True)
    add("version eq 14.0 matches 14", attr("os_version", "eq", "14.0"), {"os_version": "14"}, True)
    add("version eq 14 matches 14.0.0.0", attr("os_version", "eq", "14"), {"os_version": "14.0.0.0"}, True)
    add(
        "version eq 14 does not match 14.0.1", attr("os_version", "eq", "14"), {"os_version": "14.0.1"}, False
    )
    add("version eq with leading zeros", attr("os_version", "eq", "14"), {"os_version": "014.00"}, True)
    add("rule version with leading zeros", attr("ort_version", "gte", "01.024"), ANDROID, True)
    add("version gte equal", attr("os_version", "gte", "14"), ANDROID, True)
    add("version gte 14 on 13.9.9", attr("os_version", "gte", "14"), {"os_version": "13.9.9"}, False)
    add("version lt 14 on 13.9.9", attr("os_version", "lt", "14"), {"os_version": "13.9.9"}, True)
    add("version lt 14 on 14.0", attr("os_version", "lt", "14"), {"os_version": "14.0"}, False)
    add("version gte 14.0.1 on 14", attr("os_version", "gte", "14.0.1"), ANDROID, False)
    add(
        "version compares numbers not text: 1.9 < 1.10",
        attr("app_version", "lt", "1.10"),
        {"app_version": "1.9"},
        True,
    )
    add(
        "version compares numbers not text: 1.9 gte 1.10",
        attr("app_version", "gte", "1.10"),
        {"app_version": "1.9"},
        False,
    )
    add("version in matches by value", attr("os_version", "in", ["13", "14"]), {"os_version": "14.0.0"}, True)
    add("version in matches none", attr("os_version", "in", ["13", "15"]), ANDROID, False)
    add(
        "version largest component",
        attr("ort_version", "gte", "999999.999999.999999.999999"),
        {"ort_version": "999999.999999.999999.999999"},
        True,
    )
    ort_range = {"all": [attr("ort_version", "gte", "1.24"), attr("ort_version", "lt", "1.25")]}
    add("range: inside", ort_range, ANDROID, True)
    add("range: upper bound excluded", ort_range, {"ort_version": "1.25"}, False)
    add("range: below", ort_range, {"ort_version": "1.23.99"}, False)
    # device values that are not versions: every comparison false, not makes it true
    for name, value in [
        ("a suffix", "14-beta"),
        ("empty", ""),
        ("five components", "1.2.3.4.5"),
        ("a seven-digit component", "1000000"),
        ("a leading space", " 14"),
        ("a trailing dot", "14."),
        ("a number", 14),
        ("null", None),
        ("non-ASCII digits", "١٤"),
    ]:
        add(f"device version {name}: gte false", attr("os_version", "gte", "0"), {"os_version": value}, False)
    add("device version a suffix: lt false", attr("os_version", "lt", "99"), {"os_version": "14-beta"}, False)
    add(
        "device version a suffix: not gte true",
        {"not": attr("os_version", "gte", "14")},
        {"os_version": "14-beta"},
        True,
    )
    # labels
    add("label eq matches", label("tier", "eq", "beta"), ANDROID, True)
    add("label eq other value", label("tier", "eq", "stable"), ANDROID, False)
    add("label in", label("zone", "in", ["eu-west", "eu-north"]), ANDROID, True)
    add("label exists", label("tier", "exists"), ANDROID, True)
    add("label exists with an empty value", label("empty", "exists"), ANDROID, True)
    add("label eq the empty string", label("empty", "eq", ""), ANDROID, True)
    add("label exists absent", label("tier", "exists"), IOS, False)
    add("not label exists absent", {"not": label("tier", "exists")}, IOS, True)
    add("label with no labels at all", label("tier", "exists"), {"platform": "android"}, False)
    add("label key named like an Object property", label("constructor", "exists"), {"labels": {}}, False)
    add(
        "label key named like an Object property, present",
        label("constructor", "eq", "x"),
        {"labels": {"constructor": "x"}},
        True,
    )
    add("label value non-ASCII", label("owner", "eq", "Jürgen 😀"), {"labels": {"owner": "Jürgen 😀"}}, True)
    add(
        "label value of 128 astral characters",
        label("owner", "eq", "😀" * 128),
        {"labels": {"owner": "😀" * 128}},
        True,
    )
    # malformed device attributes: treated as absent
    add("labels an array", label("tier", "exists"), {"labels": ["tier"]}, False)
    add("labels a string", label("tier", "exists"), {"labels": "tier=beta"}, False)
    add("label value a number: eq false", label("tier", "eq", "1"), {"labels": {"tier": 1}}, False)
    add("label value a number: exists false", label("tier", "exists"), {"labels": {"tier": 1}}, False)
    add(
        "label value null: not exists true",
        {"not": label("tier", "exists")},
        {"labels": {"tier": None}},
        True,
    )
    add("platform a list", attr("platform", "in", ["android"]), {"platform": ["android"]}, False)
    add("platform true", IS_ANDROID, {"platform": True}, False)
    add("attributes null", IS_ANDROID, None, False)
    add("attributes null under not", {"not": IS_ANDROID}, None, True)
    add("attributes an array", label("tier", "exists"), [ANDROID], False)
    add("attributes a string", IS_ANDROID, "android", False)
    add("unknown attributes are ignored", IS_ANDROID, {**ANDROID, "region": "eu", "labels2": {}}, True)
    # all / any
    add(
        "all true",
        {"all": [IS_ANDROID, attr("os_version", "gte", "14"), label("tier", "eq", "beta")]},
        ANDROID,
        True,
    )
    add("all with one false", {"all": [IS_ANDROID, attr("os_version", "gte", "15")]}, ANDROID, False)
    add("any with one true", {"any": [attr("platform", "eq", "ios"), IS_ANDROID]}, ANDROID, True)
    add(
        "any all false",
        {"any": [attr("platform", "eq", "ios"), attr("platform", "eq", "linux")]},
        ANDROID,
        False,
    )
    add("all of one is that rule", {"all": [IS_ANDROID]}, ANDROID, True)
    add("any of one is that rule", {"any": [IS_ANDROID]}, IOS, False)
    per_platform = {
        "any": [
            {"all": [IS_ANDROID, attr("os_version", "gte", "14")]},
            {"all": [attr("platform", "eq", "ios"), attr("os_version", "gte", "17")]},
        ]
    }
    add("per-platform floors: android 14", per_platform, ANDROID, True)
    add("per-platform floors: ios 16.7", per_platform, {**IOS, "os_version": "16.7"}, False)
    add("per-platform floors: ios 17.4.1", per_platform, IOS, True)
    add("not of all (De Morgan)", {"not": {"all": [IS_ANDROID, label("tier", "exists")]}}, IOS, True)
    # the limits, reached and not passed
    add("depth 8: seven nots over a leaf", nots(IS_ANDROID, 7), ANDROID, False)
    add("depth 8: eight levels of all", _deep_all(8), ANDROID, True)
    add("64 nodes", wide(64), ANDROID, True)
    add("16 rules in one all", {"all": [IS_ANDROID] * 16}, ANDROID, True)
    add("64 strings in one in", attr("site", "in", [f"plant-{i}" for i in range(64)]), ANDROID, True)
    add("canonical JSON of exactly 4096 bytes", sized(4096), {"site": "000" + "é" * 125}, True)
    add("a 128-character value", attr("site", "eq", "s" * 128), {"site": "s" * 128}, True)
    return cases


def _deep_all(depth: int) -> dict[str, Any]:
    rule: dict[str, Any] = IS_ANDROID
    for _ in range(depth - 1):
        rule = {"all": [rule]}
    return rule


def invalid() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []

    def add(name: str, rule: Any, error: str) -> None:
        cases.append({"name": name, "rule": rule, "error": error})

    add(
        "unknown attribute, nested",
        {"all": [IS_ANDROID, IS_ANDROID, {"not": attr("region", "eq", "eu")}]},
        "rule.all[2].not: unknown attribute 'region'; known: platform, os_version, app_version, "
        "ort_version, hardware_class, site",
    )
    add("labels is not an attribute", attr("labels", "eq", "x"), "rule: unknown attribute 'labels'")
    add(
        "attr not a string",
        attr(7, "eq", "x"),
        "rule: 'attr' must be a string naming an attribute, got number",
    )
    add(
        "extra key in a comparison",
        {**IS_ANDROID, "note": "x"},
        "rule: unexpected key 'note' in an attr node",
    )
    add(
        "extra key beside all",
        {"all": [IS_ANDROID], "any2": []},
        "rule: unexpected key 'any2' in an all node",
    )
    add("extra key beside not", {"not": IS_ANDROID, "why": "x"}, "rule: unexpected key 'why' in a not node")
    add(
        "extra key in a label node",
        {"label": "tier", "eq": "beta", "attr2": 1},
        "rule: unexpected key 'attr2' in a label node",
    )
    add(
        "two operators in one node",
        {"attr": "os_version", "gte": "14", "lt": "15"},
        "rule: more than one operator ('gte', 'lt'); a node takes exactly one",
    )
    add(
        "two node kinds in one object",
        {"all": [IS_ANDROID], "any": [IS_ANDROID]},
        "rule: more than one node kind ('all', 'any')",
    )
    add(
        "attr and label in one object",
        {"attr": "platform", "label": "tier", "eq": "x"},
        "rule: more than one node kind ('attr', 'label')",
    )
    add(
        "no node kind",
        {"eq": "android"},
        "rule: not a rule node: expected one of the keys all, any, not, attr, label",
    )
    add("empty object", {}, "rule: not a rule node")
    add("no operator", {"attr": "platform"}, "rule: no operator; an attr node takes one of eq, in, gte, lt")
    add(
        "label without operator",
        {"label": "tier"},
        "rule: no operator; a label node takes one of eq, in, exists",
    )
    add(
        "gte on platform",
        attr("platform", "gte", "1"),
        "rule: 'gte' compares versions and 'platform' is not a version attribute",
    )
    add("lt on site", {"any": [attr("site", "lt", "5")]}, "rule.any[0]: 'lt' compares versions and 'site'")
    add("gte on a label", label("tier", "gte", "1"), "rule: 'gte' compares versions; a label node takes")
    add("exists on an attribute", attr("site", "exists", True), "rule: 'exists' is for labels")
    add("exists false", label("tier", "exists", False), "rule: 'exists' must be true, got false")
    add("exists a string", label("tier", "exists", "true"), "rule: 'exists' must be true, got string")
    for name, value in [
        ("a letter", "14.x"),
        ("five components", "1.2.3.4.5"),
        ("seven digits", "1000000"),
        ("a v prefix", "v14"),
        ("a trailing dot", "14."),
        ("a negative number", "-1"),
        ("a plus sign", "+1"),
        ("an inner space", "1. 2"),
        ("non-ASCII digits", "١٤"),
    ]:
        add(
            f"bad version: {name}",
            attr("os_version", "gte", value),
            f"rule: 'gte' value '{value}' is not a version",
        )
    add(
        "bad version in eq",
        attr("app_version", "eq", "3.2.0-rc1"),
        "rule: 'eq' value '3.2.0-rc1' is not a version",
    )
    add(
        "bad version in an in list",
        attr("ort_version", "in", ["1.24", "1.x"]),
        "rule.in[1]: value '1.x' is not a version",
    )
    add("version a number", attr("os_version", "gte", 14), "rule: 'gte' must be a string, got number")
    add(
        "depth 9: eight nots over a leaf",
        nots(IS_ANDROID, 8),
        "rule.not.not.not.not.not.not.not.not: nested deeper than 8 levels",
    )
    add(
        "depth 9: nine levels of all",
        _deep_all(9),
        "rule.all[0].all[0].all[0].all[0].all[0].all[0].all[0].all[0]: nested deeper than 8 levels",
    )
    add("65 nodes", wide(65), "rule.any[3].all[14]: more than 64 nodes in one rule")
    add("empty all", {"all": []}, "rule: 'all' is empty; it takes 1 to 16 rules")
    add("empty any, nested", {"not": {"any": []}}, "rule.not: 'any' is empty")
    add("17 rules in one any", {"any": [IS_ANDROID] * 17}, "rule: 'any' has 17 rules; it takes at most 16")
    add("all not an array", {"all": IS_ANDROID}, "rule: 'all' must be an array of rules, got object")
    add("empty in", attr("platform", "in", []), "rule: 'in' is empty; it takes 1 to 64 strings")
    add(
        "65 strings in one in",
        attr("site", "in", [f"plant-{i}" for i in range(65)]),
        "rule: 'in' has 65 strings; it takes at most 64",
    )
    add(
        "in a string", attr("platform", "in", "android"), "rule: 'in' must be an array of strings, got string"
    )
    add("in with a number", label("tier", "in", ["a", 2]), "rule.in[1]: expected a string, got number")
    add(
        "in with duplicates",
        attr("platform", "in", ["ios", "android", "ios"]),
        "rule.in[2]: value 'ios' duplicates in[0]",
    )
    add(
        "in with the same version twice",
        attr("os_version", "in", ["13", "14", "14.0"]),
        "rule.in[2]: value '14.0' duplicates in[1] '14' as a version",
    )
    add("non-object rule: array", [IS_ANDROID], "rule: expected a rule object, got array")
    add("non-object rule: string", "platform == android", "rule: expected a rule object, got string")
    add("non-object rule: null", None, "rule: expected a rule object, got null")
    add("not over a string", {"not": "x"}, "rule.not: expected a rule object, got string")
    add("all item a number", {"all": [IS_ANDROID, 3]}, "rule.all[1]: expected a rule object, got number")
    add("eq a number", attr("site", "eq", 7), "rule: 'eq' must be a string, got number")
    add("eq null", label("tier", "eq", None), "rule: 'eq' must be a string, got null")
    add("eq the empty string on an attribute", attr("platform", "eq", ""), "rule: 'eq' value is empty")
    add(
        "eq of 129 characters",
        attr("site", "eq", "s" * 129),
        "rule: 'eq' value is 129 characters; at most 128",
    )
    add(
        "label value of 129 astral characters",
        label("owner", "eq", "😀" * 129),
        "rule: 'eq' value is 129 characters; at most 128",
    )
    add("in value too long", attr("site", "in", ["a", "b" * 200]), "rule.in[1]: value is 200 characters")
    add("lone surrogate", attr("site", "eq", "a\ud800"), "rule: 'eq' value is not well-formed Unicode")
    add("label key with capitals", label("Tier", "exists"), "rule: label key 'Tier' does not match")
    add("label key too long", label("k" * 64, "exists"), "does not match ^[a-z0-9][a-z0-9_.-]{0,62}$")
    add("label key starting with a dot", label(".tier", "exists"), "rule: label key '.tier' does not match")
    add("label key a number", {"label": 1, "exists": True}, "rule: 'label' must be a string, got number")
    add(
        "oversize: 4097 bytes of canonical JSON",
        sized(4097),
        "rule: canonical JSON is 4097 bytes, over the 4096-byte limit",
    )
    return cases


def build() -> dict[str, Any]:
    return {"notice": NOTICE, "valid": valid(), "invalid": invalid()}


def dump(value: Any) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # a lone surrogate has no UTF-8 form: the file keeps JSON's \uXXXX escapes
        text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
    return text


def write(out: Path) -> Path:
    path = out / "cohort.json"
    path.write_text(dump(build()), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=HERE, help="directory to write (default: beside this file)"
    )
    args = parser.parse_args(argv)
    print(f"wrote {write(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
