"""Policies compared on the same data and seeds, and one controller round at 1M masks.

    python benchmarks/bench_campaign.py            # sample, 10k, 100k synthetic; 1M round
    python benchmarks/bench_campaign.py --quick    # sample and 10k only

Prints one table per part. Each data set is initialised once (trees do not depend on
the policy); every policy then runs on a copy of that run directory with its own config.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from crowdprop.crowd.factory import simulated_backend
from crowdprop.campaign.init import init_run
from crowdprop.campaign.loop import Campaign
from crowdprop.campaign.store import RunDir
from crowdprop.commands.replay import sample_paths
from crowdprop.config import PolicySection
from crowdprop.policy.controller import decide, initial_status, mask_status, node_mean, plan_round
from crowdprop.replay.synth import make_synthetic, write_synthetic
from crowdprop.report.summary import compute_report
from crowdprop.tree import Forest

POLICIES = {
    "paper": {},
    "paper+strat": {"sampling": "stratified"},
    "sequential": {"name": "sequential"},
    "sequential+strat": {"name": "sequential", "sampling": "stratified"},
}


def run_policies(base: RunDir, label: str, seeds, work: Path):
    rows = []
    for pname, over in POLICIES.items():
        for seed in seeds:
            d = work / f"{label}-{pname}-{seed}"
            shutil.copytree(base.path, d, ignore=shutil.ignore_patterns("state", "journal", "report.json"))
            cfg = json.loads((d / "config.json").read_text())
            cfg["policy"].update(over)
            cfg["campaign"]["seed"] = seed
            (d / "config.json").write_text(json.dumps(cfg))
            rd = RunDir(d)
            t0 = time.perf_counter()
            Campaign(rd, simulated_backend(rd), progress=False).run()
            wall = time.perf_counter() - t0
            t = compute_report(rd)["total"]
            rows.append((label, pname, seed, t, wall))
            shutil.rmtree(d)
    return rows


def print_policy_table(rows):
    print(f"{'data':>8} {'policy':>17} {'questions':>9} {'accepted':>8} {'masks/q':>7} {'true.prec':>9} "
          f"{'est.prec [95% CI]':>22} {'mIoU':>6} {'recall':>6} {'usd':>7} {'wall s':>6}")
    agg = {}
    for label, pname, seed, t, wall in rows:
        agg.setdefault((label, pname), []).append((t, wall))
    for (label, pname), vals in agg.items():
        def m(k):
            xs = [v[0][k] for v in vals if v[0].get(k) is not None]
            return float(np.mean(xs)) if xs else float("nan")
        est = f"{m('est_precision'):.3f} [{m('est_precision_lo'):.3f},{m('est_precision_hi'):.3f}]"
        print(f"{label:>8} {pname:>17} {m('questions'):>9.0f} {m('accepted'):>8.0f} {m('masks_per_question'):>7.2f} "
              f"{m('true_precision'):>9.3f} {est:>22} {m('mean_iou'):>6.3f} {m('recall'):>6.3f} {m('usd'):>7.2f} "
              f"{np.mean([v[1] for v in vals]):>6.1f}")
    sys.stdout.flush()


def balanced_forest(category: np.ndarray) -> Forest:
    """A valid forest over ``category`` built by halving each class's rows (for timing only)."""
    order = np.argsort(category, kind="stable")
    cats, starts = np.unique(category[order], return_index=True)
    ends = np.r_[starts[1:], len(order)]
    parent, left, right, start, end, cat, depth = [], [], [], [], [], [], []
    for c, s0, e0 in zip(cats, starts, ends):
        stack = [(s0, e0, -1, 0)]
        while stack:
            s, e, p, dpt = stack.pop()
            j = len(parent)
            parent.append(p), left.append(-1), right.append(-1), start.append(s), end.append(e)
            cat.append(c), depth.append(dpt)
            if p >= 0:
                if left[p] < 0:
                    left[p] = j
                else:
                    right[p] = j
            if e - s > 1:
                mid = (s + e) // 2
                stack.append((mid, e, j, dpt + 1))
                stack.append((s, mid, j, dpt + 1))
    # the stack pushes the right half first then pops the left: left child gets the lower id
    return Forest(order=order.astype(np.int64), category=np.array(cat, np.int64), parent=np.array(parent, np.int64),
                  left=np.array(left, np.int64), right=np.array(right, np.int64), start=np.array(start, np.int64),
                  end=np.array(end, np.int64), height=np.zeros(len(parent)), depth=np.array(depth, np.int32))


def controller_round(n: int = 1_000_000, classes: int = 80):
    rng = np.random.default_rng(0)
    category = rng.integers(0, classes, n)
    t0 = time.perf_counter()
    forest = balanced_forest(category)
    t_forest = time.perf_counter() - t0
    quality = rng.random(n)
    label_p = np.full(n, np.nan)
    label_p[rng.choice(n, n // 20, replace=False)] = rng.integers(0, 2, n // 20)
    status = initial_status(forest)
    # open a deep frontier: split the top levels
    for _ in range(8):
        from crowdprop.policy.controller import apply_split
        from crowdprop.schema import NODE_OPEN
        apply_split(forest, status, np.flatnonzero(status == NODE_OPEN))
    cfg = PolicySection(k_pa=0.0)
    t0 = time.perf_counter()
    nq = node_mean(forest, quality)
    plan = plan_round(forest, status, nq, label_p, cfg, rng)
    t_plan = time.perf_counter() - t0
    for node, rows in plan.asks.items():
        label_p[rows] = 1.0
    t0 = time.perf_counter()
    decide(forest, np.array(plan.nodes), label_p, cfg, nq)
    t_decide = time.perf_counter() - t0
    t0 = time.perf_counter()
    mask_status(forest, status, label_p)
    t_status = time.perf_counter() - t0
    print(f"{'masks':>9} {'nodes':>9} {'candidates':>10} {'questions':>9} {'plan s':>7} {'decide s':>8} "
          f"{'status s':>8} {'round s':>7}")
    print(f"{n:>9} {forest.n_nodes:>9} {len(plan.nodes):>10} {plan.n_questions:>9} {t_plan:>7.2f} {t_decide:>8.2f} "
          f"{t_status:>8.2f} {t_plan + t_decide + t_status:>7.2f}")
    print(f"(forest built by halving in {t_forest:.1f} s, not part of a round)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crowdprop-bench-"))
    seeds = list(range(args.seeds))
    try:
        rows = []
        preds, gt, sample_cfg = sample_paths()
        base = init_run(work / "sample", predictions=preds, gt=gt, config_path=sample_cfg, crowd={"kind": "simulated"})
        rows += run_policies(base, "sample", seeds, work)
        sizes = [10_000] if args.quick else [10_000, 100_000]
        for n in sizes:
            t0 = time.perf_counter()
            s = make_synthetic(n, 20, seed=7)
            write_synthetic(s, work / f"syn{n}")
            base = init_run(work / f"run{n}", predictions=work / f"syn{n}/predictions.json", gt=work / f"syn{n}/gt.json",
                            features=work / f"syn{n}/features.npy", crowd={"kind": "simulated"})
            print(f"# synthetic {n}: made and initialised in {time.perf_counter() - t0:.0f} s", flush=True)
            rows += run_policies(base, f"syn{n // 1000}k", seeds if n <= 10_000 else seeds[:1], work)
        print_policy_table(rows)
        print()
        controller_round()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
