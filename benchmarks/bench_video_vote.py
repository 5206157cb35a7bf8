"""Votes over imperfect workers in video mode: one answer per region, three, or the adaptive vote.

On the shipped sample (16 frames, superpixel units, active selection, 4 rounds of 60 planned
clicks) with the replay's default workers (25, 95 % +/- 3 % accurate, qualification test of 10
golds at 0.9), for each variant and seed: the whole video's mIoU after each round against the
clicks spent (every approved label answer is a click, as a share of labeling every frame by
hand), the share of regions people labeled whose label is wrong, and the cost.

Variants: ``one`` (assignments_per_hit = 1), ``three`` (= 3, each region by an outright majority),
``adaptive`` (one answer, asked again while answers disagree or the lone answer's worker has a gold
accuracy under vote_trust = 0.9, at most 3 answers) and ``adaptive2`` (two answers first, a third
only where they disagree), and ``adaptive-0.8`` (vote_trust = 0.8).

    python benchmarks/bench_video_vote.py [--seeds 3] [--jobs 2] [--out DIR] [--variants one,three,...]

Run directories already under --out are continued, not made again.

Prints a table per variant (mean over seeds): mIoU @ clicks after each round, the mIoU at 8, 12 and
15 % of the manual clicks (linear between rounds; a run that stopped short of a share is left out
and counted), and after the last round the regions people labeled, the share of them labeled
wrong, and the cost.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from concurrent.futures import ProcessPoolExecutor
from importlib.resources import files
from pathlib import Path

import numpy as np

VARIANTS = {
    "one": {"crowd": {"assignments_per_hit": 1}, "video": {"vote": "fixed"}},
    "three": {"crowd": {"assignments_per_hit": 3}, "video": {"vote": "fixed"}},
    "adaptive": {"crowd": {"assignments_per_hit": 1},
                 "video": {"vote": "adaptive", "vote_max": 3, "vote_trust": 0.9}},
    "adaptive2": {"crowd": {"assignments_per_hit": 2}, "video": {"vote": "adaptive", "vote_max": 3}},
    "adaptive-0.8": {"crowd": {"assignments_per_hit": 1},
                     "video": {"vote": "adaptive", "vote_max": 3, "vote_trust": 0.8}},
}


def one_run(task: dict) -> dict:
    import torch

    from crowdprop.video.hits import region_truth
    from crowdprop.video.run import VideoRun, human_labels, init_video, run

    torch.set_num_threads(1)
    d = Path(str(files("crowdprop.data") / "video_sample"))
    out = Path(task["dir"]) / f"{task['variant']}-{task['seed']}"
    if not (out / "campaign.json").exists():  # a run directory made before is continued (or read)
        init_video(out, frames=d / "frames", labels=d / "labels.json", gt=d / "gt", config=d / "config.toml",
                   seed=task["seed"], overrides=VARIANTS[task["variant"]])
    run(out)
    vr = VideoRun(out).require()
    truth = region_truth(vr)
    ans = vr.table("answers")
    rounds = []
    for m in vr.metrics():
        upto = ans.loc[ans["round"] <= m["round"]] if len(ans) else ans
        lut = human_labels(np.arange(len(truth)), upto) if len(upto) else np.full(len(truth), -1)
        labeled = lut >= 0
        wrong = float((lut[labeled] != truth[labeled]).mean()) if labeled.any() else 0.0
        rounds.append({"round": m["round"], "miou": m["miou"], "clicks_share": m["clicks_share"],
                       "cents": m["cents"], "labeled": int(labeled.sum()), "wrong": wrong})
    return {"variant": task["variant"], "seed": task["seed"], "rounds": rounds}


SHARES = (0.08, 0.12, 0.15)
"""Clicks (share of labeling every frame by hand) at which the variants are compared."""


def at(rounds: list[dict], share: float) -> float:
    """mIoU at ``share`` of the manual clicks, linear between rounds (NaN past the last round)."""
    x = [r["clicks_share"] for r in rounds]
    y = [r["miou"] for r in rounds]
    return float(np.interp(share, x, y)) if share <= x[-1] else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", help="folder for the run directories and runs.json (default: a temporary one)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma list of " + ", ".join(VARIANTS))
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant {unknown[0]!r}")
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-video-vote-"))
    out.mkdir(parents=True, exist_ok=True)
    tasks = [{"variant": v, "seed": s, "dir": str(out)} for s in range(args.seeds) for v in variants]
    with ProcessPoolExecutor(args.jobs) as ex:
        runs = list(ex.map(one_run, tasks))
    (out / "runs.json").write_text(json.dumps(runs, indent=1))
    print(f"{len(runs)} runs under {out}\n")
    print("| variant | round 1 | round 2 | round 3 | round 4 | mIoU @ 8 % | @ 12 % | @ 15 % | regions labeled "
          "| wrong labels | cost |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for v in variants:
        rs = [r["rounds"] for r in runs if r["variant"] == v]
        cells = []
        for k in range(1, 5):
            got = [x[k] for x in rs if len(x) > k]
            cells.append(f"{np.mean([g['miou'] for g in got]):.3f} @ "
                         f"{100 * np.mean([g['clicks_share'] for g in got]):.1f} %" if got else "-")
        for share in SHARES:
            got = [at(x, share) for x in rs]
            ok = [g for g in got if np.isfinite(g)]
            cells.append((f"{np.mean(ok):.3f}" if ok else "-") + ("" if len(ok) == len(got) else
                                                                  f" ({len(ok)}/{len(got)} runs)"))
        labeled = np.mean([x[-1]["labeled"] for x in rs])
        wrong = np.mean([x[-1]["wrong"] for x in rs])
        cost = np.mean([x[-1]["cents"] for x in rs]) / 100
        print(f"| {v} | " + " | ".join(cells) + f" | {labeled:.0f} | {100 * wrong:.1f} % | ${cost:.2f} |")


if __name__ == "__main__":
    main()
