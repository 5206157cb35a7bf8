"""Aggregation accuracy and run time on simulated crowds: crowdprop vs crowd-kit.

Each scenario draws (seeded) a truth for every task (P(yes) = 0.65, like detector
masks that are mostly right) and a pool of workers of four kinds:

* good: accuracy uniform in [0.85, 0.98]
* spammer: answers "yes" with a personal rate uniform in [0.5, 1.0], ignoring the image
* sloppy: accuracy 0.75
* adversarial: accuracy uniform in [0.1, 0.3] (answers mostly reversed)

Each task is answered by k distinct workers drawn uniformly. Accuracy is the share
of tasks whose aggregated label equals the truth; time is the best of --repeats
fits (seconds, wall clock, one core). crowd-kit rows appear when crowd-kit is
installed (its Wawa and GoldMajorityVote are skipped: they fail with current
scikit-learn). The last rows time crowdprop alone on a table of --scale answers.

    python benchmarks/bench_aggregation.py                # the README table
    python benchmarks/bench_aggregation.py --tasks 2000 --scale 0   # quick look
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

from crowdprop.quality import DawidSkene, MajorityVote, OneCoinDawidSkene

MIXES = {
    # name: (good, spammer, sloppy, adversarial) shares
    "20% spam, 10% sloppy": (0.70, 0.20, 0.10, 0.00),
    "+10% adversarial": (0.60, 0.20, 0.10, 0.10),
    "+25% adversarial": (0.45, 0.20, 0.10, 0.25),
}


def simulate(n_tasks: int, k: int, n_workers: int, mix, rng: np.random.Generator):
    """Answers (long DataFrame) and truth (ndarray, shape (n_tasks,))."""
    z = (rng.random(n_tasks) < 0.65).astype(np.int64)
    kinds = rng.choice(4, size=n_workers, p=np.asarray(mix) / sum(mix))
    acc = np.where(kinds == 0, rng.uniform(0.85, 0.98, n_workers),
                   np.where(kinds == 2, 0.75, rng.uniform(0.1, 0.3, n_workers)))
    yes_rate = rng.uniform(0.5, 1.0, n_workers)
    # k distinct workers per task: redraw the rows that picked someone twice
    w = rng.integers(0, n_workers, (n_tasks, k))
    while True:
        s = np.sort(w, axis=1)
        dup = (s[:, 1:] == s[:, :-1]).any(axis=1)
        if not dup.any():
            break
        w[dup] = rng.integers(0, n_workers, (int(dup.sum()), k))
    w = w.ravel()
    t = np.repeat(np.arange(n_tasks), k)
    u = rng.random(len(t))
    right = np.where(u < acc[w], z[t], 1 - z[t])
    spam = (u < yes_rate[w]).astype(np.int64)
    y = np.where(kinds[w] == 1, spam, right)
    df = pd.DataFrame({"task": t, "worker": np.char.add("w", w.astype(str)), "label": y})
    return df, z


def methods(with_crowdkit: bool):
    out = [
        ("MV", "crowdprop", lambda: MajorityVote(random_state=0)),
        ("one-coin DS", "crowdprop", lambda: OneCoinDawidSkene()),
        ("DS", "crowdprop", lambda: DawidSkene()),
    ]
    if with_crowdkit:
        from crowdkit.aggregation import DawidSkene as CkDS
        from crowdkit.aggregation import MajorityVote as CkMV
        from crowdkit.aggregation import OneCoinDawidSkene as CkOne

        out += [
            ("MV", "crowd-kit", lambda: CkMV()),
            ("one-coin DS", "crowd-kit", lambda: CkOne(n_iter=100)),
            ("DS", "crowd-kit", lambda: CkDS(n_iter=100)),
        ]
    return out


def run_one(make, df: pd.DataFrame, repeats: int):
    best = np.inf
    labels = None
    for _ in range(repeats):
        est = make()
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            labels = est.fit_predict(df)
        best = min(best, time.perf_counter() - t0)
    return labels, best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scale", type=int, default=1_000_000, help="answers in the timing-only rows (0: skip)")
    ap.add_argument("--no-crowdkit", action="store_true")
    args = ap.parse_args(argv)

    try:
        import crowdkit  # noqa: F401
        with_ck = not args.no_crowdkit
    except ImportError:
        with_ck = False

    rows = []
    for mix_name, mix in MIXES.items():
        for k in (3, 5):
            df, z = simulate(args.tasks, k, args.workers, mix, np.random.default_rng(args.seed))
            for name, impl, make in methods(with_ck):
                labels, sec = run_one(make, df, args.repeats)
                acc = float((labels.sort_index().to_numpy() == z).mean())
                rows.append({"workers mix": mix_name, "k": k, "answers": len(df), "method": name,
                             "impl": impl, "accuracy": acc, "seconds": sec})
    if args.scale:
        k = 5
        n_tasks = args.scale // k
        df, z = simulate(n_tasks, k, 1000, MIXES["+10% adversarial"], np.random.default_rng(args.seed))
        for name, impl, make in methods(False):
            labels, sec = run_one(make, df, 1)
            acc = float((labels.sort_index().to_numpy() == z).mean())
            rows.append({"workers mix": "+10% adversarial, 1000 workers", "k": k, "answers": len(df),
                         "method": name, "impl": impl, "accuracy": acc, "seconds": sec})
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(table.to_string(index=False, formatters={"accuracy": "{:.4f}".format,
                                                        "seconds": "{:.3f}".format}))


if __name__ == "__main__":
    main()
