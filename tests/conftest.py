"""Session-wide fixtures shared by every package's tests.

``keys_dir``      a directory written by ``modelsync keys init`` (one key per role,
                  thresholds 1, no passphrase): root.key/.pub, publisher.key/.pub,
                  index.key/.pub, root.json, roots/1.root.json. Shared: never rotate or
                  edit it in place — copy it (``shutil.copytree``) first.
``make_bundle``   ``make_bundle(version=1, *, name="fleet-iforest", seed=None,
                  targets=("android-nnapi", "ios-coreml", "cpu")) -> Path``: a real bundle
                  of a small IsolationForestDetector (25 trees, 2,000 telemetry rows,
                  trained with ``random_state=seed``, default ``version``, so each version
                  has different artifacts), signed by ``keys_dir``'s publisher key.
                  Cached per arguments for the session: treat the directory as read-only
                  (copy it before tampering).
``small_bundle``  ``make_bundle(1)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from packager.manifest import TARGETS

SMALL_TREES = 25
SMALL_ROWS = 2000

MakeBundle = Callable[..., Path]


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from packager.keys import init_keys

    directory = tmp_path_factory.mktemp("keys")
    init_keys(directory)
    return directory


@pytest.fixture(scope="session")
def make_bundle(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> MakeBundle:
    from packager.detectors import IsolationForestDetector
    from packager.keys import load_private_key, load_root
    from packager.package import build_and_write
    from packager.telemetry import generate_telemetry

    cache: dict[tuple[str, int, int, tuple[str, ...]], Path] = {}
    root = load_root(keys_dir / "root.json")
    key = load_private_key(keys_dir / "publisher.key")

    def make(
        version: int = 1,
        *,
        name: str = "fleet-iforest",
        seed: int | None = None,
        targets: Sequence[str] = TARGETS,
    ) -> Path:
        seed = version if seed is None else seed
        k = (name, version, seed, tuple(targets))
        if k not in cache:
            data = generate_telemetry(SMALL_ROWS, seed=seed)
            model = IsolationForestDetector(n_estimators=SMALL_TREES, random_state=seed).fit(data.frame)
            out = tmp_path_factory.mktemp(f"bundle-{name}-v{version}") / "bundle"
            cache[k] = build_and_write(
                model, name=name, version=version, targets=targets, keys=[key], root=root,
                out_dir=out, calibration=data.frame.to_numpy(),
            )
        return cache[k]

    return make


@pytest.fixture(scope="session")
def small_bundle(make_bundle: MakeBundle) -> Path:
    return make_bundle(1)


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A test that runs `serve` in-process (main(["serve", ...]) refusing at start-up) leaves
    the service's JSON handler on the root logger, writing to that test's captured stderr;
    once pytest closes it, every later log record in the worker (a live server's access
    log) prints "--- Logging error ---" into whatever the next test captures."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
