import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CROWDPROP_SHARED_DATA", REPO.parent / "shared" / "data"))
COCO100 = SHARED_DATA / "coco_val2014_100"
GT_JSON = COCO100 / "instances_val2014_100.json"
RESULTS_JSON = COCO100 / "instances_val2014_fakesegm100_results.json"
COCO128 = SHARED_DATA / "coco128_seg"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.fail(f"shared data not found at {SHARED_DATA} (set CROWDPROP_SHARED_DATA)")
    return SHARED_DATA


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
