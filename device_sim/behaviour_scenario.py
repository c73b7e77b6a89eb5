"""The behaviour gate's fleet scenario (docs/behaviour.md): a model trained on telemetry in
other units passes every byte and golden check, reaches the first devices of its rollout,
and is halted by what those devices report it doing; a good model's rollout then completes.

    v1  good, released to 100%: the incumbent every device runs and reports on
    v2  trained on temperatures in °F, storage in MB and utilisations as fractions: its
        golden vectors agree (they were drawn from its own training data), and on the
        field's telemetry it calls nearly every row an anomaly
    v3  good again (another seed), released to 100% with the same gate: it rolls on

``run_shadow`` is the same story with shadow releases (docs/behaviour.md "Shadow runs"): v2
is held and run beside v1 by the devices of its bucket, its disagreement halts it before any
device acts on it, and v3, shadowed the same way and passing, is promoted and installed from
what the devices hold.

Used by tests/device_sim/test_behaviour_fleet.py (a small fleet) and
benchmarks/bench_behaviour_gate.py (thousands of devices)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from device_sim.fleet import Fleet, FleetSpec

MODEL = "pump-iforest"
TRAIN_ROWS = 3000


class Service(Protocol):
    """What the scenario asks of a running service (device_sim.demo.ServiceHandle)."""

    def publish(self, bundle: Path) -> str: ...

    def release(self, model: str, version: int, percent: float, urgent: bool = False,
                behaviour_gate: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]: ...

    def get(self, path: str) -> Any: ...

    def promote(self, release_id: int) -> dict[str, Any]: ...


def other_units(frame: Any) -> Any:
    """The same telemetry as a pipeline with a units bug would hand the trainer."""
    bad = frame.copy()
    bad["battery_temp_c"] = bad["battery_temp_c"] * 1.8 + 32  # °F
    bad["storage_free_gb"] = bad["storage_free_gb"] * 1024  # MB
    for column in ("cpu_util_pct", "memory_used_pct", "battery_level"):
        bad[column] = bad[column] / 100  # fractions, not percent
    return bad


def build_bundle(
    work: Path, keys_dir: Path, *, version: int, seed: int, units_bug: bool, trees: int = 30,
    name: str = MODEL,
) -> Path:
    """An IsolationForest bundle trained on the synthetic telemetry, or on it with the units
    bug of :func:`other_units`."""
    from packager.detectors import IsolationForestDetector
    from packager.keys import load_private_key, load_root
    from packager.package import build_and_write
    from packager.telemetry import generate_telemetry

    frame = generate_telemetry(TRAIN_ROWS, seed=seed).frame
    if units_bug:
        frame = other_units(frame)
    model = IsolationForestDetector(n_estimators=trees, random_state=seed).fit(frame)
    return build_and_write(
        model, name=name, version=version, targets=("android-nnapi", "ios-coreml", "cpu"),
        keys=[load_private_key(keys_dir / "publisher.key")], root=load_root(keys_dir / "root.json"),
        out_dir=work / f"bundle-{name}-v{version}", calibration=frame.to_numpy(),
    )


def build_bundles(work: Path, keys_dir: Path, trees: int = 30, name: str = MODEL) -> dict[int, Path]:
    return {
        version: build_bundle(work, keys_dir, version=version, seed=seed, units_bug=bug, trees=trees,
                              name=name)
        for version, seed, bug in ((1, 1, False), (2, 2, True), (3, 3, False))
    }


def run(
    svc: Service, bundles: dict[int, Path], spec: FleetSpec, gate: dict[str, Any], *,
    first_phase: float, deadline_s: float = 120.0, settle: float = 1.0,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the scenario; returns its figures (times in seconds from each release). The bad
    model is released once ``settle`` of the eligible devices run v1, and the good one is
    followed until ``settle`` of them run it."""
    for version in (1, 2, 3):
        svc.publish(bundles[version])
    svc.release(MODEL, 1, 100)
    fleet = Fleet(spec)

    async def scenario() -> dict[str, Any]:
        await fleet.start()
        try:
            if not await fleet.wait(lambda: fleet.share_on(MODEL, 1) >= settle, deadline_s):
                raise RuntimeError(f"v1 reached {fleet.share_on(MODEL, 1):.2%} of the fleet only")
            say(f"v1 on {fleet.share_on(MODEL, 1):.1%} of {spec.devices} devices; releasing v2 "
                f"(other units) to {first_phase:g}% with the gate")
            t0 = time.monotonic()
            rel = await asyncio.to_thread(svc.release, MODEL, 2, first_phase, False, gate)
            fleet.result.mark(fleet.now(), f"v2 (other units) to {first_phase:g}%, gated")

            halted, state = await _until(lambda: svc.get(f"/v1/releases/{rel['id']}"),
                                         lambda r: r["state"] == "halted", deadline_s)
            if not halted:
                seen = await asyncio.to_thread(svc.get, f"/v1/releases/{rel['id']}/behaviour")
                raise RuntimeError(
                    f"the behaviour gate did not halt v2 within {deadline_s:g} s: gate {seen['gate']}, "
                    f"candidate {seen['candidate']}, devices on v2 "
                    f"{sum(d.installed.get(MODEL) == 2 for d in fleet.devices)}")
            time_to_halt = time.monotonic() - t0
            fleet.result.mark(fleet.now(), "v2 halted by the behaviour gate")
            exposed_at_halt = sum(d.installed.get(MODEL) == 2 for d in fleet.devices)
            await asyncio.sleep(3 * spec.poll_interval_s)  # syncs in flight at the halt land
            exposed = sum(d.installed.get(MODEL) == 2 for d in fleet.devices)
            behaviour = await asyncio.to_thread(svc.get, f"/v1/releases/{rel['id']}/behaviour")
            say(f"v2 halted after {time_to_halt:.1f} s: {state['halt_reason']}")

            t1 = time.monotonic()
            good = await asyncio.to_thread(svc.release, MODEL, 3, 100, False, gate)
            fleet.result.mark(fleet.now(), "v3 to 100%, gated")
            reached = await fleet.wait(lambda: fleet.share_on(MODEL, 3) >= 0.95, deadline_s)
            time_to_95 = time.monotonic() - t1
            # then all of it (``settle``), waited for as a condition: a slow link's device is late
            await fleet.wait(lambda: fleet.share_on(MODEL, 3) >= settle, deadline_s)
            good_state = await asyncio.to_thread(svc.get, f"/v1/releases/{good['id']}")
            good_behaviour = await asyncio.to_thread(svc.get, f"/v1/releases/{good['id']}/behaviour")
            say(f"v3 on {fleet.share_on(MODEL, 3):.0%} of the fleet, 95% after {time_to_95:.1f} s; its "
                f"release is {good_state['state']} ({good_behaviour['gate']['breach'] or 'no breach'})")
            return {
                "devices": spec.devices, "first_phase_percent": first_phase, "gate": gate,
                "bad_release": {"halt_reason": state["halt_reason"], "time_to_halt_s": round(time_to_halt, 2),
                                "devices_on_bad_at_halt": exposed_at_halt, "devices_on_bad": exposed,
                                "candidate": behaviour["candidate"], "incumbent": behaviour["incumbent"]},
                "good_release": {"state": good_state["state"], "reached_95": reached,
                                 "time_to_95_s": round(time_to_95, 2), "share": fleet.share_on(MODEL, 3),
                                 "gate": good_behaviour["gate"]},
                "in_first_phase": sum(
                    1 for d in fleet.eligible() if _in_bucket(rel["salt"], d.device_id, first_phase)
                ),
                "rows_scored": fleet.scorer.scored,
            }
        finally:
            await fleet.stop()

    return asyncio.run(scenario())


async def _until(probe: Callable[[], Any], done: Callable[[Any], bool],
                 deadline_s: float) -> tuple[bool, Any]:
    """Poll ``probe`` (a blocking service call) until ``done`` says so or the deadline passes."""
    t0 = time.monotonic()
    seen = None
    while time.monotonic() - t0 < deadline_s:
        seen = await asyncio.to_thread(probe)
        if done(seen):
            return True, seen
        await asyncio.sleep(0.25)
    return False, seen


def run_shadow(
    svc: Service, bundles: dict[int, Path], spec: FleetSpec, gate: dict[str, Any], *,
    deadline_s: float = 120.0, settle: float = 1.0, say: Callable[[str], None] = print, model: str = MODEL,
) -> dict[str, Any]:
    """The shadow scenario; returns its figures (times in seconds from each release)."""
    for version in (1, 2, 3):
        svc.publish(bundles[version])
    svc.release(model, 1, 100)
    fleet = Fleet(spec)
    after = {"rows": max(spec.score_rows, 1), "hours": 24.0}

    def holding(version: int) -> int:
        held = [d.updater.store.held_shadow(model) for d in fleet.devices if d.updater is not None]
        return sum(1 for h in held if h is not None and h.inst.version == version)

    async def scenario() -> dict[str, Any]:
        await fleet.start()
        try:
            if not await fleet.wait(lambda: fleet.share_on(model, 1) >= settle, deadline_s):
                raise RuntimeError(f"v1 reached {fleet.share_on(model, 1):.2%} of the fleet only")
            t0 = time.monotonic()
            bad = await asyncio.to_thread(lambda: svc.release(model, 2, 100, False, gate, mode="shadow",
                                                              report_after=after))
            fleet.result.mark(fleet.now(), "v2 (other units) shadowed, gated")
            halted, state = await _until(lambda: svc.get(f"/v1/releases/{bad['id']}"),
                                         lambda r: r["state"] == "halted", deadline_s)
            if not halted:
                seen = await asyncio.to_thread(svc.get, f"/v1/releases/{bad['id']}/behaviour")
                raise RuntimeError(f"the gate did not halt the v2 shadow within {deadline_s:g} s: "
                                   f"gate {seen['gate']}, shadow {seen['shadow']}, holding {holding(2)}")
            time_to_halt = time.monotonic() - t0
            fleet.result.mark(fleet.now(), "v2 shadow halted: no device acted on it")
            held_at_halt, acted = holding(2), sum(d.installed.get(model) == 2 for d in fleet.devices)
            behaviour = await asyncio.to_thread(svc.get, f"/v1/releases/{bad['id']}/behaviour")
            say(f"v2 shadow halted after {time_to_halt:.1f} s ({held_at_halt} devices held it, {acted} "
                f"acted on it): {state['halt_reason']}")

            t1 = time.monotonic()
            good = await asyncio.to_thread(lambda: svc.release(model, 3, 100, False, gate, mode="shadow",
                                                               report_after=after))
            fleet.result.mark(fleet.now(), "v3 shadowed, gated")
            judged, good_behaviour = await _until(
                lambda: svc.get(f"/v1/releases/{good['id']}/behaviour"),
                lambda b: b["gate"]["waiting"] is None or b["gate"]["breach"] is not None, deadline_s)
            if not judged or good_behaviour["gate"]["breach"]:
                raise RuntimeError(f"the v3 shadow was not passed: {good_behaviour['gate']}")
            time_to_pass = time.monotonic() - t1
            t2 = time.monotonic()
            await asyncio.to_thread(svc.promote, int(good["id"]))
            fleet.result.mark(fleet.now(), "v3 promoted")
            reached = await fleet.wait(lambda: fleet.share_on(model, 3) >= 0.95, deadline_s)
            time_to_95 = time.monotonic() - t2
            await fleet.wait(lambda: fleet.share_on(model, 3) >= settle, deadline_s)
            say(f"v3 passed its shadow in {time_to_pass:.1f} s (agreement "
                f"{good_behaviour['shadow']['agreement']:.1%}); promoted, on 95% after {time_to_95:.1f} s")
            figures: dict[str, Any] = {
                "devices": spec.devices, "gate": gate,
                "bad_shadow": {"halt_reason": state["halt_reason"], "time_to_halt_s": round(time_to_halt, 2),
                               "devices_holding_at_halt": held_at_halt, "devices_acting_on_bad": acted,
                               "shadow": behaviour["shadow"]},
                "good_shadow": {"time_to_pass_s": round(time_to_pass, 2), "shadow": good_behaviour["shadow"],
                                "reached_95": reached, "time_to_95_after_promote_s": round(time_to_95, 2),
                                "share": fleet.share_on(model, 3)},
            }
        finally:
            result = await fleet.stop()
        figures["good_shadow"]["installs_from_held"] = result.requests_by_kind.get("held", 0)
        figures["good_shadow"]["bytes_installing_held"] = result.bytes_by_kind.get("held", 0)
        return figures

    return asyncio.run(scenario())


def _in_bucket(salt: str, device_id: str, percent: float) -> bool:
    from packager.rollout import rollout_bucket

    return rollout_bucket(salt, device_id) < percent * 100
