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
