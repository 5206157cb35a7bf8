"""Feature extraction throughput and cluster-tree build time / peak memory.

Prints one table. Every case runs in its own subprocess so that its peak
resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which counts numpy
and BLAS buffers, unlike tracemalloc) is its own; the peak includes generating
the case's input.

Cases
-----
features
    :func:`crowdprop.features.shape_features` (grid 16) on the 734 real RLE masks of
    the shipped sample (``crowdprop/data/sample_predictions.json``, cocoapi's fake
    segmentation results on the first 100 COCO val2014 images), repeated to
    100,000 masks (5,000 with ``--quick``).
embedding
    :func:`crowdprop.features.clustering_embedding` on 100,000 x 512 features (PCA to 64).
tree exact / scalable
    :func:`crowdprop.tree.build_forest` on seeded Gaussian blobs: a small exact case
    (20 classes x 2,000, 64-d), one class of 200,000 x 512-d, and 1,000,000 x 128-d
    over 80 classes (each class 12,500 masks: scalable path).

Usage::

    python benchmarks/bench_tree.py            # full run (minutes)
    python benchmarks/bench_tree.py --quick    # small sizes
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GT = REPO / "crowdprop" / "data" / "sample_gt.json"
RESULTS = REPO / "crowdprop" / "data" / "sample_predictions.json"


def blobs(n: int, d: int, n_classes: int, rng: np.random.Generator, blobs_per_class: int = 50):
    """Seeded Gaussian blobs (float32, generated in chunks): labels and embedding."""
    cats = np.sort(rng.integers(0, n_classes, n)) if n_classes > 1 else np.zeros(n, dtype=np.int64)
    centers = rng.standard_normal((n_classes, blobs_per_class, d), dtype=np.float32) * 4.0
    x = np.empty((n, d), dtype=np.float32)
    chunk = 50_000
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        blob = rng.integers(0, blobs_per_class, b - a)
        x[a:b] = rng.standard_normal((b - a, d), dtype=np.float32)
        x[a:b] += centers[cats[a:b], blob]
    return cats, x


def case_features(n: int) -> dict:
    import pandas as pd

    from crowdprop.features import shape_features
    from crowdprop.masks import load_ground_truth, load_predictions

    df = load_predictions(RESULTS, load_ground_truth(GT))
    reps = -(-n // len(df))
    big = pd.concat([df] * reps, ignore_index=True).iloc[:n]
    t = time.perf_counter()
    f = shape_features(big, grid=16)
    dt = time.perf_counter() - t
    return {"n": len(big), "d": f.shape[1], "classes": "-", "seconds": dt, "rate": len(big) / dt}


def case_embedding(n: int, d: int) -> dict:
    from crowdprop.features import clustering_embedding

    rng = np.random.default_rng(0)
    _, x = blobs(n, d, 1, rng)
    q = rng.random(n)
    t = time.perf_counter()
    e = clustering_embedding(x, q, quality_weight=1.0, pca_dims=64, rng=np.random.default_rng(1))
    dt = time.perf_counter() - t
    return {"n": n, "d": f"{d}->{e.shape[1]}", "classes": 1, "seconds": dt, "rate": n / dt}


def case_tree(n: int, d: int, n_classes: int, exact_max: int) -> dict:
    from crowdprop.tree import build_forest

    cats, x = blobs(n, d, n_classes, np.random.default_rng(0))
    t = time.perf_counter()
    forest = build_forest(cats, x, exact_max=exact_max, micro_size=256, rng=np.random.default_rng(1))
    dt = time.perf_counter() - t
    forest.check()
    return {"n": n, "d": d, "classes": n_classes, "seconds": dt, "rate": n / dt}


def run_child(spec: dict) -> dict:
    kind = spec.pop("kind")
    out = {"features": case_features, "embedding": case_embedding, "tree": case_tree}[kind](**spec)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return 0

    if args.quick:
        cases = [
            ("features (real RLE masks)", {"kind": "features", "n": 5_000}, None),
            ("embedding (PCA 64 + quality)", {"kind": "embedding", "n": 20_000, "d": 512}, None),
            ("tree exact (20 x 2,000)", {"kind": "tree", "n": 40_000, "d": 64, "n_classes": 20, "exact_max": 4000}, None),
            ("tree scalable (1 class)", {"kind": "tree", "n": 20_000, "d": 512, "n_classes": 1, "exact_max": 4000}, None),
            ("tree scalable (80 classes)", {"kind": "tree", "n": 100_000, "d": 128, "n_classes": 80, "exact_max": 1000}, None),
        ]
    else:
        cases = [
            ("features (real RLE masks)", {"kind": "features", "n": 100_000}, None),
            ("embedding (PCA 64 + quality)", {"kind": "embedding", "n": 100_000, "d": 512}, None),
            ("tree exact (20 x 2,000)", {"kind": "tree", "n": 40_000, "d": 64, "n_classes": 20, "exact_max": 4000}, None),
            ("tree scalable (1 class)", {"kind": "tree", "n": 200_000, "d": 512, "n_classes": 1, "exact_max": 4000},
             (300.0, 4096.0)),
            ("tree scalable (80 classes)", {"kind": "tree", "n": 1_000_000, "d": 128, "n_classes": 80, "exact_max": 4000},
             (900.0, None)),
        ]

    header = f"| {'case':<30} | {'n':>9} | {'d':>8} | {'classes':>7} | {'seconds':>8} | {'items/s':>9} | {'peak RSS MB':>11} | {'target':<18} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, spec, target in cases:
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                              capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            print(f"| {name:<30} | failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr else proc.returncode}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        tgt = ""
        if target:
            ok_t = r["seconds"] <= target[0]
            ok_m = target[1] is None or r["peak_rss_mb"] <= target[1]
            tgt = f"<{target[0]:.0f}s" + (f", <{target[1] / 1024:.0f}GB" if target[1] else "") + (" ok" if ok_t and ok_m else " MISSED")
        print(f"| {name:<30} | {r['n']:>9,} | {str(r['d']):>8} | {str(r['classes']):>7} | {r['seconds']:>8.2f} "
              f"| {r['rate']:>9,.0f} | {r['peak_rss_mb']:>11,.0f} | {tgt:<18} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
