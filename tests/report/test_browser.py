"""report.html in headless Chromium (Debian chromium + chromedriver, driven by selenium)."""
from __future__ import annotations

import io
import os
import shutil
import tempfile

import numpy as np
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "install them with: apt-get update && apt-get install -y chromium chromium-driver && pip install selenium"


@pytest.fixture(scope="module")
def driver():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"the browser tests need {', '.join(missing)}; {INSTALL}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(f"the browser tests need selenium; {INSTALL}")
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must never download anything
    profile = tempfile.mkdtemp(prefix="cp-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1000", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield d
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


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
