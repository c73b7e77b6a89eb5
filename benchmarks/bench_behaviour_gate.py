"""The behaviour gate at fleet size: ``--devices`` simulated devices (default 2,000) against
one local `modelsync serve` (its own process, SQLite, local blobs) run the scenario of
device_sim/behaviour_scenario.py — a good v1 everywhere, a v2 trained on telemetry in other
units released to ``--first-phase`` percent under the gate, a good v3 to 100% — each device
scoring ``--rows`` rows of synthetic telemetry per poll and reporting what its model did.

    .venv/bin/python benchmarks/bench_behaviour_gate.py --out benchmarks/results/behaviour_gate.json

Prints and writes: the devices in the first phase, how many installed the bad model before
the halt (and after the syncs in flight landed), the time from its release to the halt, the
gate's reason, and the good model's time to 95% of the fleet.

``--shadow`` runs the shadow scenario instead (behaviour_scenario.run_shadow): v2 and v3 are
shadow releases to the whole fleet, v2 halted on its agreement with v1, v3 promoted:

    .venv/bin/python benchmarks/bench_behaviour_gate.py --shadow \
        --out benchmarks/results/behaviour_shadow.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device_sim import behaviour_scenario
from device_sim.demo import demo_service, sigterm_as_interrupt
from device_sim.fleet import FleetSpec, default_state_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--poll-interval", type=float, default=10.0)
    parser.add_argument("--rows", type=int, default=100, help="telemetry rows each device scores per poll")
    parser.add_argument("--first-phase", type=float, default=5.0,
                        help="percent of the bad model's first phase")
    parser.add_argument("--min-devices", type=int, default=20, help="the gate judges after this many devices")
    parser.add_argument("--shadow", action="store_true", help="the shadow scenario")
    parser.add_argument("--out", type=Path, help="write the figures here (JSON)")
    args = parser.parse_args(argv)
    from packager.keys import init_keys

    gate: dict[str, object] = {"max_rate_ratio": 2.0, "max_psi": 0.25, "min_devices": args.min_devices,
                               "min_rows": args.min_devices * args.rows}
    if args.shadow:
        gate["min_agreement"] = 0.8
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-behaviour-") as tmp:
        work = Path(tmp)
        init_keys(work / "keys")
        print("building v1 (good), v2 (other units), v3 (good)", flush=True)
        bundles = behaviour_scenario.build_bundles(work, work / "keys")
        with sigterm_as_interrupt(), demo_service(work, work / "keys") as svc:
            svc.setup_fleet()
            spec = FleetSpec(
                devices=args.devices, server=svc.url, enroll_token=svc.enroll_token,
                root_envelope=svc.root_envelope(), poll_interval_s=args.poll_interval, seed=7,
                offline_share=0.0, state_root=default_state_root(), score_rows=args.rows,
                device_prefix="gate",
            )
            if args.shadow:
                out = behaviour_scenario.run_shadow(svc, bundles, spec, gate,
                                                    deadline_s=30 * args.poll_interval, settle=0.99,
                                                    say=lambda m: print(m, flush=True))
            else:
                out = behaviour_scenario.run(svc, bundles, spec, gate, first_phase=args.first_phase,
                                             deadline_s=30 * args.poll_interval, settle=0.99,
                                             say=lambda m: print(m, flush=True))
    out["poll_interval_s"] = args.poll_interval
    out["rows_per_poll"] = args.rows
    out["wall_s"] = round(time.monotonic() - started, 1)
    if args.shadow:
        bad, good = out["bad_shadow"], out["good_shadow"]
        print(f"the v2 shadow was halted {bad['time_to_halt_s']} s after its release, held by "
              f"{bad['devices_holding_at_halt']} devices, acted on by {bad['devices_acting_on_bad']}; v3 "
              f"passed in {good['time_to_pass_s']} s and reached 95% {good['time_to_95_after_promote_s']} s "
              f"after its promote, {good['installs_from_held']} installs from held files "
              f"({good['bytes_installing_held']} bytes)")
        _write(args.out, out)
        return 0
    bad, good = out["bad_release"], out["good_release"]
    print(f"{out['in_first_phase']} devices in the first {args.first_phase:g}%; the bad model reached "
          f"{bad['devices_on_bad_at_halt']} before the halt ({bad['devices_on_bad']} once syncs in flight "
          f"landed), halted {bad['time_to_halt_s']} s after its release; the good model reached 95% "
          f"in {good['time_to_95_s']} s")
    _write(args.out, out)
    return 0


def _write(path: Path | None, out: dict[str, object]) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
