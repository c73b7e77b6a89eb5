"""One field device: enrollment, its state directory, its updater, and inference on what it installed.

    device = Device.register(state, server=URL, enroll_token=T, platform="linux", root_envelope=root)
    result = device.sync()                 # root walk, index, verified installs, reports
    prediction = device.predict(rows)      # the installed model (previous one if it will not load)

``sync`` runs the async updater on its own event loop; a fleet in one process calls
``async_sync`` instead. What the model did is queued as one ``behaviour`` report per model
version at the next sync, not per call (device_sim/behaviour.py).
"""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from device_sim import trust
from device_sim.behaviour import BandCheck, Window
from device_sim.errors import DownloadError, NoModelError
from device_sim.golden import available_providers, runtime_version
from device_sim.pack_install import PackResult, install_pack
from device_sim.shadow import ShadowRunner
from device_sim.store import Identity, Installed, Store
from device_sim.transfer import Progress, SyncConfig, detail, make_client
from device_sim.updater import SyncResult, Updater
from packager import exit_codes
from packager.errors import ConflictError, NotFoundError, UsageError, VerificationError
from packager.manifest import ModelManifest, format_time, utcnow


async def register(
    client: httpx.AsyncClient,
    state: Path,
    *,
    enroll_token: str,
    platform: str,
    root_envelope: dict[str, Any],
    device_id: str | None = None,
    channel: str = "stable",
    app_version: str = "0.1.0",
    ort_version: str | None = None,
    strict: bool = False,
    force: bool = False,
) -> Store:
    """Enroll with the server and write the state directory (identity + shipped root).

    ``strict`` (the CLI's registration) refuses what would otherwise fail at the first
    sync: a state directory that already holds a device (unless ``force``, which retires
    that device on the server and starts the directory afresh), a root.json that is not
    the server's, a channel the fleet does not have."""
    if platform not in trust.PLATFORM_TARGETS:
        raise UsageError(f"platform must be one of {', '.join(trust.PLATFORM_TARGETS)}, not {platform!r}")
    trust.trusted_root(root_envelope)  # check 1.1, before anything is written
    path = Path(state)
    if strict:
        await _same_root_as_server(client, root_envelope)
        if (path / "device.json").is_file():
            old = Store.open(path).identity
            if not force:
                raise ConflictError(
                    f"{path} already holds device {old.device_id} (fleet {old.fleet}, {old.server}): "
                    "give another --state, or --force to retire that device and register afresh"
                )
            await _retire(client, old.device_id, old.token)
            shutil.rmtree(path)
    device_id = device_id or f"dev-{uuid.uuid4().hex[:12]}"
    ort_version = ort_version or runtime_version()
    providers = available_providers()
    body = {"device_id": device_id, "platform": platform, "app_version": app_version,
            "ort_version": ort_version, "providers": providers}
    try:
        resp = await client.post("/v1/devices/register", json=body,
                                 headers={"Authorization": f"Bearer {enroll_token}"})
    except httpx.HTTPError as exc:
        raise DownloadError(f"cannot reach {client.base_url}: {exc}") from None
    if resp.status_code != 201:
        refused = DownloadError(f"registration refused: HTTP {resp.status_code}{detail(resp)}")
        if resp.status_code in (401, 403):  # the token, not the network: say which and end so
            refused = DownloadError(f"{refused} (is --enroll-token a fleet enrollment token? "
                                    "`modelsync admin token create --enroll --fleet FLEET` makes one)")
            refused.exit_code = exit_codes.UNAUTHORIZED
        raise refused
    answer = resp.json()
    if strict:
        await _fleet_has_channel(client, answer, channel)
    identity = Identity(
        device_id=answer.get("device_id", device_id), server=str(client.base_url).rstrip("/"),
        platform=platform, target=trust.PLATFORM_TARGETS[platform], fleet=answer["fleet"],
        channel=channel, token=answer["device_token"], app_version=app_version, ort_version=ort_version,
        providers=providers,
    )
    if (path / "device.json").is_file():  # re-registering keeps installed models and reports
        store = Store.open(path)
        store.save_identity(identity)
        return store
    return Store.create(path, identity, root_envelope)


async def _same_root_as_server(client: httpx.AsyncClient, root_envelope: dict[str, Any]) -> None:
    """The shipped root must be one the server's chain holds: a device given another set of
    keys' root.json would refuse every index it is served."""
    version = root_envelope.get("signed", {}).get("version")
    try:
        resp = await client.get(f"/v1/root/{version}.json")
    except httpx.HTTPError as exc:
        raise DownloadError(f"cannot reach {client.base_url}: {exc}") from None
    if resp.status_code == 404:
        raise VerificationError(
            f"the server has no root v{version}: this root.json is newer than the server's keys, "
            "or from another key set; give the root.json of the keys `modelsync serve --root` uses"
        )
    if resp.status_code != 200:
        raise DownloadError(f"GET /v1/root/{version}.json: HTTP {resp.status_code}{detail(resp)}")
    try:
        served = json.loads(resp.content)
    except ValueError:
        raise DownloadError(f"GET /v1/root/{version}.json: not JSON") from None
    if served != root_envelope:
        raise VerificationError(
            f"this root.json is not the server's root v{version} (another key set?): the device would "
            "refuse every index; give the root.json of the keys `modelsync serve --root` uses"
        )


async def _fleet_has_channel(client: httpx.AsyncClient, answer: dict[str, Any], channel: str) -> None:
    headers = {"Authorization": f"Bearer {answer['device_token']}"}
    try:
        resp = await client.get(f"/v1/channels/{channel}/index", headers=headers)
    except httpx.HTTPError as exc:
        raise DownloadError(f"cannot reach {client.base_url}: {exc}") from None
    if resp.status_code == 404:
        await _retire(client, answer["device_id"], answer["device_token"])
        raise NotFoundError(
            f"fleet {answer['fleet']} has no channel {channel!r}: give --channel one of its channels "
            "(`modelsync admin channel list --fleet FLEET`), or create it first"
        )


async def _retire(client: httpx.AsyncClient, device_id: str, token: str) -> None:
    """Best effort: a device whose token is already revoked is retired already."""
    try:
        await client.post(f"/v1/devices/{device_id}/retire", headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        raise DownloadError(f"cannot reach {client.base_url} to retire {device_id}: {exc}") from None


@dataclass
class ModelStatus:
    name: str
    current: int
    previous: int | None
    serving: int | None
    target: str
    installed_at: str


@dataclass
class DeviceStatus:
    device_id: str
    fleet: str
    channel: str
    platform: str
    target: str
    server: str
    ort_version: str
    root_version: int
    index_version: int | None
    models: list[ModelStatus] = field(default_factory=list)
    pack_index_version: int | None = None  # the last offline pack's index (check P.2.3)
    queued_reports: int = 0
    refused_reports: int = 0  # events the service refused (422/413), dropped from the queue
    failed: dict[str, list[int]] = field(default_factory=dict)


class Device:
    def __init__(
        self,
        state_dir: str | Path,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        config: SyncConfig | None = None,
        runtime: str | None = None,
        now: Any = utcnow,
        progress: Progress | None = None,
        band_check_rows: int = 1000,
    ) -> None:
        self.store = Store.open(Path(state_dir))
        # a new version's first rows against its manifest's expected band; 0: never checked
        self.band_check_rows = band_check_rows
        self._band: dict[tuple[str, int], BandCheck] = {}
        self.transport = transport
        self.config = config or SyncConfig()
        self.runtime = runtime
        self.now = now
        self.progress = progress
        self._engines: dict[str, Any] = {}
        self._stats: dict[tuple[str, int], Window] = {}
        self.shadow = ShadowRunner(self.store, now)  # held shadow candidates (docs/behaviour.md)

    @classmethod
    async def async_register(
        cls,
        state_dir: str | Path,
        *,
        server: str,
        enroll_token: str,
        platform: str,
        root_envelope: dict[str, Any],
        device_id: str | None = None,
        channel: str = "stable",
        transport: httpx.AsyncBaseTransport | None = None,
        config: SyncConfig | None = None,
        ort_version: str | None = None,
        client: httpx.AsyncClient | None = None,
        strict: bool = False,
        force: bool = False,
    ) -> Device:
        """Enroll with the server (checking the shipped root, check 1.1) and open the state;
        ``strict`` and ``force`` as for ``register``."""
        cfg = config or SyncConfig()
        kwargs: dict[str, Any] = {"enroll_token": enroll_token, "platform": platform,
                                  "root_envelope": root_envelope, "device_id": device_id,
                                  "channel": channel, "ort_version": ort_version,
                                  "strict": strict, "force": force}
        if client is not None:
            await register(client, Path(state_dir), **kwargs)
        else:
            async with make_client(server, cfg, transport) as own:
                await register(own, Path(state_dir), **kwargs)
        return cls(state_dir, transport=transport, config=cfg)

    @classmethod
    def register(cls, state_dir: str | Path, **kwargs: Any) -> Device:
        """``async_register`` on its own event loop (same keyword arguments)."""
        return asyncio.run(cls.async_register(state_dir, **kwargs))

    # ------------------------------------------------------------------ sync

    def updater(self, client: httpx.AsyncClient) -> Updater:
        server, transport = self.store.identity.server, self.transport
        kwargs: dict[str, Any] = {"config": self.config, "runtime": self.runtime, "now": self.now,
                                  "progress": self.progress,
                                  "fresh_client": lambda: make_client(server, self.config, transport)}
        return Updater(self.store, client, **kwargs)

    async def async_sync(self, client: httpx.AsyncClient | None = None) -> SyncResult:
        self.queue_stats()
        if client is not None:
            result = await self.updater(client).sync_once()
        else:
            async with make_client(self.store.identity.server, self.config, self.transport) as own:
                result = await self.updater(own).sync_once()
        self.shadow.settle()
        return result

    def install_pack(self, path: str | Path) -> PackResult:
        """Install from an offline pack (device_sim/pack_install.py): the sync's checks on
        the pack's bytes; reports wait in the queue for the next online sync."""
        result = install_pack(self.store, path, now=self.now, runtime=self.runtime)
        if result.installed:
            self._engines.clear()
        return result

    def sync(self) -> SyncResult:
        result = asyncio.run(self.async_sync())
        self._engines.clear()  # a new model may be installed: load it on the next predict
        return result

    async def async_run(self, interval: float, iterations: int | None = None,
                        on_result: Any = None) -> None:
        def after(result: SyncResult) -> None:
            self.shadow.settle()
            if result.installed:
                self._engines.clear()
            if on_result is not None:
                on_result(result)

        async with make_client(self.store.identity.server, self.config, self.transport) as client:
            updater = self.updater(client)
            await updater.run(interval=interval, iterations=iterations, on_result=after,
                              before=self.queue_stats)

    # ------------------------------------------------------------------ inference

    def manifest(self, inst: Installed) -> ModelManifest:
        return self.store.manifest(inst)

    def _load(self, inst: Installed, failures: list[str]) -> Any:
        from device_sim.engine import engine_for_installed
        from device_sim.errors import ModelLoadError

        try:
            if not self.store.intact(inst):  # checked once per load: a bit-rotted file falls back
                raise ModelLoadError(f"v{inst.version} files missing or altered")
            return engine_for_installed(self.manifest(inst), inst.artifact_sha256,
                                        self.store.artifact_path(inst))
        except ModelLoadError as exc:
            failures.append(str(exc))
            raise

    def _engine(self, name: str) -> tuple[dict[str, Installed], Any]:
        """The model's FallbackEngine (the engine package's one fallback path): the current
        version, else the previous one; and which installed version each candidate is."""
        from device_sim.engine import Candidate, FallbackEngine
        from device_sim.errors import EngineError

        slot = self.store.slot(name)
        if slot is None:
            raise NoModelError(f"no model {name!r} installed")
        versions = {f"v{inst.version}": inst for inst in (slot.current, slot.previous) if inst is not None}
        if name not in self._engines:
            failures: list[str] = []
            cands = [Candidate(label, functools.partial(self._load, inst, failures))
                     for label, inst in versions.items()]
            try:
                self._engines[name] = FallbackEngine(cands)
            except EngineError:
                raise NoModelError(f"no usable version of {name!r}: {'; '.join(failures)}") from None
        return versions, self._engines[name]

    def predict(self, features: Any, model: str | None = None) -> Any:
        """labels (-1 anomaly, 1 normal) and scores from the installed model."""
        names = self.store.model_names()
        if model is None:
            if not names:
                raise NoModelError("no model installed yet: run `modelsync device sync` first")
            if len(names) != 1:
                raise UsageError(f"name the model to use: installed are {', '.join(names) or 'none'}")
            model = names[0]
        versions, engine = self._engine(model)
        t0 = time.perf_counter()
        prediction = engine.predict(features)
        seconds = time.perf_counter() - t0
        inst = versions[engine.active_name]  # after predict: a failing version hands over
        key = (inst.name, inst.version)
        window = self._stats.get(key)
        if window is None:
            profile = self.manifest(inst).behaviour
            window = self._stats[key] = Window(
                edges=list(profile.score_edges) if profile is not None else None, since=format_time(utcnow()))
            slot = self.store.slot(inst.name)
            current = slot is not None and slot.current.version == inst.version  # not a fallback
            if self.band_check_rows and profile is not None and profile.expected_band is not None \
                    and current and key not in self._band:
                self._band[key] = BandCheck(profile.expected_band, self.band_check_rows)
        window.observe(prediction.labels, prediction.scores, seconds, engine.provider)
        check = self._band.get(key)
        out_of_band = check.observe(prediction.labels) if check is not None else None
        if out_of_band is not None:
            self._fall_back(inst, out_of_band)
        self.shadow.observe(inst.name, inst.version, features, prediction)
        return prediction

    def _fall_back(self, inst: Installed, data: dict[str, Any]) -> None:
        """The version's first rows left its expected band: serve the previous one from the
        next call on, never reinstall this one, and say why (an install_failed report)."""
        self.store.fall_back(inst.name)
        self.store.enqueue("install_failed", model=inst.name, version=inst.version,
                           reason="behaviour_out_of_band", data=data)
        self._engines.pop(inst.name, None)

    def queue_stats(self) -> None:
        """One ``behaviour`` report per model version that scored rows since the last one,
        and the shadow windows whose hours are up."""
        self.shadow.queue_due()
        for (name, version), window in self._stats.items():
            if window.rows:
                self.store.enqueue("behaviour", model=name, version=version, data=window.report())
        self._stats.clear()

    # ------------------------------------------------------------------ status

    def status(self) -> DeviceStatus:
        ident = self.store.identity
        saved = self.store.saved_index(ident.channel)
        models = []
        for name in self.store.model_names():
            slot = self.store.slot(name)
            assert slot is not None
            serving = self.store.usable(name)
            models.append(ModelStatus(name, slot.current.version,
                                      slot.previous.version if slot.previous else None,
                                      serving.version if serving else None, slot.current.target,
                                      slot.current.installed_at))
        return DeviceStatus(
            device_id=ident.device_id, fleet=ident.fleet, channel=ident.channel, platform=ident.platform,
            target=ident.target, server=ident.server, ort_version=ident.ort_version,
            root_version=int(self.store.root_envelope()["signed"]["version"]),
            index_version=int(saved[0]["signed"]["version"]) if saved else None,
            models=models, queued_reports=sum(1 for _ in self.store.queued(10**9)),
            refused_reports=int(self.store.refused_reports()["count"]),
            failed={k: sorted(v) for k, v in self.store.failed().items()},
            pack_index_version=self.store.pack_floor(ident.channel),
        )
