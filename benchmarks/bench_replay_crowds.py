"""Wall time of ``crowdprop replay`` on the shipped sample, per crowd.

README promises the shipped-sample replay finishes in under a minute. This
times the whole command (a fresh interpreter: imports, init with features and
trees, the campaign, the report) for the in-process simulated crowd and for the
local MTurk endpoint (boto3 over HTTP) without and with drawing the pictures.

Usage: python benchmarks/bench_replay_crowds.py [--repeat N]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = [
    ("simulated (in process)", ["--crowd", "simulated"]),
    ("local endpoint, pictures skipped (default)", []),
    ("local endpoint, pictures rendered", ["--hit-images", "render"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in CASES:
            times = []
            for k in range(args.repeat):
                run_dir = Path(tmp) / f"{len(rows)}-{k}"
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "crowdprop", "replay", "--run-dir", str(run_dir), *extra],
                               check=True, stdout=subprocess.DEVNULL)
                times.append(time.perf_counter() - t)
            images = len(list((run_dir / "hit_images").glob("*"))) if (run_dir / "hit_images").exists() else 0
            rows.append((name, statistics.median(times), images))
    print(f"{'crowd':<44} {'wall s (median)':>16} {'pictures':>9}")
    for name, t, n in rows:
        print(f"{name:<44} {t:>16.1f} {n:>9}")


if __name__ == "__main__":
    main()
