"""Video mode on held-out synthetic clips: mIoU of the whole video against clicks.

For each clip x seed x (granularity, method): ``crowdprop video`` init + rounds with simulated
workers, as ``crowdprop video replay`` does. Prints a table per granularity and method:
mIoU at each share of clicks (the click model of crowdprop.video.crowd: one click per answered
region, labeling by hand = one click per superpixel of every frame), the clicks needed to reach
95 % of the mIoU of full manual labeling (median over clips x seeds, bootstrap 95 % interval),
the share saved against the best baseline, seconds per round (selection with its inference,
fine-tuning, inference) and peak memory. Writes the per-run rows to OUT/runs.jsonl (a rerun continues
from them) and a figure.

    python benchmarks/bench_video.py                      # 10 clips x 3 seeds, every method
    python benchmarks/bench_video.py --clips 2 --seeds 1  # a quick look

The network is pretrained here by crowdprop.video.model.pretrain on ``pretrain``-domain clips
(``--model PATH`` reuses a checkpoint). Runs go to 2 worker processes (``--workers``), each
torch on one thread.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

CONFIGS = [(g, m) for g in ("superpixel", "patch", "frame") for m in ("active", "uncertainty", "random")] + \
    [("frame", "keyframe")]
TARGET = 0.95


def one_run(task: dict) -> dict:
    import torch

    from crowdprop.video.run import init_video, run

    torch.set_num_threads(1)
    d = Path(tempfile.mkdtemp(prefix="bench-video-"))
    try:
        ov = {"video": {"granularity": task["granularity"], "method": task["method"], **task["video"]},
              "simulation": task["simulation"], "crowd": {"questions_per_hit": 20, "golds_per_hit": 2,
                                                          "reward_usd": 0.05}}
        t0 = time.perf_counter()
        vr = init_video(d / "run", frames=Path(task["clip"]) / "frames", labels=Path(task["clip"]) / "labels.json",
                        model=task["model"], gt=Path(task["clip"]) / "gt", seed=task["seed"], overrides=ov)
        t_init = time.perf_counter() - t0
        run(vr.path)
        ms = vr.metrics()
        return {**{k: task[k] for k in ("clip", "seed", "granularity", "method")}, "init_s": t_init,
                "manual_clicks": ms[-1]["manual_clicks"], "miou_manual": ms[-1]["miou_manual"],
                "curve": [(m["clicks_share"], m["miou"]) for m in ms],
                "seconds": [m.get("seconds", {}) for m in ms[1:]],
                "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def clicks_to_reach(curve, goal: float) -> float:
    """Share of clicks where the mIoU curve first reaches ``goal`` (linear between rounds), inf if never."""
    prev = None
    for x, y in curve:
        if y >= goal:
            if prev is None or prev[1] >= goal:
                return x
            x0, y0 = prev
            return x0 + (goal - y0) / (y - y0) * (x - x0)
        prev = (x, y)
    return math.inf


def median_ci(values, rng, n_boot: int = 2000):
    v = np.asarray(values, float)
    boots = np.median(rng.choice(v, size=(n_boot, len(v)), replace=True), axis=1)
    return float(np.median(v)), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def fmt_pct(x: float) -> str:
    return "not reached" if not math.isfinite(x) else f"{100 * x:.1f} %"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--share-per-round", type=float, default=0.05,
                    help="clicks per round as a share of full manual labeling")
    ap.add_argument("--finetune-steps", type=int, default=15)
    ap.add_argument("--finetune-from", choices=["base", "previous"], default="base")
    ap.add_argument("--accuracy", type=float, default=1.0, help="simulated workers' accuracy")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", help="checkpoint (default: pretrain one here)")
    ap.add_argument("--configs", help="comma list of granularity:method (default: all)")
    ap.add_argument("--report-only", action="store_true", help="report the runs in OUT/runs.jsonl, run nothing")
    ap.add_argument("--out", default="benchmarks/out/video", help="folder for rows.csv, curves.json, figure")
    ap.add_argument("--figure", default="docs/video_miou_clicks.png")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from crowdprop.video.synth import make_clips, write_clip

    model = args.model
    if model is None:
        import torch

        from crowdprop.video import model as vmodel

        model = str(out / "pretrained.pt")
        if not Path(model).exists():
            torch.set_num_threads(1)
            t = time.perf_counter()
            vmodel.save(vmodel.pretrain(clips=24, steps=500, seed=0), model)
            print(f"pretrained in {time.perf_counter() - t:.0f} s -> {model}", flush=True)
    clips_dir = out / "clips"
    clips = make_clips(args.clips, 1000, domain="heldout", frames=args.frames, size=args.size)
    paths = [str(write_clip(c, clips_dir / f"clip-{i}")) for i, c in enumerate(clips)]
    sp_px = 25
    manual = args.frames * args.size * args.size / sp_px
    video = {"rounds": args.rounds, "clicks_per_round": max(1, int(round(args.share_per_round * manual))),
             "finetune_steps": args.finetune_steps, "patch": 8, "superpixel_px": sp_px,
             "finetune_from": args.finetune_from}
    sim = {"accuracy": args.accuracy, "accuracy_spread": 0.0 if args.accuracy >= 1 else 0.03}
    configs = CONFIGS if not args.configs else [tuple(c.split(":")) for c in args.configs.split(",")]
    tasks = [{"clip": p, "seed": s, "granularity": g, "method": m, "model": model, "video": video,
              "simulation": sim} for p in paths for s in range(args.seeds) for g, m in configs]
    rows_path = out / "runs.jsonl"
    done = {}
    if rows_path.exists():
        for line in rows_path.read_text().splitlines():
            r = json.loads(line)
            done[(r["clip"], r["seed"], r["granularity"], r["method"])] = r
    todo = [t for t in tasks if (t["clip"], t["seed"], t["granularity"], t["method"]) not in done]
    if args.report_only:
        # only the clip x seed pairs that every configuration finished
        pairs = {(t["clip"], t["seed"]) for t in tasks}
        full = {p for p in pairs if all((p[0], p[1], g, m) in done for g, m in configs)}
        tasks = [t for t in tasks if (t["clip"], t["seed"]) in full]
        todo = []
    print(f"{len(tasks)} runs ({len(todo)} to do) on {args.workers} processes", flush=True)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as ex, open(rows_path, "a") as fh:
        futs = [ex.submit(one_run, t) for t in todo]
        for k, f in enumerate(as_completed(futs), 1):
            r = f.result()
            done[(r["clip"], r["seed"], r["granularity"], r["method"])] = r
            fh.write(json.dumps(r) + "\n")
            fh.flush()
            if k % 10 == 0 or k == len(futs):
                print(f"  {k}/{len(futs)} runs, {time.perf_counter() - t0:.0f} s", flush=True)
    runs = [done[(t["clip"], t["seed"], t["granularity"], t["method"])] for t in tasks]
    report(runs, configs, args, out)
    return 0


def report(runs, configs, args, out: Path) -> None:
    rng = np.random.default_rng(0)
    by = {c: [r for r in runs if (r["granularity"], r["method"]) == c] for c in configs}
    n_rounds = args.rounds
    n_pairs = len({(r["clip"], r["seed"]) for r in runs})
    print(f"\nmIoU of the whole video by round (mean over {n_pairs} clip x seed pairs); "
          f"clicks as % of labeling every frame by hand")
    print("| granularity | method | " + " | ".join(f"round {k}" for k in range(n_rounds + 1)) + " |")
    print("|---|---|" + "---|" * (n_rounds + 1))
    for c, rs in by.items():
        cells = []
        for k in range(n_rounds + 1):
            pts = [r["curve"][k] for r in rs if len(r["curve"]) > k]
            cells.append(f"{np.mean([p[1] for p in pts]):.3f} @ {100 * np.mean([p[0] for p in pts]):.0f} %")
        print(f"| {c[0]} | {c[1]} | " + " | ".join(cells) + " |")
    manual = np.mean([r["miou_manual"] for r in runs])
    print(f"\nfull manual labeling (one click per superpixel): mIoU {manual:.3f} (mean); "
          f"target {TARGET:.0%} of each clip's")
    need = {}
    print("\n| granularity | method | clicks to 95 % of manual mIoU: median [95 % CI] | reached | "
          "s/round select | s/round fine-tune | s/round inference | peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    for c, rs in by.items():
        vals = [clicks_to_reach(r["curve"], TARGET * r["miou_manual"]) for r in rs]
        med, lo, hi = median_ci(vals, rng)
        need[c] = med
        sec = {k: np.mean([s.get(k, 0.0) for r in rs for s in r["seconds"]]) for k in ("select", "finetune",
                                                                                      "inference")}
        reached = sum(math.isfinite(v) for v in vals)
        print(f"| {c[0]} | {c[1]} | {fmt_pct(med)} [{fmt_pct(lo)}, {fmt_pct(hi)}] | {reached}/{len(vals)} | "
              f"{sec['select']:.2f} | {sec['finetune']:.2f} | {sec['inference']:.2f} | "
              f"{max(r['peak_mb'] for r in rs):.0f} |")
    for g in sorted({c[0] for c in configs}, key=["superpixel", "patch", "frame"].index):
        a = need.get((g, "active"), math.nan)
        bases = {c: need[c] for c in configs if c[0] == g and c[1] != "active"}
        if bases and math.isfinite(a):
            bc = min(bases, key=lambda c: bases[c])
            b = bases[bc]
            print(f"{g}: active {fmt_pct(a)} against the best baseline {bc[1]} {fmt_pct(b)}"
                  + ((f": {1 - a / b:.0%} fewer clicks" if a <= b else f": {a / b - 1:.0%} more clicks")
                     if math.isfinite(b) and b > 0 else ""))
    act = [c for c in configs if c[1] == "active"]
    base = [c for c in configs if c[1] != "active"]
    if act and base:
        best_a = min(act, key=lambda c: need[c])
        best_b = min(base, key=lambda c: need[c])
        a, b = need[best_a], need[best_b]
        saved = 1 - a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else float("nan")
        print(f"\nbest method setting {best_a}: {fmt_pct(a)}; best baseline {best_b}: {fmt_pct(b)}; "
              f"clicks saved {saved:.0%}" if math.isfinite(saved) else
              f"\nbest method setting {best_a}: {fmt_pct(a)}; best baseline {best_b}: {fmt_pct(b)}")
    print(f"flow (DIS, both directions) and SLIC at init: {np.mean([r['init_s'] for r in runs]):.2f} s per clip "
          f"(with the base network's inference)")
    (out / "summary.json").write_text(json.dumps({f"{g}:{m}": need[(g, m)] for g, m in configs}, indent=1))
    figure(by, args, Path(args.figure), manual)


def figure(by, args, path: Path, manual: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grans = sorted({c[0] for c in by}, key=["superpixel", "patch", "frame"].index)
    fig, axes = plt.subplots(1, len(grans), figsize=(4.2 * len(grans), 3.4), sharey=True, squeeze=False)
    for ax, g in zip(axes[0], grans):
        for c, rs in by.items():
            if c[0] != g:
                continue
            k = min(len(r["curve"]) for r in rs)
            xs = [100 * np.mean([r["curve"][i][0] for r in rs]) for i in range(k)]
            ys = [np.mean([r["curve"][i][1] for r in rs]) for i in range(k)]
            ax.plot(xs, ys, "o-", ms=3, label=c[1])
        ax.axhline(manual, ls="--", c="k", lw=1, label="full manual")
        ax.axhline(TARGET * manual, ls=":", c="gray", lw=1, label="95 % of manual")
        ax.set_title(f"{g} units")
        ax.set_xlabel("clicks, % of labeling every frame by hand")
    axes[0][0].set_ylabel("mIoU of the whole video")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"figure: {path}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
