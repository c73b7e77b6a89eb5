"""``from modelsync import ...``: publish, release, promote, status and the listings as
Python calls against a real server on loopback; and examples/mlflow_publish.py publishing
the newest version of a model registered in MLflow's local store."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import modelsync
from packager import exit_codes
from tests.sync_service.fleet_helpers import register

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def where(live_server: str, publisher_token: str) -> dict[str, str]:
    return {"server": live_server, "token": publisher_token}


def test_publish_release_status_and_listings(
    where: dict[str, str], fleet: str, client: TestClient, enrollment_token: str,
    bundle_factory: Callable[..., Path],
) -> None:
    bundle = bundle_factory(version=1)
    first = modelsync.publish(bundle, **where)
    assert (first.name, first.version, first.created) == ("demo", 1, True)
    assert modelsync.publish(bundle, **where).created is False  # the same manifest again
    created = modelsync.release(fleet=fleet, model="demo", version=1, percent=25, **where)
    assert (created.fleet, created.channel, created.percent) == ("field", "stable", 25)
    assert created.state == "active"
    raised = modelsync.set_percent(100, fleet=fleet, **where)
    assert raised.id == created.id and raised.percent == 100
    assert modelsync.halt("bad reports", fleet=fleet, **where).state == "halted"
    assert modelsync.resume(fleet=fleet, **where).state == "active"
    register(client, enrollment_token, "dev-api-1")
    st = modelsync.status(fleet=fleet, **where)
    assert st.release.id == created.id and st.devices_registered == 1 and st.devices_in_rollout == 1
    assert modelsync.list_models(**where) == [modelsync.ModelSummary("demo", [1], 1)]
    assert [d.device_id for d in modelsync.list_devices(fleet=fleet, **where)] == ["dev-api-1"]
    with pytest.raises(modelsync.ApiError) as refused:
        modelsync.release(fleet=fleet, model="demo", version=9, percent=5, **where)
    assert refused.value.status == 404 and refused.value.exit_code == exit_codes.NOT_FOUND
    with pytest.raises(modelsync.NotFoundError, match="no channel 'beta'"):
        modelsync.promote(fleet=fleet, source="stable", dest="beta", **where)


def _load_example(name: str) -> object:
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")  # MLflow's own deprecation and pickle-safety warnings
def test_mlflow_example_publishes_the_latest_registered_version(
    where: dict[str, str], fleet: str, keys_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow")
    import mlflow
    import mlflow.sklearn
    from sklearn.ensemble import IsolationForest

    from packager.telemetry import generate_telemetry

    # MLflow 3 keeps its file store only on request; it is the store a laptop has.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    mlflow.set_tracking_uri(uri)
    data = generate_telemetry(1500, seed=3)
    for seed in (1, 2):  # two registered versions: the example must take the second
        forest = IsolationForest(n_estimators=15, random_state=seed).fit(data.frame)
        with mlflow.start_run():
            mlflow.sklearn.log_model(forest, name="model", registered_model_name="Detector",
                                     serialization_format="pickle")
    calibration = tmp_path / "rows.csv"
    data.frame.to_csv(calibration, index=False)
    example = _load_example("mlflow_publish")
    published, released = example.publish_latest(  # type: ignore[attr-defined]
        tracking_uri=uri, registered_name="Detector", keys_dir=keys_dir, calibration=calibration,
        fleet=fleet, percent=10, **where,
    )
    assert (published.name, published.version) == ("detector", 2)
    assert released is not None and (released.version, released.percent) == (2, 10)
    assert modelsync.list_models(**where) == [modelsync.ModelSummary("detector", [2], 2)]
