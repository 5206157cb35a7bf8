"""crowdprop export: accepted masks as COCO instances JSON."""
from __future__ import annotations

NAME = "export"
HELP = "write the accepted masks as COCO instances JSON"
ORDER = 40


def register(p):
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("-o", "--output", required=True, help="output JSON file")
    p.epilog = "example:\n  crowdprop export runs/cars -o annotations.json"


def run(args) -> int:
    from ..campaign.export import export_accepted
    from ..campaign.store import RunDir

    rd = RunDir(args.run_dir).require()
    n = export_accepted(rd, args.output)
    print(f"wrote {n} accepted masks to {args.output}")
    return 0
