"""crowdprop run: continue a campaign from its last completed round."""
from __future__ import annotations

NAME = "run"
HELP = "run (or continue) a campaign from its last completed round"
ORDER = 20


def register(p):
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--rounds", type=int, help="stop after this many rounds")
    p.epilog = "example:\n  crowdprop run runs/cars\n  crowdprop run runs/cars --rounds 1"


def run(args) -> int:
    from ..campaign.backends import make_backend
    from ..campaign.loop import Campaign
    from ..campaign.store import RunDir

    rd = RunDir(args.run_dir).require()
    if not rd.has_forest:
        from ..campaign.init import build_trees

        build_trees(rd, progress=None)
    backend = make_backend(rd)
    try:
        res = Campaign(rd, backend).run(max_rounds=args.rounds)
    finally:
        backend.close()
    print(f"{rd.path}: {res.rounds_run} round(s) run, stopped: {res.stop_reason}; "
          f"see: crowdprop report {rd.path}")
    return 0
