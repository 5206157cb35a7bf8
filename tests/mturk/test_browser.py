"""The worker page in a real browser (Debian chromium + chromedriver, driven by selenium).

Needs ``apt-get install -y chromium chromium-driver`` and ``pip install selenium``;
selenium-manager is never used (it would download a driver).
"""
from __future__ import annotations

import urllib.parse

import pytest

from .conftest import make_hit
from .endpoint import start

from chromium import chromium_driver, wait_for  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("fake_credentials")]


@pytest.fixture(scope="module")
def driver():
    with chromium_driver("900,1100") as d:
        yield d


@pytest.fixture
def rig(tmp_path, coco128):
    masks, images, root = coco128
    r = start(tmp_path, masks, images, root, simulate=False)
    yield r
    r.handle.stop()


def _errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def test_keyboard_only_answers_are_what_poll_returns(driver, rig, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    backend = rig.backend()
    hit = make_hit(rig.masks, n=7, token="browser-r0-b0")
    hit_id = backend.publish(hit)
    worker = "ABROWSERWORKER01"
    aid = rig.local.accept(hit_id, worker)
    query = urllib.parse.urlencode({"assignmentId": aid, "hitId": hit_id, "workerId": worker,
                                    "turkSubmitTo": rig.handle.url})
    driver.get(f"{rig.handle.url}/hits/{hit_id}?{query}")
    _errors(driver)  # drain
    assert wait_for(lambda: driver.execute_script(
        "return Array.from(document.images).every(i => i.complete && i.naturalWidth === 256)"))
    submit = driver.find_element(By.ID, "cp-submit")
    assert driver.find_element(By.ID, "cp-progress").text == "1 / 7"
    assert not submit.is_enabled()

    planned = [True, False, False, True, True, False, True]
    keys = ["y", "n", Keys.ARROW_RIGHT, Keys.ARROW_LEFT, "Y", "N", "y"]
    body = driver.find_element(By.TAG_NAME, "body")
    for k, key in enumerate(keys):
        body.send_keys(key)
        if k < 6:
            assert driver.find_element(By.ID, "cp-progress").text == f"{k + 2} / 7"
            assert not submit.is_enabled()
    assert driver.find_element(By.ID, "cp-done").text == "7"
    assert submit.is_enabled()
    shot = tmp_path / "hit.png"
    assert driver.save_screenshot(str(shot))
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size[0] >= 800 and len(set(im.convert("L").getdata())) > 50
    assert _errors(driver) == []

    body.send_keys(Keys.ENTER)
    assert wait_for(lambda: "HIT submitted" in driver.page_source)
    [a] = backend.poll([hit_id])
    assert (a.assignment_id, a.worker_id, a.flag) == (aid, worker, None)
    assert a.answers == {q.question_id: v for q, v in zip(hit.questions, planned)}


def test_answers_can_be_reviewed_and_changed(driver, rig):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    hit_id = rig.backend().publish(make_hit(rig.masks, n=3, token="review-r0-b0"))
    _errors(driver)
    aid = rig.local.accept(hit_id, "AREVIEWER01")
    query = urllib.parse.urlencode({"assignmentId": aid, "workerId": "AREVIEWER01", "turkSubmitTo": rig.handle.url})
    driver.get(f"{rig.handle.url}/hits/{hit_id}?{query}")
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys("y", "y", "y", Keys.ARROW_UP, Keys.ARROW_UP)
    assert driver.find_element(By.ID, "cp-progress").text == "1 / 3"
    body.send_keys("n")  # changes question 1 and moves on
    checked = driver.execute_script(
        "return Array.from(document.querySelectorAll('input:checked')).map(i => i.value)")
    assert checked == ["no", "yes", "yes"]
    assert _errors(driver) == []


def test_preview_disables_submit(driver, rig, tmp_path):
    from selenium.webdriver.common.by import By

    hit = make_hit(rig.masks, n=4, token="preview-r0-b0")
    hit_id = rig.backend().publish(hit)
    _errors(driver)  # drain what earlier pages (e.g. the endpoint's own thank-you page) logged
    driver.get(f"{rig.handle.url}/hits/{hit_id}")  # the endpoint adds assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE
    assert "ASSIGNMENT_ID_NOT_AVAILABLE" in driver.current_url
    assert not driver.find_element(By.ID, "cp-submit").is_enabled()
    assert driver.find_element(By.ID, "cp-msg").text == "Accept the HIT to start"
    driver.find_element(By.TAG_NAME, "body").send_keys("y")
    assert driver.find_element(By.ID, "cp-done").text == "0"
    assert _errors(driver) == []
    # no query string at all (a page opened on its own) is a preview too
    page = tmp_path / "page.html"
    page.write_text(rig.page.render(hit), encoding="utf-8")
    driver.get(page.as_uri())
    assert not driver.find_element(By.ID, "cp-submit").is_enabled()
    assert driver.find_element(By.ID, "cp-msg").text == "Accept the HIT to start"
    shot = tmp_path / "preview.png"
    assert driver.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _errors(driver) == []
