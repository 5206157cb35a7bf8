"""crowdprop init: validate predictions (and ground truth) and create a run directory."""
from __future__ import annotations

from ._predictions import add_predictions_args

NAME = "init"
HELP = "validate predictions (and ground truth) and create a run directory with cluster trees"
ORDER = 10


def add_engine_args(p) -> None:
    """``--engine`` and ``--workers``: where init's reading, checks, matching and trees run."""
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="where reading, validation, ground-truth matching and the per-class tree builds run: "
                        "local processes (default) or Ray (the cluster at RAY_ADDRESS, else a local one; "
                        "needs crowdprop[ray]); the run directory is the same either way")
    p.add_argument("--workers", type=int, metavar="N",
                   help="processes (local) or CPUs (a local Ray); default: this machine's CPUs; 1: all in this process")


def add_images_arg(p) -> None:
    """``--images``: the folder of the ground truth's image files, recorded in the run directory."""
    p.add_argument("--images", metavar="DIR",
                   help="folder with the images' files (by the ground truth's file_name), recorded in the run "
                        "directory: worker pages and report.html draw the masks on these photos (default: a folder "
                        "'images' next to --gt when it holds them all, else masks on gray)")


def image_hosting_problem(cfg, config_path) -> str | None:
    """Why ``crowdprop run`` would refuse to publish this configuration on the MTurk sandbox or
    production (workers fetch the pictures there: ``[mturk] s3_bucket`` or ``image_base_url``), or None."""
    if cfg.mturk.s3_bucket or cfg.mturk.image_base_url:
        return None
    where = f"{config_path}: [mturk]" if config_path else "no --config (defaults): [mturk]"
    return (f"{where}: field 's3_bucket': no image hosting (s3_bucket or image_base_url), so crowdprop run will "
            "not publish on the MTurk sandbox or production, where workers fetch the pictures from it; "
            "a local endpoint (crowdprop run --endpoint-url) serves them itself")


def engine_of(args):
    """The engine ``--engine`` and ``--workers`` name, made the active one: a ``with`` block
    (checks ``--workers`` at once; worker processes or Ray start when first needed)."""
    import contextlib

    from ..engine import active, make_engine
    from ..errors import InputError

    if args.workers is not None and args.workers < 1:
        raise InputError("command line", None, "--workers", f"must be >= 1, got {args.workers}")
    stack = contextlib.ExitStack()
    stack.enter_context(active(stack.enter_context(make_engine(args.engine, args.workers))))
    return stack


def register(p):
    p.add_argument("run_dir", metavar="RUN_DIR", help="new run directory (must not exist or be empty)")
    add_predictions_args(p, required=True)
    p.add_argument("--gt", help="COCO instances ground truth (needed for polygons and for replay)")
    p.add_argument("--features", help=".npy aligned with the predictions, or Parquet keyed by mask_id")
    p.add_argument("--config", help="campaign TOML (see README for every key)")
    p.add_argument("--crowd", choices=["mturk", "local", "simulated"], default="mturk",
                   help="who answers: MTurk (the sandbox unless 'crowdprop run --target' says otherwise), "
                        "local (simulated workers behind a local MTurk-compatible endpoint; needs --gt) "
                        "or simulated (in process; needs --gt)")
    p.add_argument("--seed", type=int, help="override [campaign] seed")
    add_images_arg(p)
    add_engine_args(p)
    p.epilog = ("examples:\n  crowdprop init runs/cars --predictions preds.json --gt instances.json --config campaign.toml\n"
                "  crowdprop init runs/cars --predictions preds.json --gt instances.json --images photos/\n"
                "  crowdprop init runs/cars --predictions output/inference/instances_predictions.pth --gt instances.json\n"
                "  crowdprop init runs/cars --predictions sam_masks/ --category car --gt instances.json")


def run(args) -> int:
    import logging

    from ..campaign.init import init_run
    from ._checks import check_seed, json_depth_guard

    check_seed(args.seed)
    crowd = {"mturk": {"kind": "mturk", "target": "sandbox"}, "local": {"kind": "mturk-local", "images": "skip"},
             "simulated": {"kind": "simulated"}}[args.crowd]
    with engine_of(args), json_depth_guard(args.predictions, args.gt, args.features, args.config):
        rd = init_run(args.run_dir, predictions=args.predictions, gt=args.gt, features=args.features,
                      config_path=args.config, crowd=crowd, seed=args.seed, progress=None,
                      category=args.category, category_map=args.category_map, images_dir=args.images)
    n = len(rd.masks)
    print(f"created {rd.path}: {n} masks, {len(rd.forest.roots)} class trees; next: crowdprop run {rd.path}")
    root = rd.campaign["sources"].get("images")
    if root:
        print(f"masks are drawn on the photos in {root}")
    if args.crowd == "mturk" and (problem := image_hosting_problem(rd.config, args.config)):
        logging.getLogger(__name__).warning("%s", problem)
    return 0
