from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"
"""Real data the tests read; every folder holds its license and a README naming its source."""
SAMPLE = REPO / "crowdprop" / "data"
GT_JSON = SAMPLE / "sample_gt.json"
"""COCO val2014 instances, first 100 images (the shipped sample, see crowdprop/data/README.md)."""
RESULTS_JSON = SAMPLE / "sample_predictions.json"
"""cocoapi's 734 "fake" segmentation results on those images (the shipped sample)."""
COCO128 = TEST_DATA / "coco128_seg"
"""The first 16 images of coco128-seg with their YOLO polygons (tests/data/coco128_seg/README.md)."""


def coco128_images(n: int) -> list[Path]:
    """The first ``n`` coco128 images (sorted by name); fails the test if fewer are shipped."""
    paths = sorted((COCO128 / "images" / "train2017").glob("*.jpg"))[:n]
    if len(paths) < n:
        pytest.fail(f"{n} coco128 images wanted, {len(paths)} found in {COCO128 / 'images' / 'train2017'}")
    return paths


@pytest.fixture
def no_aws_credentials(monkeypatch, tmp_path):
    """No credentials of the machine leak into a test (none are needed for a local endpoint)."""
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def fake_credentials(monkeypatch):
    """Made-up credentials, for clients that sign their requests to a local endpoint."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDLOCALTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
