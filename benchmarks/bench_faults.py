"""A campaign against a throttling, failing, slow MTurk: same result, how much slower.

    python benchmarks/bench_faults.py                  # 20 % throttling, 5 % 5xx, 200 ms latency
    python benchmarks/bench_faults.py --latency 0.05

A last configuration adds what MTurk does on its own to the faults: 20 % of the workers
submit after their HIT's round timed out (rounds of 2 s, late by 3 s), and MTurk approves
submitted work 4 s after submission whether crowdprop looked or not. Its result depends on
timing, so only its books are checked: every assignment recorded once against the masks
shown, every cent charged recorded.

The local MTurk endpoint runs as its own process (``crowdprop mturk-local
--throttle --errors --lost-responses --latency``) and ``crowdprop run RUN
--endpoint-url URL`` drives the shipped sample's campaign through it (the
controller's own retry policy: jittered exponential backoff from 1 s). Every
configuration starts from the same ``crowdprop init --crowd mturk`` run
directory; the final accepted set and the books (:func:`bench_crash.check`) are
compared with the run without faults.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_crash import Endpoint, Outcome, check, controller, edit_config, run_to_end, sample_run  # noqa: E402


def one(base: Path, work: Path, name: str, flags: list[str], reference=None, config: dict | None = None):
    from crowdprop.campaign.export import final_status
    from crowdprop.campaign.store import RunDir

    run_dir = work / name
    shutil.copytree(base, run_dir)
    if config:
        edit_config(run_dir, **config)
    ep = Endpoint(run_dir, work, extra=flags)
    try:
        t0 = time.perf_counter()
        out = Outcome()
        if config:  # late work: a run may stop while it waits for some
            done = run_to_end(run_dir, ep.url, out)
        else:
            p = controller(run_dir, ep.url, None, timeout=3600)
            done = p.returncode == 0
            if not done:
                out.problems.append(f"run failed (rc {p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
        out.wall_s = time.perf_counter() - t0
        if not done:
            return out, None, ep.ledger()
        led = ep.ledger()  # before the check's own requests
        check(run_dir, ep, reference, out)
    finally:
        ep.stop()
    return out, final_status(RunDir(run_dir)), led


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--throttle", type=float, default=0.20)
    ap.add_argument("--errors", type=float, default=0.05)
    ap.add_argument("--lost-responses", type=float, default=0.5, help="share of the errors after the operation")
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="campaign seeds (one fault draw each)")
    a = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="crowdprop-faults-"))
    try:
        base0 = sample_run(work / "base")
        rows = []
        # mturk-local seeds its faults with its worker pool's seed, the campaign seed: each campaign
        # seed is one draw of faults (and its own fault-free reference)
        for seed in a.seeds:
            base = work / f"base-seed{seed}"
            shutil.copytree(base0, base)
            cfg = json.loads((base / "config.json").read_text())
            cfg["campaign"]["seed"] = seed
            (base / "config.json").write_text(json.dumps(cfg))
            clean, ref, led0 = one(base, work, f"clean{seed}", [])
            if ref is None:
                print("the run without faults failed:", clean.problems)
                return 1
            rows.append(("no faults", seed, clean, led0, clean.wall_s))
            if seed == a.seeds[0]:
                lat_only, _, led1 = one(base, work, f"latency{seed}", ["--latency", str(a.latency)], ref)
                rows.append((f"latency {a.latency * 1000:.0f} ms", seed, lat_only, led1, clean.wall_s))
            flags = ["--throttle", str(a.throttle), "--errors", str(a.errors), "--lost-responses",
                     str(a.lost_responses), "--latency", str(a.latency)]
            o, _, led = one(base, work, f"faults{seed}", flags, ref)
            rows.append((f"{a.throttle:.0%} throttle, {a.errors:.0%} 5xx ({a.lost_responses:.0%} of them lost), "
                         f"{a.latency * 1000:.0f} ms", seed, o, led, clean.wall_s))
            if seed == a.seeds[0]:
                o, _, led = one(base, work, f"late{seed}", flags + ["--late", "0.2", "--late-delay", "3",
                                                                    "--auto-approve-after", "4"],
                                None, config={"crowd": {"round_timeout_s": 2.0, "poll_interval_s": 0.2}})
                o.identical = True  # timing decides the result; the books are what is checked
                rows.append(("the same + 20 % late workers + MTurk approving on its own after 4 s", seed, o, led,
                             clean.wall_s))
        print()
        print("| faults | seed | API requests | throttled | 5xx | lost responses | wall (s) | x no faults | "
              "identical result | duplicate HITs | lost/double answers | misattributed | double-approved | "
              "paid, unrecorded | books differ |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        bad = False
        for label, seed, o, led, clean_s in rows:
            f = led.get("faults", {})
            ident = "yes" if (o.identical or label == "no faults") and not o.problems else "NO"
            if label.startswith("the same +") and ident == "yes":
                ident = f"n/a ({o.late} late, {o.by_mturk} by MTurk)"
            bad |= ident == "NO"
            print(f"| {label} | {seed} | {f.get('requests', '-')} | {f.get('throttle', 0)} | {f.get('error', 0)} | "
                  f"{f.get('lost_response', 0)} | {o.wall_s:.1f} | {o.wall_s / clean_s:.2f} | {ident} | "
                  f"{o.duplicates} | {o.lost + o.double_counted} | {o.misattributed} | {o.double_approved} | "
                  f"${o.unrecorded_usd:.2f} | {o.books_differ} |")
        for label, _, o, _, _ in rows:
            for p in o.problems:
                print(f"PROBLEM ({label}):", p)
        return 1 if bad else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
