"""The Ray engine on a local 2-CPU Ray cluster gives the same tables as the local engine."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torchvision")
ray = pytest.importorskip("ray")

from crowdprop.detect import detect_images  # noqa: E402

from .conftest import RUN_OPTIONS, THREADS  # noqa: E402

pytestmark = pytest.mark.detect


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024 * 1024, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_engine_matches_the_local_engine(local_ray, images_dir, spec, tmp_path):
    opts = {k: v for k, v in RUN_OPTIONS.items() if k != "num_threads"}
    local = detect_images(images_dir, tmp_path / "local", spec=spec, num_threads=THREADS, **opts)
    # one actor with 2 CPUs, so torch runs with the same thread count as the local engine
    remote = detect_images(images_dir, tmp_path / "ray", spec=spec, engine="ray", ray_actors=1,
                           ray_cpus_per_actor=THREADS, **opts)
    assert (remote.n_images, remote.n_processed, remote.n_masks) == (local.n_images, local.n_processed,
                                                                     local.n_masks)
    assert local.n_masks > 0
    for name in ("masks.parquet", "images.parquet", "categories.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "local" / name),
                                      pd.read_parquet(tmp_path / "ray" / name))
    np.testing.assert_array_equal(np.load(tmp_path / "local" / "features.npy"),
                                  np.load(tmp_path / "ray" / "features.npy"))
    assert sorted(p.name for p in (tmp_path / "ray" / "detections").iterdir()) == sorted(
        p.name for p in (tmp_path / "local" / "detections").iterdir())
    # resuming over Ray detects nothing again
    again = detect_images(images_dir, tmp_path / "ray", spec=spec, engine="ray", ray_actors=1,
                          ray_cpus_per_actor=THREADS, **opts)
    assert (again.n_processed, again.n_skipped) == (0, 3)


def test_ray_engine_reports_a_bad_image_in_one_line(local_ray, images_dir, spec, tmp_path):
    import shutil

    from crowdprop.errors import InputError

    d = tmp_path / "imgs"
    shutil.copytree(images_dir, d)
    (d / "zzz.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"zzz\.png: cannot read image"):
        detect_images(d, tmp_path / "run", spec=spec, engine="ray", ray_actors=1, ray_cpus_per_actor=THREADS,
                      **{k: v for k, v in RUN_OPTIONS.items() if k != "num_threads"})
