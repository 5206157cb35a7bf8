"""Time and memory of ``crowdprop synth`` (make + write), and of loading its output back.

Both generators (``--generator modes``, the default, and ``mixed``) at every size.
Every size runs in its own subprocess so that its peak resident memory
(``ru_maxrss``) is its own. Columns: seconds to make the set (one core), to
write the files (make_cpu_s: CPU seconds of the make step, which a busy
machine does not inflate), to read them back with crowdprop's readers (ground truth,
then predictions matched to it; skipped above --load-max masks), peak RSS,
size on disk, Pearson correlation of score / pred_iou with the true IoU, and the
median |true IoU - target IoU|.

    python benchmarks/bench_synth.py                       # 10k and 100k masks, both generators
    python benchmarks/bench_synth.py --sizes 10000 100000 1000000 --generators mixed
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _one(generator: str, n: int, classes: int, load_max: int) -> dict:
    import numpy as np

    from crowdprop.masks import load_ground_truth, load_predictions
    from crowdprop.replay.synth import make_synthetic, write_synthetic
    from crowdprop.replay.synth_mixed import make_mixed, write_mixed

    make, write = {"modes": (make_synthetic, write_synthetic), "mixed": (make_mixed, write_mixed)}[generator]
    t0, c0 = time.perf_counter(), time.process_time()
    s = make(n, classes, seed=0, progress=False)
    t1, c1 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "set"
        write(s, out)
        t2 = time.perf_counter()
        disk = sum(p.stat().st_size for p in out.iterdir())
        t_load = float("nan")
        if n <= load_max:
            t3 = time.perf_counter()
            gt = load_ground_truth(out / "gt.json")
            df = load_predictions(out / "predictions.json", gt)
            t_load = time.perf_counter() - t3
            assert (df["gt_iou"].to_numpy() == s.true_iou).all()
    score = np.array([r["score"] for r in s.predictions])
    piou = np.array([r["pred_iou"] for r in s.predictions])
    return {
        "generator": generator, "masks": n, "classes": classes, "instances": len(s.gt["annotations"]), "images": len(s.gt["images"]),
        "make_s": t1 - t0, "make_cpu_s": c1 - c0, "write_s": t2 - t1, "load_s": t_load,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "disk_mib": disk / 2**20,
        "corr_score": float(np.corrcoef(score, s.true_iou)[0, 1]),
        "corr_pred_iou": float(np.corrcoef(piou, s.true_iou)[0, 1]),
        "med_abs_err": float(np.median(np.abs(s.true_iou - s.target_iou))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--generators", nargs="+", choices=["modes", "mixed"], default=["modes", "mixed"])
    ap.add_argument("--load-max", type=int, default=100_000, help="read back sets up to this many masks")
    ap.add_argument("--_child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--_generator", default="modes", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._child is not None:
        sys.stdout.write(json.dumps(_one(a._generator, a._child, a.classes, a.load_max)))
        return
    rows = []
    for n in a.sizes:
        for g in a.generators:
            res = subprocess.run([sys.executable, __file__, "--_child", str(n), "--_generator", g,
                                  "--classes", str(a.classes), "--load-max", str(a.load_max)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(res.stdout))
    head = ("generator", "masks", "classes", "instances", "images", "make_s", "make_cpu_s", "write_s", "load_s", "peak_mib", "disk_mib",
            "corr_score", "corr_pred_iou", "med_abs_err")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = []
        for h in head:
            v = r[h]
            cells.append(v if isinstance(v, str) else f"{v:,}" if isinstance(v, int)
                         else ("-" if v != v else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
