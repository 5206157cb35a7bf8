"""HIT page size and overlay rendering cost.

Prints (1) the HTMLQuestion size of one HIT by questions per HIT and image URL
style (MTurk refuses more than 65,535 bytes), and (2) the time to render and
encode one overlay picture from a real coco128 image.

    python benchmarks/bench_hit_page.py
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from crowdprop.hits.images import LocalFolderTarget, OverlayStore, S3Target, s3_client  # noqa: E402
from crowdprop.hits.render import MAX_QUESTION_BYTES, PageRenderer  # noqa: E402
from tests.mturk.conftest import CLASS_NAMES, coco128_masks, make_hit  # noqa: E402


def main() -> None:
    import tempfile

    masks, images, root = coco128_masks(n_images=8)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "AKIDBENCHMARK")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "benchmark")
    s3 = S3Target(s3_client(), "my-campaign-bucket", "crowdprop/run1/", expires_s=3 * 86400)
    s3_public = S3Target(s3_client(), "my-campaign-bucket", "crowdprop/run1/", expires_s=3 * 86400,
                         public_key=bytes(32))
    styles = {
        "local (/images/)": lambda row: f"http://127.0.0.1:8000/images/mask_{int(row['mask_id'])}.jpg",
        "image_base_url": lambda row: f"https://data.example.org/crowdprop/mask_{int(row['mask_id'])}.jpg",
        "S3 presigned": lambda row: s3.url(f"mask_{int(row['mask_id'])}.jpg"),
        "S3 public": lambda row: s3_public.url(f"mask_{int(row['mask_id'])}.jpg"),
    }
    print("HTMLQuestion bytes per HIT (limit 65535)")
    print(f"{'questions':>9} | " + " | ".join(f"{k:>17}" for k in styles))
    for n in (10, 25, 50, 75, 100):
        cells = []
        for url in styles.values():
            r = PageRenderer(url, CLASS_NAMES, masks=masks, max_bytes=10**9)
            size = len(r.question_xml(r.render(make_hit(masks, n=n))).encode())
            cells.append(f"{size:>11}{' (over)' if size > MAX_QUESTION_BYTES else '       '}")
        print(f"{n:>9} | " + " | ".join(cells))

    with tempfile.TemporaryDirectory() as tmp:
        store = OverlayStore(LocalFolderTarget(tmp, "http://x"), images=images, image_root=root)
        rows = [masks.iloc[i] for i in range(len(masks))]
        store.render(rows[0])  # warm the image cache and imports
        t0 = time.perf_counter()
        sizes = [len(store.render(row)) for row in rows]
        dt = (time.perf_counter() - t0) / len(rows)
        print()
        print(f"overlay pictures: {len(rows)} masks on {len(images)} images (256 x 256 JPEG)")
        print(f"{'ms / picture':>13} | {'mean KiB':>8}")
        print(f"{dt * 1000:>13.1f} | {sum(sizes) / len(sizes) / 1024:>8.1f}")


if __name__ == "__main__":
    main()
