"""The behaviour gate at fleet size: ``--devices`` simulated devices (default 2,000) against
one local `modelsync serve` (its own process, SQLite, local blobs) run the scenario of
device_sim/behaviour_scenario.py — a good v1 everywhere, a v2 trained on telemetry in other
units released to ``--first-phase`` percent under the gate, a good v3 to 100% — each device
scoring ``--rows`` rows of synthetic telemetry per poll and reporting what its model did.

    .venv/bin/python benchmarks/bench_behaviour_gate.py --out benchmarks/results/behaviour_gate.json

Prints and writes: the devices in the first phase, how many installed the bad model before
the halt (and after the syncs in flight landed), the time from its release to the halt, the
gate's reason, and the good model's time to 95% of the fleet.
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
    parser.add_argument("--out", type=Path, help="write the figures here (JSON)")
    args = parser.parse_args(argv)
    from packager.keys import init_keys

    gate = {"max_rate_ratio": 2.0, "max_psi": 0.25, "min_devices": args.min_devices,
            "min_rows": args.min_devices * args.rows}
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
            out = behaviour_scenario.run(svc, bundles, spec, gate, first_phase=args.first_phase,
                                         deadline_s=30 * args.poll_interval, settle=0.99,
                                         say=lambda m: print(m, flush=True))
    out["poll_interval_s"] = args.poll_interval
    out["rows_per_poll"] = args.rows
    out["wall_s"] = round(time.monotonic() - started, 1)
    bad, good = out["bad_release"], out["good_release"]
    print(f"{out['in_first_phase']} devices in the first {args.first_phase:g}%; the bad model reached "
          f"{bad['devices_on_bad_at_halt']} before the halt ({bad['devices_on_bad']} once syncs in flight "
          f"landed), halted {bad['time_to_halt_s']} s after its release; the good model reached 95% "
          f"in {good['time_to_95_s']} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
