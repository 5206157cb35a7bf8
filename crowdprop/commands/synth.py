"""``crowdprop synth``: write a synthetic prediction set with ground truth, for scale tests and benchmarks."""
from __future__ import annotations

import argparse

NAME = "synth"
HELP = "write a synthetic prediction set (ground truth, predictions, features) for scale tests and benchmarks"
ORDER = 80

EPILOG = """\
Writes into DIR (created; an existing DIR must be empty):
  gt.json           COCO instances ground truth (synthetic images, categories synthetic-class-K)
  predictions.json  COCO results with score, pred_iou and id, derived from the ground truth
  features.npy      (N, feature-dim) float32 features, row i = prediction with id i+1
  latent.npz        true IoU, target IoU and latent structure of every prediction
  README.txt        what the files are and how they were made

Generators (--generator):
  modes  (default) masks fall into latent modes per class (good, bad or mixed
         quality) that form tight, mostly pure clusters in feature space; scores
         and pred_iou correlate with the true IoU (about 0.5 and 0.75)
  mixed  overlapping latent groups whose share of correct masks varies smoothly
         across feature space (impure clusters), classes from 40 % to 95 % correct,
         many masks near IoU 0.75, heavy-tailed class-biased score and pred_iou
         (about 0.25 and 0.5)
The same generator, seed and options give identical files.

example:
  crowdprop synth --masks 100000 --classes 80 --seed 7 -o synth100k
  crowdprop synth --masks 2000 --classes 5 --no-pred-iou -o small
  crowdprop synth --generator mixed --masks 100000 --classes 80 --seed 7 -o mixed100k
"""


def _positive(name: str, minimum: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be >= {minimum}, got {v}")
        return v

    return parse


def register(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("--masks", type=_positive("--masks", 1), required=True, metavar="N",
                   help="number of predicted masks")
    p.add_argument("--classes", type=_positive("--classes", 1), required=True, metavar="C",
                   help="number of classes (<= N; sizes are Zipf-like)")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder (new or empty)")
    p.add_argument("--seed", type=_positive("--seed", 0), default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--image-size", type=_positive("--image-size", 16), default=64, metavar="PX",
                   help="side of the square synthetic images in pixels (default 64)")
    p.add_argument("--feature-dim", type=_positive("--feature-dim", 1), default=64, metavar="D",
                   help="feature dimension (default 64)")
    p.add_argument("--pred-iou", action=argparse.BooleanOptionalAction, default=True,
                   help="give predictions a pred_iou field (default: yes)")
    p.add_argument("--generator", choices=["modes", "mixed"], default="modes",
                   help="modes: tight, mostly pure latent modes (default); mixed: impure clusters, "
                        "class-dependent difficulty and miscalibrated scores (see below)")


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..replay.synth import check_output_dir, stream_synthetic

    if args.classes > args.masks:
        raise InputError("command line", None, "--classes",
                         f"{args.classes} classes need at least as many masks, got --masks {args.masks}")
    if args.image_size > 4096:
        raise InputError("command line", None, "--image-size", f"must be <= 4096, got {args.image_size}")
    check_output_dir(args.out)  # refuse before spending time
    opts = dict(seed=args.seed, image_size=args.image_size, feature_dim=args.feature_dim, with_pred_iou=args.pred_iou)
    if args.generator == "mixed":
        from ..replay.synth_mixed import make_mixed, write_mixed

        synth = make_mixed(args.masks, args.classes, **opts)
        out = write_mixed(synth, args.out)
        n = {"predictions": len(synth.predictions), "instances": len(synth.gt["annotations"]),
             "images": len(synth.gt["images"])}
    else:  # written as it is made: ten million masks fit in memory
        out = args.out
        n = stream_synthetic(args.masks, args.classes, args.out, **opts)
    print(f"wrote {n['predictions']} synthetic predictions, {n['instances']} ground-truth "
          f"instances on {n['images']} images, {args.classes} classes to {out}")
    return 0
