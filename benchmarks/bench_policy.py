"""The paper's policy against the target policy, with audited precision, on two generators.

    python benchmarks/bench_policy.py                       # sample, 10k and 100k of both generators
    python benchmarks/bench_policy.py --sizes 10000 --seeds 20 --coverage --jobs 3
    python benchmarks/bench_policy.py --sizes 1000000 --generators modes --seeds 1
    python benchmarks/bench_policy.py --sizes 1000000 --seeds 1 --save runs.jsonl   # each run kept as it ends
    python benchmarks/bench_policy.py --load runs.jsonl --finish                     # the tables from saved runs

Every policy runs on a copy of one initialised run directory per data set (trees do not
depend on the policy), same seeds, simulated workers 95 % accurate, in process. Columns:
questions (ordinary = cluster, active and random questions; audit; gold, counted apart),
accepted masks, masks per non-gold question, open masks, true precision of the accepted
masks (replay truth), the audited estimate with its 95 % interval, the posterior estimate
built from the deciding answers (what the report said before audits), wall seconds.
With ``--coverage`` it also prints, per data set and policy, the share of seeds whose audited
interval contains the true precision, and the mean absolute error of the estimate.
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
from crowdprop.report.summary import compute_report

POLICIES = {"paper": {"name": "paper"}, "target": {"name": "target"}}


def make_data(generator: str, n: int, classes: int, seed: int, out: Path) -> Path:
    if generator == "mixed":
        from crowdprop.replay.synth_mixed import make_mixed, write_mixed  # noqa: F401

        make, write = make_mixed, write_mixed
    else:
        from crowdprop.replay.synth import make_synthetic as make, write_synthetic as write
    write(make(n, classes, seed=seed), out)
    return out


def run_one(base: RunDir | Path, work: Path, label: str, pname: str, seed: int, policy: dict | None = None) -> dict:
    d = work / f"{label}-{pname}-{seed}".replace(" ", "_")
    src = base.path if isinstance(base, RunDir) else base
    shutil.copytree(src, d, ignore=shutil.ignore_patterns("state", "journal", "report.json"))
    cfg = json.loads((d / "config.json").read_text())
    spec = dict(POLICIES[pname] if policy is None else policy)
    # keys named "campaign.KEY" go to [campaign] (e.g. campaign.stop_below_share), the rest to [policy]
    for k in [k for k in spec if k.startswith("campaign.")]:
        cfg["campaign"][k.split(".", 1)[1]] = spec.pop(k)
    cfg["policy"].update(spec)
    cfg["campaign"]["seed"] = seed
    (d / "config.json").write_text(json.dumps(cfg))
    rd = RunDir(d)
    t0 = time.perf_counter()
    Campaign(rd, simulated_backend(rd), progress=False).run()
    wall = time.perf_counter() - t0
    rep = compute_report(rd)
    t = rep["total"]
    # Masks left open, and how many of them are correct (replay truth), for the cost of finishing
    # the data set by asking each open mask once (--finish).
    import pandas as pd

    labels = pd.read_parquet(d / "labels.parquet", columns=["mask_row", "label"])
    iou = pd.read_parquet(d / "masks.parquet", columns=["gt_iou"])["gt_iou"].fillna(0.0).to_numpy()
    correct = iou > rd.config.campaign.correct_iou
    open_rows = labels.loc[labels["label"] == "open", "mask_row"].to_numpy()
    t["open_correct"] = int(correct[open_rows].sum())
    shutil.rmtree(d)
    # The campaign's course: non-gold questions asked so far (audits included), masks accepted and
    # their true precision after each round, for the comparison at equal spend (--at-paper-budget).
    t["curve"] = [(r["cum_questions"], r["accepted"], r.get("true_precision")) for r in rep["rounds"]]
    t["wall"] = wall
    t["seed"] = seed
    return t


def fmt(rows: list[tuple[str, str, dict]]) -> None:
    print(f"{'data':>12} {'policy':>7} {'ordinary':>8} {'audit':>6} {'gold':>6} {'accepted':>8} {'masks/q':>7} "
          f"{'open':>6} {'true':>6} {'audited [95% CI]':>22} {'posterior':>9} {'rounds':>6} {'wall s':>7}")
    agg: dict = {}
    for label, pname, t in rows:
        agg.setdefault((label, pname), []).append(t)
    for (label, pname), ts in agg.items():
        def m(k):
            xs = [t[k] for t in ts if t.get(k) is not None and not (isinstance(t[k], float) and np.isnan(t[k]))]
            return float(np.mean(xs)) if xs else float("nan")
        ordinary = m("questions") - m("audit_questions")
        ci = f"{m('est_precision'):.3f} [{m('est_precision_lo'):.3f},{m('est_precision_hi'):.3f}]"
        print(f"{label:>12} {pname:>7} {ordinary:>8.0f} {m('audit_questions'):>6.0f} {m('golds'):>6.0f} "
              f"{m('accepted'):>8.0f} {m('masks_per_question'):>7.2f} {m('open'):>6.0f} {m('true_precision'):>6.3f} "
              f"{ci:>22} {m('posterior_precision'):>9.3f} {m('rounds'):>6.0f} {m('wall'):>7.1f}")
    sys.stdout.flush()


def coverage(rows) -> None:
    """Per data set and policy: the share of seeds whose audited interval contains the truth, the
    mean absolute and the mean signed error (a bias shows in the sign), the posterior's coverage,
    and per decision source the mean signed error of its audited estimate."""
    print(f"{'data':>12} {'policy':>7} {'seeds':>5} {'covered':>7} {'mean |est-true|':>15} {'mean est-true':>13} "
          f"{'posterior covered':>17}  {'est-true by source (cluster / verifier / direct)':>40}")
    agg: dict = {}
    for label, pname, t in rows:
        agg.setdefault((label, pname), []).append(t)
    for (label, pname), ts in agg.items():
        ok = [t for t in ts if t.get("true_precision") is not None]
        cov = np.mean([t["est_precision_lo"] <= t["true_precision"] <= t["est_precision_hi"] for t in ok])
        pcov = np.mean([t["posterior_precision_lo"] <= t["true_precision"] <= t["posterior_precision_hi"] for t in ok])
        err = np.mean([abs(t["est_precision"] - t["true_precision"]) for t in ok])
        bias = np.mean([t["est_precision"] - t["true_precision"] for t in ok])
        by = []
        for src in ("cluster", "verifier", "direct"):
            e = [t["by_source"][src]["est"] - t["by_source"][src]["true_precision"] for t in ok
                 if (t.get("by_source") or {}).get(src, {}).get("est") is not None
                 and t["by_source"][src].get("true_precision") is not None]
            by.append(f"{np.mean(e):+.3f}" if e else "-")
        print(f"{label:>12} {pname:>7} {len(ok):>5} {cov:>7.2f} {err:>15.3f} {bias:>+13.3f} {pcov:>17.2f}  "
              f"{' / '.join(by):>40}")


def at_budget(curve: list, q: float) -> tuple[float, float | None]:
    """Masks accepted, and their true precision, once ``q`` non-gold questions were asked: the
    round that reached ``q`` counted in proportion (linear between round ends; a campaign that
    ended before it counts as it ended)."""
    prev_q, prev_acc, prev_p = 0.0, 0.0, None
    for cq, acc, p in curve:
        if cq >= q:
            f = (q - prev_q) / (cq - prev_q) if cq > prev_q else 1.0
            a = prev_acc + f * (acc - prev_acc)
            if p is None or prev_p is None:
                return a, p if f >= 0.5 else prev_p
            return a, (prev_acc * prev_p + (a - prev_acc) * p) / a if a else None
        prev_q, prev_acc, prev_p = cq, acc, p
    return prev_acc, prev_p


def budget_table(rows, reference: str = "paper") -> None:
    """Each policy stopped when it has asked as many non-gold questions as ``reference`` asked in
    its whole campaign (same data, same seed): masks accepted by then and their true precision."""
    print(f"{'data':>12} {'policy':>7} {'seeds':>5} {'budget q':>8} {'accepted':>8} {'vs ' + reference:>9} "
          f"{'true':>6} {reference + ' true':>10}")
    ref = {(label, t["seed"]): t for label, p, t in rows if p == reference}
    agg: dict = {}
    for label, pname, t in rows:
        if pname != reference and (label, t["seed"]) in ref:
            agg.setdefault((label, pname), []).append((t, ref[(label, t["seed"])]))
    for (label, pname), pairs in agg.items():
        got = [at_budget(t["curve"], r["questions"]) for t, r in pairs]
        acc = np.mean([a for a, _ in got])
        ratio = np.mean([a / r["accepted"] for (a, _), (_, r) in zip(got, pairs) if r["accepted"]])
        tp = np.mean([p for _, p in got if p is not None])
        rtp = np.mean([r["true_precision"] for _, r in pairs if r.get("true_precision") is not None])
        q = np.mean([r["questions"] for _, r in pairs])
        print(f"{label:>12} {pname:>7} {len(pairs):>5} {q:>8.0f} {acc:>8.0f} {ratio:>8.2f}x {tp:>6.3f} {rtp:>10.3f}")


def finish_table(rows, sens: float = 0.95) -> None:
    """The data set finished: every mask a policy left open asked once more (one question each,
    accepted on a "yes" from a worker right ``sens`` of the time, as the replays' simulated
    workers are). Questions to decide every mask, masks accepted in the end, masks per question,
    and the finished set's true precision, per data set and policy (mean over seeds)."""
    print(f"{'data':>12} {'policy':>7} {'seeds':>5} {'questions':>9} {'accepted':>8} {'masks/q':>7} {'true':>6}")
    agg: dict = {}
    for label, pname, t in rows:
        agg.setdefault((label, pname), []).append(t)
    for (label, pname), ts in agg.items():
        q, acc, mpq, tp = [], [], [], []
        for t in ts:
            wrong_open = t["open"] - t["open_correct"]
            extra_ok, extra_bad = sens * t["open_correct"], (1 - sens) * wrong_open
            a = t["accepted"] + extra_ok + extra_bad
            qq = t["questions"] + t["open"]
            q.append(qq)
            acc.append(a)
            mpq.append(a / qq if qq else 0.0)
            if t.get("true_precision") is not None and a:
                tp.append((t["accepted"] * t["true_precision"] + extra_ok) / a)
        print(f"{label:>12} {pname:>7} {len(ts):>5} {np.mean(q):>9.0f} {np.mean(acc):>8.0f} {np.mean(mpq):>7.2f} "
              f"{np.mean(tp) if tp else float('nan'):>6.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    ap.add_argument("--generators", nargs="*", default=["modes", "mixed"])
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds run: FIRST_SEED .. FIRST_SEED + SEEDS - 1")
    ap.add_argument("--no-sample", action="store_true")
    ap.add_argument("--coverage", action="store_true")
    ap.add_argument("--finish", action="store_true",
                    help="also print what finishing the data set costs: each mask a policy left open asked once")
    ap.add_argument("--at-budget-of", metavar="POLICY",
                    help="also print each policy's accepted masks and true precision when it had asked as many "
                         "questions as POLICY did in its whole campaign (same seed)")
    ap.add_argument("--policies", nargs="*", default=list(POLICIES))
    ap.add_argument("--jobs", type=int, default=1, help="seeds run in this many processes at once")
    ap.add_argument("--save", metavar="FILE",
                    help="append each finished run to FILE (one JSON line: data set, policy, figures) as it ends, "
                         "so a long benchmark stopped midway keeps what it ran")
    ap.add_argument("--load", metavar="FILE", nargs="+",
                    help="print the tables from runs saved with --save (one or more files) instead of running")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=POLICY:KEY=VALUE,...",
                    help="a policy with [policy] keys changed, e.g. "
                         "'lenient=target:verifier_reject=0.3,verifier_margin=0.0', or [campaign] keys named "
                         "campaign.KEY ('tstop=target:campaign.stop_below_share=0.001'); name it in --policies")
    args = ap.parse_args()
    for v in args.variant:
        name, _, rest = v.partition("=")
        base_name, _, kvs = rest.partition(":")
        spec = dict(POLICIES[base_name])
        for kv in filter(None, kvs.split(",")):
            k, _, val = kv.partition("=")
            try:
                spec[k] = json.loads(val)
            except ValueError:
                spec[k] = val
        POLICIES[name] = spec
    if args.load:
        rows = [tuple(json.loads(line)) for f in args.load for line in Path(f).read_text().splitlines() if line]
        tables(rows, args)
        return
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    work = Path(tempfile.mkdtemp(prefix="crowdprop-bench-policy-"))
    rows = []

    def done(label: str, pname: str, t: dict) -> None:
        rows.append((label, pname, t))
        if args.save:
            with open(args.save, "a", encoding="utf-8") as fh:
                fh.write(json.dumps([label, pname, t], default=float) + "\n")

    try:
        if not args.no_sample:
            preds, gt, cfg = sample_paths()
            base = init_run(work / "sample", predictions=preds, gt=gt, config_path=cfg, crowd={"kind": "simulated"})
            for p in args.policies:
                for s in seeds:
                    done("sample", p, run_one(base, work, "sample", p, s, POLICIES[p]))
            fmt(rows)
        for gen in args.generators:
            for n in args.sizes:
                t0 = time.perf_counter()
                src = make_data(gen, n, args.classes, 7, work / f"{gen}{n}")
                base = init_run(work / f"run-{gen}{n}", predictions=src / "predictions.json", gt=src / "gt.json",
                                features=src / "features.npy", crowd={"kind": "simulated"})
                label = f"{gen} {n // 1000}k" if n < 1_000_000 else f"{gen} {n // 1_000_000}M"
                print(f"# {label}: made and initialised in {time.perf_counter() - t0:.0f} s", flush=True)
                jobs = [(p, s) for p in args.policies for s in seeds]
                if args.jobs > 1:
                    from concurrent.futures import ProcessPoolExecutor

                    with ProcessPoolExecutor(args.jobs) as ex:
                        futs = [ex.submit(run_one, base.path, work, label, p, s, POLICIES[p]) for p, s in jobs]
                        for (p, s), fut in zip(jobs, futs):
                            done(label, p, fut.result())
                            print(f"#   {p} seed {s}: {rows[-1][2]['wall']:.0f} s", flush=True)
                else:
                    for p, s in jobs:
                        done(label, p, run_one(base, work, label, p, s, POLICIES[p]))
                        print(f"#   {p} seed {s}: {rows[-1][2]['wall']:.0f} s", flush=True)
                shutil.rmtree(base.path)
        tables(rows, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def tables(rows, args) -> None:
    print()
    fmt(rows)
    if args.coverage:
        print()
        coverage(rows)
    if args.finish:
        print()
        finish_table(rows)
    if args.at_budget_of:
        print()
        budget_table(rows, args.at_budget_of)


if __name__ == "__main__":
    main()
