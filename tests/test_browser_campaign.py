"""A campaign round whose HIT a real browser does (Debian chromium + chromedriver via selenium).

The campaign loop runs against the local MTurk endpoint with simulated workers
off; headless Chromium accepts the HIT, answers every question with the
keyboard and submits; the round's Parquet state must hold exactly those answers.
On the way, the worker page, the endpoint's index and an error page are laid out
at a phone's width (375 px) and a desktop's: element boxes measured in the browser
must sit inside their frames, and each is saved as a screenshot (into
``$CROWDPROP_SCREENSHOTS`` too when set).

Needs ``apt-get install -y chromium chromium-driver`` and ``pip install selenium``;
selenium-manager is never used (it would download a driver).
"""
from __future__ import annotations

import io
import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from crowdprop.crowd.factory import local_endpoint_backend
from crowdprop.campaign.init import init_run
from crowdprop.campaign.loop import Campaign
from crowdprop.commands.replay import sample_images, sample_paths

from chromium import chromium_driver, wait_for  # noqa: E402

pytestmark = pytest.mark.browser

CATEGORY = 44
"""The sample's class with 19 predicted masks: round 1 fits in one HIT."""
CLASS_NAME = "baseball glove"
"""Shown as the class's name: the question wraps onto two lines at a phone's width."""
WORKER = "ABROWSERWORKER7"
WIDTHS = {"phone": (375, 812), "desktop": (1280, 900)}


@pytest.fixture(scope="module")
def driver():
    with chromium_driver("900,1100") as d:
        yield d


def one_class_sample(folder: Path) -> tuple[Path, Path]:
    """The shipped sample cut down to one class (predictions, and ground truth of their images)."""
    preds_path, gt_path, _ = sample_paths()
    preds = [p for p in json.loads(Path(preds_path).read_text()) if p["category_id"] == CATEGORY]
    gt = json.loads(Path(gt_path).read_text())
    images = {p["image_id"] for p in preds}
    gt["images"] = [im for im in gt["images"] if im["id"] in images]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in images]
    gt["categories"] = [dict(c, name=CLASS_NAME) if c["id"] == CATEGORY else c for c in gt["categories"]]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "preds.json").write_text(json.dumps(preds))
    (folder / "gt.json").write_text(json.dumps(gt))
    return folder / "preds.json", folder / "gt.json"


def screenshot(driver, folder: Path, name: str) -> Path:
    """Save the window as ``folder/name.png`` (and into $CROWDPROP_SCREENSHOTS when set); check it is a
    picture of the window's width, not blank."""
    import numpy as np
    from PIL import Image

    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path))
    img = np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB"))
    ratio = driver.execute_script("return window.devicePixelRatio")
    assert img.shape[1] == round(driver.execute_script("return window.innerWidth") * ratio)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50, f"{name}: a blank screenshot"
    if os.environ.get("CROWDPROP_SCREENSHOTS"):
        out = Path(os.environ["CROWDPROP_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, out / path.name)
    return path


def set_width(driver, width: int, height: int) -> None:
    driver.set_window_size(width, height)
    assert wait_for(lambda: driver.execute_script("return window.innerWidth") == width), \
        driver.execute_script("return window.innerWidth")


# Measured in the page: boxes of the current question's frame (fieldset), its parts, the progress
# squares and their container, and whether the document scrolls sideways.
LAYOUT_JS = """
const box = e => { const r = e.getBoundingClientRect(); return {l: r.left, t: r.top, r: r.right, b: r.bottom}; };
const fs = document.querySelector('fieldset.cp-question.cur'), cs = getComputedStyle(fs);
const inner = box(fs);
inner.l += parseFloat(cs.borderLeftWidth); inner.r -= parseFloat(cs.borderRightWidth);
inner.t += parseFloat(cs.borderTopWidth); inner.b -= parseFloat(cs.borderBottomWidth);
const main = document.querySelector('main'), ms = getComputedStyle(main), content = box(main);
content.l += parseFloat(ms.paddingLeft); content.r -= parseFloat(ms.paddingRight);
const legend = fs.querySelector('legend');
return {frame: box(fs), inner: inner, content: content, legend: box(legend),
        legend_line_px: parseFloat(getComputedStyle(legend).fontSize),
        parts: Array.from(fs.querySelectorAll('img, label')).map(box),
        dots: box(document.getElementById('cp-dots')),
        squares: Array.from(document.querySelectorAll('#cp-dots span')).map(box),
        bar: box(document.getElementById('cp-bar')),
        scroll_w: document.documentElement.scrollWidth, inner_w: window.innerWidth};
"""


def inside(a: dict, b: dict, slack: float = 0.5) -> bool:
    """Box ``a`` lies within box ``b``."""
    return (a["l"] >= b["l"] - slack and a["r"] <= b["r"] + slack
            and a["t"] >= b["t"] - slack and a["b"] <= b["b"] + slack)


def check_worker_page_layout(driver, shots: Path) -> None:
    """The worker page at a phone's and a desktop's width: the question inside the frame's border,
    the frame inside the page, the progress squares from edge to edge of their container."""
    for name, (w, h) in WIDTHS.items():
        set_width(driver, w, h)
        m = driver.execute_script(LAYOUT_JS)
        assert m["scroll_w"] <= m["inner_w"], (name, m["scroll_w"], m["inner_w"])  # no sideways scrolling
        assert inside(m["frame"], m["content"]), (name, m["frame"], m["content"])
        # the question text is inside the frame, below its top border (not drawn across it)
        assert inside(m["legend"], m["inner"]), (name, m["legend"], m["inner"])
        assert all(inside(part, m["inner"]) for part in m["parts"]), name
        assert m["parts"][0]["t"] >= m["legend"]["b"] - 0.5  # the picture comes below the question
        if name == "phone":  # the question wraps there: two lines, both inside the frame
            assert m["legend"]["b"] - m["legend"]["t"] > 1.8 * m["legend_line_px"], m["legend"]
        sq, dots = m["squares"], m["dots"]
        assert len(sq) > 1 and inside(dots, m["content"])
        assert abs(min(s["l"] for s in sq) - dots["l"]) <= 1 and abs(max(s["r"] for s in sq) - dots["r"]) <= 1.5, \
            (name, dots, sq[0], sq[-1])
        assert abs(dots["l"] - m["bar"]["l"]) <= 1 and abs(dots["r"] - m["bar"]["r"]) <= 1  # as wide as the bar
        driver.execute_script("document.getElementById('cp-bar').scrollIntoView()")  # the question in the shot
        screenshot(driver, shots, f"worker-page-{name}-{w}px")
        driver.execute_script("window.scrollTo(0, 0)")


def check_endpoint_pages(driver, base: str, shots: Path) -> None:
    """The endpoint's index and an error page, in the worker page's look, at both widths."""
    from selenium.webdriver.common.by import By

    look = "const s = getComputedStyle(document.body); return [s.backgroundColor, s.fontFamily, s.fontSize];"
    worker_look = driver.execute_script(look)
    for name, (w, h) in WIDTHS.items():
        set_width(driver, w, h)
        for page, url in (("index", base + "/"), ("error-404", base + "/no/such/page")):
            driver.get(url)
            assert driver.execute_script(look) == worker_look, page
            assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"), \
                (page, name)
            header = driver.find_element(By.CSS_SELECTOR, "header")
            assert header.value_of_css_property("background-color") in ("rgba(34, 34, 51, 1)", "rgb(34, 34, 51)")
            main_box = driver.execute_script("const r = document.querySelector('main').getBoundingClientRect();"
                                             "return [r.left, r.right];")
            assert main_box[0] >= 0 and main_box[1] <= w
            if page == "index":
                rows = driver.find_elements(By.CSS_SELECTOR, "main .scroll table tr td a")
                assert rows and rows[0].text == "preview"  # the submitted HIT's row
                # every cell within the page, none off to the side (on a phone the rows are stacked cards)
                assert driver.execute_script(
                    "const m = document.querySelector('main').getBoundingClientRect();"
                    "return Array.from(document.querySelectorAll('main td')).every(td => {"
                    "  const r = td.getBoundingClientRect();"
                    "  return r.left >= m.left - 0.5 && r.right <= m.right + 0.5; });"
                ), (page, name)
            else:
                err = driver.find_element(By.CSS_SELECTOR, "main .card.err")
                assert "HTTP 404" in err.text and "/no/such/page" in err.text
                assert err.value_of_css_property("border-left-color") in ("rgba(192, 57, 43, 1)", "rgb(192, 57, 43)")
            screenshot(driver, shots, f"endpoint-{page}-{name}-{w}px")


def test_a_browser_does_the_hit_and_the_campaign_holds_its_answers(driver, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    preds, gt = one_class_sample(tmp_path / "in")
    toml = tmp_path / "campaign.toml"
    # a keyboard driven by selenium is faster than any person: no minimum time per question
    toml.write_text("[policy]\nk_pa = 0.0\n[crowd]\npoll_interval_s = 0.05\nround_timeout_s = 120.0\n"
                    "[quality]\nmin_seconds_per_question = 0.0\n")
    rd = init_run(tmp_path / "run", predictions=preds, gt=gt, config_path=toml, images_dir=sample_images(),
                  crowd={"kind": "mturk-local", "images": "render"})
    shots = tmp_path / "screenshots"
    shots.mkdir()
    crowd = local_endpoint_backend(rd, simulate=False)  # nobody but the browser works
    outcome = {}

    def campaign():
        try:
            outcome["result"] = Campaign(rd, crowd, progress=False).run(max_rounds=1)
        except BaseException as e:  # reported by the main thread
            outcome["error"] = e

    loop = threading.Thread(target=campaign, daemon=True)
    loop.start()
    try:
        listed = lambda: crowd.local.call("ListHITs", {"MaxResults": 10})["HITs"]  # noqa: E731
        assert wait_for(lambda: len(listed()) > 0 or not loop.is_alive(), timeout=20.0), "no HIT was published"
        [hit] = listed()
        driver.get(f"{crowd.handle.url}/hits/{hit['HITId']}/accept?workerId={WORKER}")
        driver.find_element(By.ID, "cp-accept").click()  # accepting is a POST
        assert wait_for(lambda: "assignmentId=" in driver.current_url)
        # the pictures were drawn and are served by the endpoint
        assert wait_for(lambda: driver.execute_script(
            "return document.images.length > 0 && "
            "Array.from(document.images).every(i => i.complete && i.naturalWidth === 256)"), timeout=20.0)
        # ... drawn on the sample's photos: few pixels of the gray canvas (128) in what the browser decoded
        gray = driver.execute_script(
            "const c = document.createElement('canvas'); c.width = c.height = 256; const g = c.getContext('2d');"
            "return Array.from(document.images).map(i => { g.drawImage(i, 0, 0);"
            "  const d = g.getImageData(0, 0, 256, 256).data; let k = 0;"
            "  for (let p = 0; p < d.length; p += 4) { if (Math.max(Math.abs(d[p] - 128), Math.abs(d[p + 1] - 128),"
            "    Math.abs(d[p + 2] - 128)) <= 8) { k++; } } return k / (256 * 256); });")
        assert len(gray) > 5 and sorted(gray)[len(gray) // 2] < 0.05, gray
        check_worker_page_layout(driver, shots)
        set_width(driver, 900, 1100)
        qids = driver.execute_script(
            "return Array.from(document.querySelectorAll('fieldset.cp-question')).map(f => f.dataset.questionId)")
        # golds answered right (as the requester knows them), the others in a pattern
        plan = rd.journal_read(1, "questions").set_index("question_id")
        planned = {q: bool(plan.at[q, "gold_label"]) if plan.at[q, "is_gold"] else (i % 3 != 1)
                   for i, q in enumerate(qids)}
        body = driver.find_element(By.TAG_NAME, "body")
        for q in qids:
            body.send_keys("y" if planned[q] else "n")
        assert driver.find_element(By.ID, "cp-done").text == str(len(qids))
        body.send_keys(Keys.ENTER)
        assert wait_for(lambda: "HIT submitted" in driver.page_source, timeout=20.0)
        check_endpoint_pages(driver, crowd.handle.url, shots)
        loop.join(timeout=60)
        assert not loop.is_alive(), "the round did not finish after the browser submitted"
    finally:
        if loop.is_alive():
            crowd.expire(hit["HITId"]) if "hit" in locals() else None
        loop.join(timeout=10)
        crowd.close()
    if "error" in outcome:
        raise outcome["error"]
    assert outcome["result"].rounds_run == 1 and rd.rounds() == [1]

    questions = rd.read_rounds("questions").sort_values("position")
    assert questions["question_id"].tolist() == qids  # the page shows the round's questions in order
    ans = rd.read_rounds("answers")
    assert len(ans) == len(qids) and set(ans["worker_id"]) == {WORKER}
    assert {q: bool(v) for q, v in zip(ans["question_id"], ans["label"])} == planned
    asg = rd.read_rounds("assignments")
    assert len(asg) == 1 and bool(asg["approved"].iloc[0]) and asg["flag"].isna().all()
    assert int(asg["n_gold_correct"].iloc[0]) == int(asg["n_gold"].iloc[0]) > 0
    assert crowd.local.ledger(entries=False)["approvals"] == 1
