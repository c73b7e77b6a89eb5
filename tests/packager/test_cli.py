"""`modelsync package | verify | inspect`: bad input through ``main`` (one line, exit 2, no
bundle and no temporary directory left), then the whole flow as a user runs it: the
console script in subprocesses on a fresh directory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import pytest

from packager.cli import main
from packager.keys import init_keys, load_root
from packager.telemetry import FEATURES, generate_telemetry
from packager.verify import verify_bundle

ROWS = 2000
TREES = 25


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.joblib (a detector), cal.csv (with header), cal.npy, bad files, keys/, enc-keys/."""
    from packager.detectors import IsolationForestDetector

    d = tmp_path_factory.mktemp("inputs")
    data = generate_telemetry(ROWS, seed=7)
    model = IsolationForestDetector(n_estimators=TREES, random_state=7).fit(data.frame)
    joblib.dump(model, d / "model.joblib")
    data.frame.to_csv(d / "cal.csv", index=False)
    np.save(d / "cal.npy", data.frame.to_numpy())
    with_nan = data.frame.to_numpy().copy()
    with_nan[5, 3] = np.nan
    np.savetxt(d / "nan.csv", with_nan, delimiter=",")
    with_nan_header = data.frame.copy()
    with_nan_header.iloc[2, 1] = np.nan
    with_nan_header.to_csv(d / "nan-header.csv", index=False)
    with_inf = data.frame.to_numpy().copy()
    with_inf[9, 0] = np.inf
    np.save(d / "inf.npy", with_inf)
    np.save(d / "narrow.npy", data.frame.to_numpy()[:, :5])
    (d / "corrupt.joblib").write_bytes(b"\x80\x04 definitely not a pickle")
    joblib.dump({"not": "a model"}, d / "dict.joblib")
    init_keys(d / "keys")
    init_keys(d / "enc-keys", passphrase=b"s3cret")
    return d


def _package(
    inputs: Path, out: Path, *extra: str, model: str = "model.joblib", key: str = "keys"
) -> list[str]:
    args = ["package", str(inputs / model), "--name", "fleet-iforest", "--version", "1", "-o", str(out)]
    if not any(a == "--key" for a in extra):
        args += ["--key", str(inputs / key / "publisher.key")]
    return args + list(extra)


BAD_INPUT = [
    ("missing model", dict(model="nope.joblib"), (), "nope.joblib"),
    ("corrupt model", dict(model="corrupt.joblib"), (), "corrupt.joblib"),
    ("unsupported estimator", dict(model="dict.joblib"), (), "dict"),
    ("calibration columns", {}, ("--calibration", "{d}/narrow.npy"), "5 column(s), the model takes 12"),
    ("features count", {}, ("--features", "a,b,c"), "--features names 3 feature(s), the model takes 12"),
    ("nan in calibration", {}, ("--calibration", "{d}/nan.csv"),
     "nan.csv: row 6, column 4 ('cpu_util_pct') is nan"),
    ("inf in calibration", {}, ("--calibration", "{d}/inf.npy"),
     "inf.npy: row 10, column 1 ('battery_level') is inf"),
    ("nan in header csv", {}, ("--calibration", "{d}/nan-header.csv"),
     "nan-header.csv: row 3, column 2 ('battery_temp_c') is nan"),
    ("missing calibration", {}, ("--calibration", "{d}/none.csv"), "calibration file not found"),
    ("wrong key", {}, ("--key", "{d}/keys/index.key"), "is not a publisher key of root v1"),
    ("foreign root", {}, ("--root", "{d}/enc-keys/root.json"), "is not a publisher key of root v1"),
    ("encrypted key", dict(key="enc-keys"), (), "is encrypted"),
    ("bad name", {}, ("--name", "Fleet Model"), "model name"),
    ("bad version", {}, ("--version", "0"), "--version must be >= 1"),
]


@pytest.mark.parametrize(("what", "kw", "extra", "message"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_is_one_line_and_leaves_nothing(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    what: str, kw: dict[str, str], extra: tuple[str, ...], message: str,
) -> None:
    monkeypatch.delenv("MODELSYNC_KEY_PASSPHRASE", raising=False)
    out = tmp_path / "out" / "bundle"
    args = _package(inputs, out, *(e.format(d=inputs) for e in extra), **kw)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("modelsync: error:") and err.count("\n") == 1, err
    assert message in err
    assert not out.exists()
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_wrong_passphrase(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PASS", "wrong")
    assert main(_package(inputs, tmp_path / "b", "--passphrase-env", "PASS", key="enc-keys")) == 2
    assert "wrong passphrase" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_unwritable_output(inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The tests may run as root, which ignores permission bits: a path under a file is
    # unwritable for everyone.
    (tmp_path / "file").write_text("x")
    assert main(_package(inputs, tmp_path / "file" / "bundle")) == 2
    assert "cannot write bundle to" in capsys.readouterr().err


def test_non_empty_output_needs_force(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("mine")
    assert main(_package(inputs, tmp_path / "b")) == 2
    assert "is not empty: refusing to overwrite (use --force)" in capsys.readouterr().err
    assert (tmp_path / "b" / "keep.txt").read_text() == "mine"


def test_verify_and_inspect_need_a_bundle(
    tmp_path: Path, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(tmp_path), "--root", str(inputs / "keys" / "root.json")]) == 3
    assert "no manifest.json" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["verify", str(tmp_path), "--root", str(tmp_path / "root.json")]) == 2
    assert "file not found" in capsys.readouterr().err


def _modelsync() -> str:
    script = Path(sys.executable).parent / "modelsync"
    return str(script) if script.exists() else shutil.which("modelsync") or "modelsync"


@pytest.mark.slow
def test_end_to_end_console_script_on_fresh_directory(tmp_path: Path, inputs: Path) -> None:
    """A plain scikit-learn IsolationForest (the generic path), passphrase-protected keys,
    CSV calibration with a header; package, verify, inspect; then tamper and re-verify."""
    from sklearn.ensemble import IsolationForest

    data = generate_telemetry(ROWS, seed=11)
    forest = IsolationForest(n_estimators=TREES, random_state=0).fit(data.frame.to_numpy())
    joblib.dump(forest, tmp_path / "if.pkl")
    shutil.copy(inputs / "cal.csv", tmp_path / "cal.csv")
    env = {**os.environ, "PASS": "hunter2"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_modelsync(), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
        )

    assert run("keys", "init", "keys", "--passphrase-env", "PASS").returncode == 0
    packaged = run(
        "package", "if.pkl", "--name", "plain-iforest", "--version", "3",
        "--target", "android-nnapi", "--target", "ios-coreml", "--target", "cpu",
        "--key", "keys/publisher.key", "--passphrase-env", "PASS",
        "--calibration", "cal.csv", "--features", ",".join(FEATURES), "-o", "out",
    )
    assert packaged.returncode == 0, packaged.stderr
    assert "wrote bundle out" in packaged.stdout
    assert len(list((tmp_path / "out").glob("*.ort"))) >= 1

    verified = run("verify", "out", "--root", "keys/root.json")
    assert verified.returncode == 0, verified.stderr
    assert "OK: plain-iforest v3, 3 artifact(s)" in verified.stdout

    inspected = run("inspect", "out")
    assert inspected.returncode == 0, inspected.stderr
    for text in ("plain-iforest v3", "android-nnapi", "ios-coreml", "cpu", "battery_temp_c", "spearman"):
        assert text in inspected.stdout

    ort = next((tmp_path / "out").glob("*.ort"))
    flipped = bytearray(ort.read_bytes())
    flipped[-1] ^= 0xFF
    ort.write_bytes(bytes(flipped))
    tampered = run("verify", "out", "--root", "keys/root.json")
    assert tampered.returncode == 3  # VERIFICATION
    assert tampered.stderr.strip().startswith("modelsync: error:") and ort.name in tampered.stderr


@pytest.mark.slow
def test_ctrl_c_while_writing_leaves_no_bundle(tmp_path: Path, inputs: Path) -> None:
    """SIGINT to the real console script once its temporary bundle directory exists.

    Seeing the directory and sending the signal are two steps: on a loaded machine the
    package may finish in between, and the late signal meets a process on its way out
    (exit 0, a whole bundle). Every try must leave no litter and either no bundle or a
    whole one; the signal has to land mid-write in one of a few tries."""
    from packager.detectors import IsolationForestDetector

    data = generate_telemetry(ROWS, seed=3)
    # big enough that the bundle takes a while to write (its reference pickle, three ORT
    # files): with 40 trees the staging directory came and went between two polls
    model = IsolationForestDetector(n_estimators=600, random_state=3).fit(data.frame)
    joblib.dump(model, tmp_path / "m.joblib")
    np.save(tmp_path / "cal.npy", data.frame.to_numpy())
    interrupted = 0
    outcomes: list[int] = []
    for attempt in range(5):
        work = tmp_path / f"try{attempt}"
        work.mkdir()
        out = work / "out"
        # A suite started in the background by a shell without job control inherits SIGINT
        # ignored, and so would the child (Python then installs no KeyboardInterrupt handler):
        # a handler of ours for the instant of the spawn makes the exec reset it to the
        # default a terminal gives a foreground command, and still ignores it here.
        previous = signal.signal(signal.SIGINT, lambda *_: None)
        try:
            proc = subprocess.Popen(
                [_modelsync(), "package", str(tmp_path / "m.joblib"), "--name", "m", "--version", "1",
                 "--key", str(inputs / "keys" / "publisher.key"),
                 "--calibration", str(tmp_path / "cal.npy"), "-o", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
        finally:
            signal.signal(signal.SIGINT, previous)
        try:
            deadline = time.monotonic() + 120
            while not list(work.glob(".out.partial-*")) and proc.poll() is None:
                assert time.monotonic() < deadline, "the temporary bundle directory never appeared"
                time.sleep(0.005)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode in (0, 130), err
        outcomes.append(proc.returncode)
        assert list(work.glob(".out*")) == []
        if out.exists():  # finished, or the signal landed during the final renames, which finish first
            verify_bundle(out, load_root(inputs / "keys" / "root.json"))
        if proc.returncode == 130:
            assert "interrupted" in err
            interrupted += 1
            break
    assert interrupted, f"no SIGINT landed while the bundle was being written in 5 tries: exits {outcomes}"


def test_verify_skip_golden_checks_files_only(
    small_bundle: Path, keys_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = Path(shutil.copytree(small_bundle, tmp_path / "b"))
    root = str(keys_dir / "root.json")
    assert main(["verify", str(bundle), "--root", root, "--skip-golden"]) == 0
    out = capsys.readouterr().out
    assert "signatures and files check out" in out and "golden max" not in out
    assert main(["verify", str(bundle), "--root", root]) == 0
    assert "golden max |Δscore|" in capsys.readouterr().out
    assert main(["inspect", str(bundle)]) == 0
    assert "golden atol" in capsys.readouterr().out


def test_calibration_files(tmp_path: Path) -> None:
    from packager.errors import UsageError
    from packager.package import load_calibration

    (tmp_path / "header.csv").write_text("x,y,z\n1,2,3\n4,5,6\n")
    assert load_calibration(tmp_path / "header.csv").tolist() == [[1, 2, 3], [4, 5, 6]]
    assert load_calibration(tmp_path / "header.csv", ["z", "x"]).tolist() == [[3, 1], [6, 4]]
    assert load_calibration(tmp_path / "header.csv", ["q"]).shape == (2, 3)  # the model's own names
    with pytest.raises(UsageError, match=r"no column 'q' in the header \(x, y, z\)"):
        load_calibration(tmp_path / "header.csv", ["q"], required=True)
    (tmp_path / "plain.csv").write_text("1,,3\n4,5,6\n")  # an empty first cell is not a header
    with pytest.raises(UsageError, match=r"plain.csv: row 1, column 2 is nan \(1 non-finite"):
        load_calibration(tmp_path / "plain.csv")  # row 1: the first line is data
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UsageError, match="cannot read calibration data"):
        load_calibration(tmp_path / "empty.csv")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(UsageError, match="cannot read calibration data"):
        load_calibration(tmp_path / "objects.npy")
    np.save(tmp_path / "flat.npy", np.zeros(3))
    with pytest.raises(UsageError, match="non-empty table"):
        load_calibration(tmp_path / "flat.npy")


def test_expected_anomaly_band_is_signed_in_the_profile(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    assert main(_package(inputs, tmp_path / "b", "--expected-anomaly-band", "0.01,0.2")) == 0
    signed = json.loads((tmp_path / "b" / "manifest.json").read_text())["signed"]
    assert signed["behaviour"]["expected_band"] == [0.01, 0.2]
    assert len(signed["behaviour"]["score_edges"]) == 9
    for bad in ("0.3,0.1", "x", "0.1,1.5"):
        with pytest.raises(SystemExit):
            main(_package(inputs, tmp_path / "c", "--expected-anomaly-band", bad))
        assert "--expected-anomaly-band" in capsys.readouterr().err
