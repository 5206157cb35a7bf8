"""Throughput and peak memory of ``crowdprop detect`` (needs the detect extra; ray for the Ray rows).

The model is a randomly initialised ``maskrcnn_resnet50_fpn_v2`` (91 classes, like
COCO), saved as a checkpoint: no weights are downloaded. Random weights give other
detections than trained ones, but the same amount of work per image, because the
score threshold is 0 and every image gets ``detections_per_image`` (100)
detections, like a trained model at its default threshold on a busy image.
Images: the first N of the 16 coco128 images shipped in ``tests/data/coco128_seg``
(640 px on the long side; beyond 16 they repeat under other names), resized to 640 px
(``min_size = max_size = 640``).

Each row runs ``detect_images`` end to end (model build, image decoding,
inference, RLE encoding, features, parts, merge) in a fresh subprocess, so
``peak RSS`` is that row's own maximum resident memory (the driver's only, for
Ray rows: actors run in other processes). ``img/s`` = images / wall time of the
whole call. The Ray rows run one actor with the same number of CPUs as the local
row's torch threads on a local Ray cluster started inside the row
(``ray.init`` time is in its own column, not in the wall time).

Usage::

    python benchmarks/bench_detect.py [--images 12] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COCO128 = REPO / "tests" / "data" / "coco128_seg"


def _setup(tmp: Path, n_images: int) -> tuple[Path, Path, Path]:
    import shutil

    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn_v2

    imgs = tmp / "images"
    imgs.mkdir()
    shipped = sorted((COCO128 / "images" / "train2017").glob("*.jpg"))
    if not shipped:
        raise SystemExit(f"no images in {COCO128 / 'images' / 'train2017'}")
    for i in range(n_images):
        p = shipped[i % len(shipped)]
        shutil.copy(p, imgs / (p.name if i < len(shipped) else f"r{i // len(shipped)}_{p.name}"))
    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91)
    ckpt = tmp / "model.pt"
    torch.save(model.state_dict(), ckpt)
    labels = tmp / "labels.json"
    labels.write_text(json.dumps({str(i): f"class_{i}" for i in range(1, 91)}))
    return imgs, ckpt, labels


def _row(args) -> dict:
    """One measurement, in this (fresh) process."""
    from crowdprop.detect import DetectorSpec, detect_images

    spec = DetectorSpec(weights=args.ckpt, labels=args.labels, score_threshold=0.0, min_size=640, max_size=640,
                        detections_per_image=100)
    run_dir = Path(tempfile.mkdtemp(dir=args.tmp))
    init_s = 0.0
    if args.engine == "ray":
        import ray

        t = time.perf_counter()
        ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False,
                 object_store_memory=100 * 1024 * 1024)
        init_s = time.perf_counter() - t
    t = time.perf_counter()
    s = detect_images(args.images, run_dir, spec=spec, device=args.device, batch_size=args.batch_size,
                      images_per_part=max(args.batch_size, 4), engine=args.engine, num_threads=args.threads,
                      ray_actors=1, ray_cpus_per_actor=args.threads, progress=False)
    wall = time.perf_counter() - t
    peak_gpu = None
    if args.device == "cuda":
        import torch

        peak_gpu = torch.cuda.max_memory_allocated() / 2**20
    return {"engine": args.engine, "device": args.device, "batch": args.batch_size, "images": s.n_images,
            "masks": s.n_masks, "wall_s": wall, "img_s": s.n_images / wall, "init_s": init_s,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_gpu_mib": peak_gpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=12, help="coco128 images per row (default 12)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads / Ray CPUs (default 2)")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--row", action="store_true", help=argparse.SUPPRESS)
    for a in ("--tmp", "--ckpt", "--labels", "--engine", "--device"):
        ap.add_argument(a, help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--images-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.row:
        args.images = args.images_dir
        print(json.dumps(_row(args)))
        return

    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        imgs, ckpt, labels = _setup(Path(tmp), args.images)
        configs = [("local", "cpu", b) for b in (1, 2, 4)]
        if not args.no_ray:
            try:
                import ray  # noqa: F401

                configs += [("ray", "cpu", 2)]
            except ImportError:
                print("ray not installed: no Ray rows", file=sys.stderr)
        if torch.cuda.is_available():
            configs += [("local", "cuda", 4)]
        for engine, device, b in configs:
            cmd = [sys.executable, __file__, "--row", "--tmp", tmp, "--ckpt", str(ckpt), "--labels", str(labels),
                   "--engine", engine, "--device", device, "--batch-size", str(b), "--threads", str(args.threads),
                   "--images-dir", str(imgs)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(f"done: {engine} {device} batch {b}", file=sys.stderr)

    local2 = next((r for r in rows if r["engine"] == "local" and r["device"] == "cpu" and r["batch"] == 2), None)
    print(f"crowdprop detect, random-init maskrcnn_resnet50_fpn_v2, 640 px, {args.images} coco128 images, "
          f"{args.threads} torch threads, torch {torch.__version__}")
    print(f"{'engine':<7}{'device':<7}{'batch':>6}{'masks':>7}{'wall s':>9}{'img/s':>8}{'peak RSS MiB':>14}"
          f"{'ray init s':>12}{'vs local':>10}")
    for r in rows:
        vs = ""
        if r["engine"] == "ray" and local2 is not None:
            vs = f"{r['wall_s'] - local2['wall_s']:+.1f} s"
        rss = f"{r['peak_rss_mib']:.0f}" + ("*" if r["engine"] == "ray" else "")
        init = f"{r['init_s']:.1f}" if r["engine"] == "ray" else ""
        gpu = f" (GPU peak {r['peak_gpu_mib']:.0f} MiB)" if r["peak_gpu_mib"] is not None else ""
        print(f"{r['engine']:<7}{r['device']:<7}{r['batch']:>6}{r['masks']:>7}{r['wall_s']:>9.1f}{r['img_s']:>8.2f}"
              f"{rss:>14}{init:>12}{vs:>10}{gpu}")
    if any(r["engine"] == "ray" for r in rows):
        print("* driver process only; the Ray actor holds the model in its own process")


if __name__ == "__main__":
    main()
