"""packager.errors: the tree drawn in its docstring is the tree in the code, and every class
carries its own report code."""

from __future__ import annotations

import re

from packager import errors

CLASSES = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.ModelSyncError)]


def test_every_class_has_its_own_snake_case_code() -> None:
    codes = [c.__dict__.get("code") for c in CLASSES]
    assert all(isinstance(code, str) and re.fullmatch(r"[a-z][a-z0-9_]*", code) for code in codes), codes
    assert len(set(codes)) == len(CLASSES) == 19


def test_docstring_draws_each_class_under_its_parent_with_its_code() -> None:
    doc = errors.__doc__ or ""
    depth: dict[str, int] = {}
    parents: list[str] = []
    for line in doc.splitlines():
        m = re.match(r"^ {4}([│ ]*(?:[├└]── )?)(\w+Error)\s+(\w+)\s", line + " ")
        if not m:
            continue
        level = len(m.group(1)) // 4
        name, code = m.group(2), m.group(3)
        cls = getattr(errors, name)
        assert cls.__dict__["code"] == code, name
        del parents[level:]
        if parents:
            assert cls.__bases__ == (getattr(errors, parents[-1]),), name
        parents.append(name)
        depth[name] = level
    assert sorted(depth) == sorted(c.__name__ for c in CLASSES)


def test_verification_codes_are_the_ones_devices_report() -> None:
    assert {c.__name__: c.code for c in CLASSES if issubclass(c, errors.VerificationError)} == {
        "VerificationError": "verification",
        "FormatError": "format",
        "PackFormatError": "pack_format",
        "WrongTypeError": "wrong_type",
        "UnknownKeyError": "unknown_key",
        "BadSignatureError": "bad_signature",
        "ThresholdError": "threshold",
        "ExpiredError": "expired",
        "RollbackError": "rollback",
    }


def test_every_class_has_an_exit_code_from_the_table() -> None:
    from packager import exit_codes

    table = {v for k, v in vars(exit_codes).items() if k.isupper()}
    assert all(errors.exit_code_of(c("x")) in table for c in CLASSES)
    assert errors.exit_code_of(errors.ParityError("x")) == exit_codes.VERIFICATION
    assert errors.exit_code_of(errors.UsageError("x")) == exit_codes.USAGE
    assert errors.exit_code_of(ValueError("x")) == exit_codes.INTERNAL
