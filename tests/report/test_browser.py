"""report.html in headless Chromium (Debian chromium + chromedriver, driven by selenium)."""
from __future__ import annotations

import io

import numpy as np
import pytest

from chromium import chromium_driver  # noqa: E402

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def driver():
    with chromium_driver("1280,1000") as d:
        yield d


def test_report_renders_without_errors(sample_run, driver, tmp_path):
    from PIL import Image

    driver.get((sample_run.path / "report.html").as_uri())
    assert driver.title.startswith("crowdprop report")
    errors = [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "WARNING")]
    assert errors == []
    # every figure and thumbnail decoded
    n_img, n_ok = driver.execute_script(
        "const im = Array.from(document.images);"
        "return [im.length, im.filter(i => i.complete && i.naturalWidth > 0).length];")
    assert n_img > 20 and n_ok == n_img
    # the curves fit the page: no horizontal scroll of the document
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    shot = tmp_path / "report.png"
    assert driver.save_screenshot(str(shot))
    img = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB"))
    assert img.shape[0] >= 600 and img.shape[1] >= 1200
    # not blank: the header is dark, the body light, and there are many colors
    assert img[:40].mean() < 90 and img[300:].mean() > 180
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 500
