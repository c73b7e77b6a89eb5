"""Errors a new user meets in the first hour (issue 9, item 4): each one line on stderr
saying what to do, with its documented exit code (docs/cli.md), and nothing half-written.
Device registration runs against a real service on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packager import exit_codes
from packager.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("modelsync: error: "), err
    return err


def test_verify_root_given_a_directory(
    small_bundle: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "verify", str(small_bundle), "--root", str(keys_dir))
    assert code == exit_codes.USAGE
    hint = f"(did you mean {keys_dir / 'root.json'}?)"
    assert f"{keys_dir} is a directory, not a JSON file {hint}" in one_line(err)


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("telemetry.csv", b"a,b\n1,2\n", "looks like data, not a model"),
        ("model.onnx", b"\x08\x07", "is already an ONNX/ORT model"),
    ],
)
def test_packaging_a_csv_or_onnx_file(
    tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, says: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    out = tmp_path / "bundle"
    code, _, err = run(capsys, "package", str(path), "--name", "m", "--version", "1",
                       "--key", str(keys_dir / "publisher.key"), "-o", str(out))
    assert code == exit_codes.USAGE and not out.exists()
    line = one_line(err)
    assert says in line and ".joblib" in line and "scikit-learn estimator or pipeline" in line
    if name.endswith(".csv"):
        assert "representative rows go to --calibration telemetry.csv" in line


def test_sklearn_engine_pointed_at_an_onnx_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from device_sim.engine.factories import create_inference_engine
    from packager.errors import UsageError, exit_code_of

    monkeypatch.setenv("ONNX_ENGINE", "sklearn")
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07")
    says = r"ONNX_ENGINE=sklearn loads a scikit-learn model .* not model\.onnx: unset ONNX_ENGINE"
    with pytest.raises(UsageError, match=says) as exc:
        create_inference_engine(model)
    assert exit_code_of(exc.value) == exit_codes.USAGE


@pytest.fixture
def register_args(
    live_server: str, enrollment_token: str, server_keys: Path, tmp_path: Path
) -> list[str]:
    return ["device", "register", "--server", live_server, "--enroll-token", enrollment_token,
            "--platform", "linux", "--root", str(server_keys / "root.json"),
            "--state", str(tmp_path / "dev")]


def test_register_with_an_unknown_channel(
    register_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, *register_args, "--channel", "nightly")
    assert code == exit_codes.NOT_FOUND and not (tmp_path / "dev").exists()
    assert "fleet field has no channel 'nightly'" in one_line(err) and "admin channel list" in err


def test_register_with_another_key_sets_root(
    register_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from packager.keys import init_keys

    other = tmp_path / "other-keys"
    init_keys(other)
    args = [*register_args]
    args[args.index("--root") + 1] = str(other / "root.json")
    code, _, err = run(capsys, *args)
    assert code == exit_codes.VERIFICATION and not (tmp_path / "dev").exists()
    assert "this root.json is not the server's root v1" in one_line(err)


def test_register_again_over_a_state_directory(
    register_args: list[str], live_server: str, publisher_token: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import httpx

    code, out, _ = run(capsys, *register_args, "--json")
    first = json.loads(out)
    assert code == 0 and "token" not in first
    code, _, err = run(capsys, *register_args)
    assert code == exit_codes.CONFLICT
    assert f"already holds device {first['device_id']}" in one_line(err) and "--force" in err
    code, out, _ = run(capsys, *register_args, "--force", "--json")
    second = json.loads(out)
    assert code == 0 and second["device_id"] != first["device_id"]
    auth = {"Authorization": f"Bearer {publisher_token}"}
    with httpx.Client(base_url=live_server, headers=auth) as http:
        retired = {d["device_id"]: d["retired"] for d in http.get("/v1/devices").json()}
    assert retired == {first["device_id"]: True, second["device_id"]: False}


def test_register_with_a_wrong_enrollment_token(
    register_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*register_args]
    args[args.index("--enroll-token") + 1] = "mse_not-a-token"
    code, _, err = run(capsys, *args)
    assert code == exit_codes.UNAUTHORIZED and not (tmp_path / "dev").exists()
    assert "registration refused: HTTP 401" in one_line(err) and "admin token create --enroll" in err

