"""crowdprop replay: init + run + report with simulated workers answering from ground truth.

By default the campaign runs through a local MTurk-compatible endpoint started
in this process (the same boto3 calls as on MTurk, simulated workers behind it);
``--crowd simulated`` answers in process without HTTP."""
from __future__ import annotations

from ._predictions import add_predictions_args
from .init import add_engine_args, add_images_arg

NAME = "replay"
HELP = "dress rehearsal: a whole campaign with simulated workers answering from ground truth"
ORDER = 5


def register(p):
    add_predictions_args(p, required=False, default="the sample shipped with crowdprop")
    p.add_argument("--gt", help="COCO instances ground truth (default: the shipped sample's)")
    p.add_argument("--features", help=".npy aligned with the predictions, or Parquet keyed by mask_id")
    p.add_argument("--config", help="campaign TOML")
    p.add_argument("--run-dir", help="run directory (default: a new folder under ./crowdprop-runs/)")
    p.add_argument("--seed", type=int, help="override [campaign] seed")
    p.add_argument("--json", action="store_true", help="print report.json instead of the table")
    p.add_argument("--crowd", choices=["local", "simulated"], default="local",
                   help="local: simulated workers behind a local MTurk-compatible endpoint, through boto3 "
                        "(default); simulated: in process, no HTTP")
    p.add_argument("--hit-images", choices=["skip", "render"], default="skip",
                   help="local crowd: draw the overlay picture of every question into RUN_DIR/hit_images "
                        "(render), or only link them (skip, default: simulated workers do not look)")
    add_images_arg(p)
    add_engine_args(p)
    p.epilog = ("examples:\n  crowdprop replay\n"
                "  crowdprop replay --predictions preds.json --gt instances.json --config campaign.toml --seed 3\n"
                "  crowdprop replay --crowd simulated\n"
                "An interrupted replay continues with: crowdprop run RUN_DIR")


def sample_paths():
    from importlib.resources import files

    d = files("crowdprop.data") / "sample"
    return str(d / "predictions.json"), str(d / "gt.json"), str(d / "campaign.toml")


def sample_images() -> str:
    """The folder with the shipped sample's photos (gt.json ``file_name``)."""
    from importlib.resources import files

    return str(files("crowdprop.data") / "sample" / "images")


def run(args) -> int:
    import datetime as dt
    import json
    from pathlib import Path

    from ..crowd.factory import make_backend
    from ..crowd.resume import MTurkCrowd
    from ..campaign.init import init_run
    from ..campaign.loop import Campaign
    from ..errors import InputError
    from ..io import atomic_write_text
    from ..report.summary import compute_report, format_report
    from ._checks import check_seed, json_depth_guard
    from .init import engine_of

    check_seed(args.seed)
    engine = engine_of(args)  # checks --workers; starts nothing yet
    preds, gt = args.predictions, args.gt
    if (preds is None) != (gt is None):
        raise InputError("replay", None, "--predictions/--gt", "give both, or neither for the shipped sample")
    if preds is None and args.images is not None:
        raise InputError("command line", None, "--images", "applies to --predictions and --gt (the shipped sample "
                         "brings its photos)")
    if preds is None and (args.category or args.category_map):
        raise InputError("command line", None, "--category", "applies to --predictions (Segment Anything masks)")
    config = args.config
    if preds is None:
        preds, gt, sample_config = sample_paths()
        config = config or sample_config
    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path("crowdprop-runs") / f"replay-{stamp}"
        k = 1
        while run_dir.exists():
            k += 1
            run_dir = Path("crowdprop-runs") / f"replay-{stamp}-{k}"
    if args.hit_images == "render" and args.crowd != "local":
        raise InputError("command line", None, "--hit-images", "applies to --crowd local only")
    print(f"run directory: {run_dir}")
    crowd = {"kind": "mturk-local", "images": args.hit_images} if args.crowd == "local" else {"kind": "simulated"}
    with engine, json_depth_guard(preds, gt, args.features, config):
        rd = init_run(run_dir, predictions=preds, gt=gt, features=args.features, config_path=config,
                      crowd=crowd, seed=args.seed, progress=None, category=args.category,
                      category_map=args.category_map, images_dir=args.images)
    backend = make_backend(rd)
    if isinstance(backend, MTurkCrowd) and backend.handle is not None:
        print(f"simulated workers behind a local MTurk endpoint at {backend.handle.url}", flush=True)
    try:
        res = Campaign(rd, backend).run()
    finally:
        backend.close()
    rep = compute_report(rd)
    text = json.dumps(rep, indent=2, default=float)
    atomic_write_text(rd.path / "report.json", text)
    print(text if args.json else format_report(rep))
    print(f"stopped: {res.stop_reason}. Report: {rd.path / 'report.json'}; "
          f"export: crowdprop export {rd.path}")
    return 0
