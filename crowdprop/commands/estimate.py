"""crowdprop estimate: what a campaign will cost before any money moves.

Runs several whole campaigns in memory on a scratch copy of the run directory
(its masks, trees and gold pool; the run directory is only read), each with
simulated workers (``[simulation]``) and a different seed. No ground truth is
needed: each campaign draws its own truth from the run's predicted quality,
mask ``i`` correct with probability ``q_i`` (``[policy] quality``: the score,
or score x predicted IoU), and the gold pool's answers follow that truth.
Money is counted as the campaign counts it (rewards plus MTurk's fee on every
approved assignment, gold bonuses with their fee), and worker hours are the
simulated workers' time on the HITs.

Printed per figure: the mean and the range (lowest, highest) over the seeds.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from ..errors import InputError

NAME = "estimate"
HELP = "forecast a campaign's questions, HITs, dollars (fees included) and worker hours from simulated campaigns"
ORDER = 18

EPILOG = """\
examples:
  crowdprop estimate runs/cars                       (3 simulated campaigns on the run's own predicted qualities)
  crowdprop estimate runs/cars --config cheaper.toml --seeds 5
  crowdprop estimate runs/cars --json

No money moves and no HIT is published; the run directory is only read.
"""

FIGURES = ("questions", "hits", "assignments", "usd", "reward_usd", "fee_usd", "bonus_usd", "worker_hours",
           "rounds", "accepted", "rejected", "open")


def register(p):
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--config", metavar="TOML", help="campaign TOML whose keys replace the run's configuration's "
                                                    "(tables that shape the cluster trees are ignored)")
    p.add_argument("--seeds", type=int, default=3, help="simulated campaigns, each with its own seed (default 3)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.epilog = EPILOG


def _scratch(run, dest: Path, cfg, seed: int):
    """A run directory at ``dest`` sharing ``run``'s masks, trees and golds, with a simulated crowd,
    ``cfg`` seeded ``seed``, and truth drawn from predicted quality."""
    import dataclasses

    import numpy as np

    from ..campaign.store import RunDir
    from ..io import atomic_write_text, write_parquet
    from ..policy.controller import predicted_quality

    dest.mkdir(parents=True)
    for name in ("images.parquet", "categories.parquet", "features.npy"):
        if (run.path / name).exists():
            shutil.copy2(run.path / name, dest / name)
    shutil.copytree(run.path / "trees", dest / "trees")
    cfg = dataclasses.replace(cfg, campaign=dataclasses.replace(cfg.campaign, seed=int(seed)))
    rng = np.random.default_rng([int(seed), 7])
    masks = run.masks.copy()
    q = np.clip(predicted_quality(masks, cfg.policy.quality), 0.0, 1.0)
    truth = rng.random(len(q)) < q
    masks["gt_iou"] = np.where(truth, 1.0, 0.0)  # above any correct_iou, and below it
    write_parquet(dest / "masks.parquet", masks)
    golds = run.golds.copy()
    if len(golds):
        golds["label"] = truth[golds["mask_row"].to_numpy(np.int64)].astype(golds["label"].dtype)
        write_parquet(dest / "golds.parquet", golds)
    camp = {k: v for k, v in run.campaign.items() if k not in ("home", "image_url_key")}
    camp["crowd"] = {"kind": "simulated"}
    atomic_write_text(dest / "campaign.json", json.dumps(camp, indent=2, sort_keys=True))
    atomic_write_text(dest / "config.json", cfg.to_json())
    return RunDir(dest), float(truth.mean())


def simulate(run, cfg, seed: int, scratch: Path) -> dict:
    """One simulated campaign of ``run`` under ``cfg`` (seed ``seed``) in ``scratch``: its figures."""
    from ..crowd.factory import simulated_backend
    from ..campaign.export import final_status
    from ..campaign.ledger import spent_by_kind
    from ..campaign.loop import Campaign

    rd, share = _scratch(run, scratch, cfg, seed)
    res = Campaign(rd, simulated_backend(rd), progress=False).run()
    spend = rd.read_rounds("spend")
    kinds = spent_by_kind(spend)
    asg = rd.read_rounds("assignments")
    ans = rd.read_rounds("answers")
    status = final_status(rd)
    return {"seed": int(seed), "true_share": share, "stop": res.stop_reason, "rounds": int(res.rounds_run),
            "questions": int((~ans["is_gold"].astype(bool)).sum()) if len(ans) else 0,
            "hits": int(len(rd.read_rounds("hits"))), "assignments": int(len(asg)),
            "usd": sum(kinds.values()) / 100, "reward_usd": kinds.get("reward", 0) / 100,
            "fee_usd": (kinds.get("fee", 0) + kinds.get("bonus_fee", 0)) / 100,
            "bonus_usd": kinds.get("bonus", 0) / 100,
            "worker_hours": float(asg["work_seconds"].sum()) / 3600 if len(asg) else 0.0,
            "accepted": int((status == 1).sum()), "rejected": int((status == 0).sum()),
            "open": int((status < 0).sum())}


def estimate(run, cfg, seeds: int) -> dict:
    """``{"runs": [per seed], "mean": {...}, "low": {...}, "high": {...}}`` over ``seeds`` campaigns."""
    base = int(cfg.campaign.seed)
    runs = []
    with tempfile.TemporaryDirectory(prefix="crowdprop-estimate-") as tmp:
        for k in range(seeds):
            runs.append(simulate(run, cfg, base + k, Path(tmp) / f"seed{k}"))
    out = {"runs": runs, "seeds": seeds, "masks": int(len(run.masks)), "budget_usd": float(cfg.campaign.budget_usd)}
    for name, f in (("mean", lambda v: sum(v) / len(v)), ("low", min), ("high", max)):
        out[name] = {k: f([r[k] for r in runs]) for k in FIGURES}
    return out


def _table(est: dict) -> str:
    rows = [("questions", "{:.0f}"), ("hits", "{:.0f}"), ("usd", "${:.2f}"), ("reward_usd", "${:.2f}"),
            ("fee_usd", "${:.2f}"), ("bonus_usd", "${:.2f}"), ("worker_hours", "{:.2f}"), ("rounds", "{:.1f}"),
            ("accepted", "{:.0f}"), ("rejected", "{:.0f}"), ("open", "{:.0f}")]
    label = {"usd": "dollars (fees included)", "reward_usd": "  rewards", "fee_usd": "  MTurk fees",
             "bonus_usd": "  bonuses", "worker_hours": "worker hours", "hits": "HITs"}
    lines = [f"{'':26}{'mean':>10}{'low':>10}{'high':>10}"]
    for k, fmt in rows:
        lines.append(f"{label.get(k, k):26}" + "".join(f"{fmt.format(est[s][k]):>10}" for s in ("mean", "low", "high")))
    return "\n".join(lines)


def run(args) -> int:
    from .. import config as config_mod
    from ..campaign.store import RunDir
    from ._checks import json_depth_guard

    rd = RunDir(args.run_dir).require()
    if not 1 <= args.seeds <= 100:
        raise InputError("command line", None, "--seeds", f"must be in [1, 100], got {args.seeds}")
    cfg = rd.config
    if args.config:  # the TOML's keys over the run's configuration (checked as the TOML's)
        with json_depth_guard(args.config):
            config_mod.load(args.config)  # one-line errors naming the TOML file and key
            import tomllib

            with open(args.config, "rb") as f:
                given = tomllib.load(f)
        merged = json.loads(cfg.to_json())
        for table, keys in given.items():
            if isinstance(keys, dict) and isinstance(merged.get(table), dict):
                merged[table].update(keys)
            else:
                merged[table] = keys
        cfg = config_mod.from_dict(merged, str(args.config))
    if not rd.has_forest:
        raise InputError(rd.path, None, "trees", "the run has no cluster trees yet (crowdprop run builds them)")
    est = estimate(rd, cfg, args.seeds)
    if args.json:
        print(json.dumps(est, indent=2))
        return 0
    print(f"{rd.path}: {args.seeds} simulated campaign(s) of {est['masks']} masks, truth drawn from the predicted "
          f"quality (mean share correct {sum(r['true_share'] for r in est['runs']) / len(est['runs']):.2f})")
    print(_table(est))
    over = est["high"]["usd"] > est["budget_usd"]
    print(f"budget: ${est['budget_usd']:.2f}" + ("; the dearest campaign would reach it" if over else ""))
    return 0
