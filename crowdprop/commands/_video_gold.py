"""crowdprop video gold import: add regions with known answers (golds) to a video campaign's gold pool."""
from __future__ import annotations

EXAMPLES = ("examples:\n"
            "  crowdprop video gold import runs/clip golds.csv      # columns frame,class and region (or x,y)\n"
            "  crowdprop video gold import runs/clip golds.json     # [{\"frame\": 3, \"x\": 20, \"y\": 11, "
            "\"class\": \"car\"}, ...]\n"
            "  crowdprop video gold import runs/clip --worker AMYOWNID   # my own answers to the campaign's HITs\n"
            "class: a class id or name of labels.json, or mixed; frame: its number (0 ..) or file name. "
            "Each HIT mixes [crowd] golds_per_hit golds, least-used first; the qualification test draws "
            "[quality] qualification_size of them.")


def register(sub, fmt) -> None:
    """``gold import`` under ``crowdprop video``."""
    g = sub.add_parser("gold", help="manage the gold pool (regions with known answers, for quality control)",
                       formatter_class=fmt, epilog=EXAMPLES)
    act = g.add_subparsers(dest="gold_action", metavar="ACTION", required=True)
    imp = act.add_parser("import", help="add golds from CSV/JSON (frame, region or x,y, class) or from a trusted "
                                        "worker's answers", formatter_class=fmt, epilog=EXAMPLES,
                         description="add regions with known answers (golds) to the video campaign's gold pool")
    imp.add_argument("run_dir", metavar="RUN_DIR")
    imp.add_argument("file", metavar="FILE", nargs="?", help="CSV (header) or JSON (a list of objects)")
    imp.add_argument("--worker", metavar="ID", help="instead of FILE: the label answers this worker (a trusted "
                                                    "person) gave in the campaign's committed rounds")


def run(args) -> int:
    from ..errors import InputError
    from ..video.golds import import_golds
    from ..video.rundir import VideoRun
    from ._checks import json_depth_guard

    if (args.file is None) == (args.worker is None):
        raise InputError("command line", None, "FILE", "give a gold file or --worker ID (one of them)")
    vr = VideoRun(args.run_dir).require()
    if args.file is not None:
        with json_depth_guard(args.file):
            added, pool = import_golds(vr, args.file)
    else:
        added, pool = import_golds(vr, worker=args.worker)
    mixed = int((pool["truth"] < 0).sum())
    print(f"{vr.path}: {added} golds imported; pool has {len(pool)} ({mixed} mixed)")
    return 0
