"""Video mode at scale: init and one round on long synthetic videos, streamed (this version)
against the in-memory implementation it replaced, where that one can run.

    python benchmarks/bench_video_scale.py                        # 500, 2000, 10000 frames
    python benchmarks/bench_video_scale.py --frames 500 2000 --old-frames 500 2000
    python benchmarks/bench_video_scale.py --engine ray --workers 2 --frames 2000 --no-old   # init's and
                                                                # the round's inference on Ray

A video of N frames at the sample's size (48 x 48 px) is made of held-out synthetic clips of
100 frames each (``crowdprop.video.synth``, a cut every 100 frames), written as a folder of PNGs
with ground truth. Each configuration runs in its own process (``crowdprop video init`` then one
round: select, simulated crowd, fine-tune, inference) with the sample's network and
configuration (superpixel units, active selection, 60 clicks, 30 fine-tuning steps, one torch
thread), and prints: init seconds, the round's seconds by stage, peak RSS of the process, and
the bytes of one round's label maps (final + the network's) on disk and, for the old code, the
per-pixel arrays it held at once during a round (probabilities, features, labels). Seconds are
wall and CPU (this process only: with ``--engine ray`` or ``--workers`` the workers' CPU is not
counted); on a loaded machine compare CPU seconds. ``--old-src`` is the previous
implementation's package (default: this package with the video files streaming changed,
:data:`OLD_FILES`, as they were at :data:`OLD_COMMIT`, so that only streaming differs).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = "be970b2"
"""The last commit whose video mode held every frame in memory."""
OLD_FILES = [f"crowdprop/video/{m}.py" for m in ("export", "finetune", "flow", "inputs", "run", "rundir", "select",
                                                   "units")]
"""Streaming's files (config.py stays: its new keys are only read by the new code)."""

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
args = json.loads(sys.argv[1])
import torch
torch.set_num_threads(1)
from crowdprop.video.run import init_video, run, VideoRun
kw = {"engine": args["engine"], "workers": args["workers"]} if args["new"] else {}
t0, c0 = time.perf_counter(), time.process_time()
vr = init_video(args["run_dir"], frames=args["frames"], labels=args["labels"], gt=args["gt"],
                config=args["config"], **kw)
t_init, c_init = time.perf_counter() - t0, time.process_time() - c0
rss_init = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t1, c1 = time.perf_counter(), time.process_time()
m = run(vr.path, rounds=1, **kw)[0]
t_round, c_round = time.perf_counter() - t1, time.process_time() - c1
vr = VideoRun(vr.path).require()
rd = vr.round_dir(1)
def size(p):
    p = Path(p)
    if p.is_file():
        return p.stat().st_size
    return sum(q.stat().st_size for q in p.rglob("*") if q.is_file()) if p.exists() else 0
disk = sum(size(rd / n) for n in ("pred", "pred.npz", "model_pred", "model_pred.npz"))
print(json.dumps({"init_s": t_init, "round_s": t_round, "init_cpu": c_init, "round_cpu": c_round,
                  "seconds": m["seconds"], "miou": m["miou"],
                  "clicks": m["clicks"], "rss_init_mb": rss_init / 1024,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "label_disk": disk, "run_dir_bytes": size(vr.path)}))
"""


def make_video(folder: Path, n: int, seed: int = 0, size: int = 48) -> Path:
    """``n`` frames of held-out synthetic clips (100 frames each) as frames/ and gt/ PNGs."""
    import cv2

    from crowdprop.video.synth import labels_json, make_clip

    if (folder / "done").exists():
        return folder
    (folder / "frames").mkdir(parents=True, exist_ok=True)
    (folder / "gt").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = 0
    while t < n:
        clip = make_clip(rng, frames=min(100, n - t), size=size)
        for f, g in zip(clip.frames, clip.labels):
            cv2.imwrite(str(folder / "frames" / f"{t:06d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(folder / "gt" / f"{t:06d}.png"), g)
            t += 1
    (folder / "labels.json").write_text(json.dumps(labels_json()))
    (folder / "done").write_text("")
    return folder


def config(folder: Path) -> Path:
    from importlib.resources import files

    sample = Path(str(files("crowdprop.data") / "video_sample" / "config.toml")).read_text()
    p = folder / "config.toml"
    p.write_text(sample.replace("rounds = 4", "rounds = 1"))
    return p


def run_one(src: Path, video: Path, cfg: Path, run_dir: Path, *, new: bool, engine: str, workers: int | None,
            timeout: float) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1")
    args = {"run_dir": str(run_dir), "frames": str(video / "frames"), "labels": str(video / "labels.json"),
            "gt": str(video / "gt"), "config": str(cfg), "new": new, "engine": engine, "workers": workers}
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], env=env, capture_output=True, text=True,
                           timeout=timeout, cwd=str(run_dir.parent))
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:120]}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t0
    return out


def old_source(tmp: Path) -> Path:
    import shutil

    dest = tmp / "old"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(ROOT / "crowdprop", dest / "crowdprop", ignore=shutil.ignore_patterns("__pycache__"))
    for f in OLD_FILES:
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:{f}"], capture_output=True, check=True)
        (dest / f).write_bytes(text.stdout)
    return dest


def held_old(n: int, k: int = 4, width: int = 32, size: int = 48) -> int:
    """Bytes of the per-pixel arrays the in-memory round held at its peak: frames, probabilities and
    features of every frame (selection), the human labels (int64), flows (float32, both ways)."""
    px = n * size * size
    return px * 3 + px * 4 * (k + width) + px * 8 + (n - 1) * size * size * 2 * 4 * 2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[500, 2000, 10000])
    ap.add_argument("--old-frames", type=int, nargs="*", default=[500, 2000],
                    help="sizes the old in-memory code runs at too")
    ap.add_argument("--no-old", action="store_true")
    ap.add_argument("--no-new", action="store_true", help="only the old code (e.g. to add its rows later)")
    ap.add_argument("--old-src", help="folder holding the old crowdprop package")
    ap.add_argument("--engine", default="local", choices=["local", "ray"])
    ap.add_argument("--workers", type=int)
    ap.add_argument("--work", help="folder for videos and run directories (default: a temporary one)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args(argv)
    tmp = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="bench-video-scale-"))
    tmp.mkdir(parents=True, exist_ok=True)
    old_src = None if a.no_old else (Path(a.old_src) if a.old_src else old_source(tmp))
    rows = []
    for n in a.frames:
        t0 = time.perf_counter()
        video = make_video(tmp / f"video-{n}", n)
        cfg = config(video)
        print(f"# {n} frames made in {time.perf_counter() - t0:.0f} s", flush=True)
        impls = [] if a.no_new else [("new", ROOT, True)]
        if old_src is not None and n in a.old_frames:
            impls.append(("old", old_src, False))
        for name, src, new in impls:
            run_dir = tmp / f"run-{name}-{n}-{a.engine}"
            if run_dir.exists():
                import shutil

                shutil.rmtree(run_dir)
            r = run_one(src, video, cfg, run_dir, new=new, engine=a.engine, workers=a.workers, timeout=a.timeout)
            r.update(frames=n, impl=name)
            rows.append(r)
            print("#", json.dumps(r), flush=True)
    print()
    print("| frames | code | init s (CPU) | round s (CPU) | select s | fine-tune s | inference s | peak RSS MB | "
          "label maps on disk (1 round) | per-pixel arrays held | mIoU after round 1 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['frames']:,} | {r['impl']} | {r['error']} | | | | | | | | |")
            continue
        s = r["seconds"]
        held = "one chunk" if r["impl"] == "new" else f"{held_old(r['frames']) / 2 ** 20:,.0f} MB"
        print(f"| {r['frames']:,} | {r['impl']} | {r['init_s']:.1f} ({r['init_cpu']:.1f}) | {r['round_s']:.1f} "
              f"({r['round_cpu']:.1f}) | {s.get('select', 0):.1f} | "
              f"{s.get('finetune', 0):.1f} | {s.get('inference', 0):.1f} | {r['rss_mb']:,.0f} | "
              f"{r['label_disk'] / 2 ** 20:.2f} MB | {held} | {r['miou']:.3f} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
