"""``crowdprop detect``: a folder of images -> masks, scores, quality, clustering features."""
from __future__ import annotations

import argparse
import importlib.util

NAME = "detect"
HELP = "detect instance masks on a folder of images with torchvision Mask R-CNN (needs the detect extra)"
ORDER = 8

MODELS = ("maskrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn")  # crowdprop.detect.model.MODELS, without importing it

EPILOG = """\
input:
  IMAGES       folder of .jpg/.jpeg/.png images, searched recursively; sorted by relative
               path, and image ids follow that order
  --weights    DEFAULT: torchvision's COCO weights (downloaded into torchvision's cache the
               first time); or PATH: a state dict saved with torch.save(model.state_dict())
  --labels     with a PATH: JSON object class index -> name, e.g. {"1": "person", "2": "car"}
               (indices 1..K without gaps; 0 is the background)

output (RUN_DIR):
  masks.parquet       one row per detection above --score-threshold: RLE mask (binarized at
                      0.5), box, class, score, pred_iou (soft IoU of the mask probabilities
                      with the binarized mask); gt_iou NaN
  features.npy        (n, 512) float32: ROI features (256x7x7) x mask, Gaussian-projected
  images.parquet, categories.parquet
  projection.npy      the fixed projection; keep it to compare features across runs
  detections/         resumable parts: run the same command again to continue

  crowdprop run RUN_DIR picks these files up.

examples:
  crowdprop detect photos/ run/ --weights model.pt --labels labels.json --batch-size 4
  crowdprop detect photos/ run/ --engine ray --device cuda --export-coco detections.json
"""


def register(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("images", metavar="IMAGES", help="folder of images")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory (created; resumed if it exists)")
    parser.add_argument("--model", choices=MODELS, default="maskrcnn_resnet50_fpn_v2",
                        help="torchvision detector (default: maskrcnn_resnet50_fpn_v2)")
    parser.add_argument("--weights", default="DEFAULT", metavar="DEFAULT|PATH",
                        help="DEFAULT (COCO) or a state-dict checkpoint (default: DEFAULT)")
    parser.add_argument("--labels", default=None, metavar="labels.json", help="label map for a checkpoint")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--batch-size", type=int, default=2, help="images per forward pass (default: 2)")
    parser.add_argument("--score-threshold", type=float, default=0.05,
                        help="keep detections with a class score above this (default: 0.05)")
    parser.add_argument("--min-size", type=int, default=800, help="resize: shorter side (default: 800)")
    parser.add_argument("--max-size", type=int, default=1333, help="resize: longest side at most (default: 1333)")
    parser.add_argument("--detections-per-image", type=int, default=100, help="at most (default: 100)")
    parser.add_argument("--export-coco", default=None, metavar="FILE", help="also write COCO results JSON")
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local: one model in this process; ray: one model per Ray actor (default: local)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images")
    parser.add_argument("--images-per-part", type=int, default=64,
                        help="images per resumable part file and per Ray task (default: 64)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: CPUs available, at most 8)")
    parser.add_argument("--ray-actors", type=int, default=None, help="Ray: number of model actors")
    parser.add_argument("--ray-cpus-per-actor", type=int, default=None, help="Ray: CPUs per actor on CPU")


def _require(module: str, extra: str) -> None:
    from ..errors import MissingExtra

    if importlib.util.find_spec(module) is None:
        raise MissingExtra(extra, module)


def run(args: argparse.Namespace) -> int:
    _require("torch", "detect")
    _require("torchvision", "detect")
    if args.engine == "ray":
        _require("ray", "ray")
    from ..detect import DetectorSpec, detect_images

    spec = DetectorSpec(model=args.model, weights=args.weights, labels=args.labels,
                        score_threshold=args.score_threshold, min_size=args.min_size, max_size=args.max_size,
                        detections_per_image=args.detections_per_image)
    summary = detect_images(args.images, args.run_dir, spec=spec, device=args.device, batch_size=args.batch_size,
                            images_per_part=args.images_per_part, limit=args.limit, engine=args.engine,
                            export_coco=args.export_coco, num_threads=args.threads, ray_actors=args.ray_actors,
                            ray_cpus_per_actor=args.ray_cpus_per_actor, progress=not args.quiet)
    print(f"{summary.n_images} images ({summary.n_processed} detected now, {summary.n_skipped} before): "
          f"{summary.n_masks} masks in {args.run_dir}/masks.parquet")
    if args.export_coco:
        print(f"wrote {args.export_coco}")
    return 0
