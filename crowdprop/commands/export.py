"""crowdprop export: accepted masks as COCO instances JSON."""
from __future__ import annotations

NAME = "export"
HELP = "write the accepted masks as COCO instances JSON"
ORDER = 40


def register(p):
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("-o", "--output", help="accepted masks as COCO instances JSON")
    p.add_argument("--answers", help="usable answers as CSV in crowd-kit's long format (task, worker, label)")
    p.add_argument("--golds", help="the gold pool as CSV (task, label)")
    p.epilog = ("examples:\n  crowdprop export runs/cars -o annotations.json\n"
                "  crowdprop export runs/cars --answers answers.csv --golds golds.csv\n"
                "  crowdprop aggregate answers.csv --gold golds.csv --method ds -o labels.csv")


def run(args) -> int:
    from ..campaign.export import export_accepted
    from ..campaign.store import RunDir

    from ..errors import InputError
    from ..io import atomic_write_text

    if not (args.output or args.answers or args.golds):
        raise InputError("export", None, "-o/--answers/--golds", "say what to write")
    rd = RunDir(args.run_dir).require()
    if args.output:
        n = export_accepted(rd, args.output)
        print(f"wrote {n} accepted masks to {args.output}")
    if args.answers or args.golds:
        from ..campaign.golds import answers_long

        long, gold = answers_long(rd)
        if args.answers:
            atomic_write_text(args.answers, long.to_csv(index=False))
            print(f"wrote {len(long)} answers to {args.answers}")
        if args.golds:
            atomic_write_text(args.golds, gold.to_csv(index=False))
            print(f"wrote {len(gold)} golds to {args.golds}")
    return 0
