"""crowdprop gold import: add known answers (golds) to a campaign's gold pool."""
from __future__ import annotations

NAME = "gold"
HELP = "manage the gold pool (masks with known answers used for quality control)"
ORDER = 45


def register(p):
    sub = p.add_subparsers(dest="gold_action", metavar="ACTION", required=True)
    imp = sub.add_parser("import", help="add golds from CSV (mask_id,label) or JSON ([{id, label}])",
                         description="add masks with known answers (golds) to the campaign's gold pool, from CSV "
                                     "(mask_id,label) or JSON ([{id, label}])",
                         epilog="example:\n  crowdprop gold import runs/cars checked.csv     # columns mask_id,label "
                                "(yes/no)", formatter_class=p.formatter_class)
    imp.add_argument("run_dir", metavar="RUN_DIR")
    imp.add_argument("file", metavar="FILE")
    p.epilog = ("example:\n  crowdprop gold import runs/cars checked.csv     # columns mask_id,label (yes/no)\n"
                "Each HIT mixes [crowd] golds_per_hit golds, balanced yes/no, least-used first.")


def run(args) -> int:
    from ..campaign.golds import import_golds
    from ..campaign.store import RunDir
    from ._checks import json_depth_guard

    rd = RunDir(args.run_dir).require()
    # under the run lock: a `crowdprop run` in progress finishes its round with the gold pool it was
    # planned with (frozen in its journal); the new golds take effect from the next round
    with rd.lock(), json_depth_guard(args.file):
        added, size = import_golds(rd, args.file)
    yes = int(rd.golds["label"].sum())
    print(f"{rd.path}: {added} golds imported; pool has {size} ({yes} yes, {size - yes} no)")
    return 0
