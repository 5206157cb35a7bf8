"""The video worker page in headless Chromium: keys 1-9 choose a class in the network's order, 0/M mixed."""
from __future__ import annotations

import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

from crowdprop.video.page import highlight, render_hit
from tests.chromium import chromium_driver, wait_for

pytestmark = pytest.mark.browser
CLASSES = ["background", "disc", "box", "triangle"]


def test_highlight_darkens_outside_and_draws_the_edge():
    import io

    from PIL import Image

    frame = np.full((8, 8, 3), 200, np.uint8)
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    img = np.asarray(Image.open(io.BytesIO(highlight(frame, mask, scale=2))))
    assert img.shape == (16, 16, 3)
    assert tuple(img[0, 0]) == (70, 70, 70) and tuple(img[6, 6]) == (200, 200, 200)
    assert tuple(img[4, 6]) == (255, 215, 0)  # the region's first row is its edge


def test_worker_answers_with_keys_and_the_form_holds_them(tiny_clip):
    t, h, w = tiny_clip.labels.shape
    regions = np.zeros((t, h, w), np.int64)
    regions[:, : h // 2] = 1
    probs = np.zeros((t, 4, h, w), np.float32)
    probs[:, 3], probs[:, 1], probs[:, 0], probs[:, 2] = 0.5, 0.3, 0.15, 0.05  # order: triangle, disc, bg, box
    qs = pd.DataFrame({"question": [7, 8, 9], "frame": [0, 2, 5], "region": [1, 0, 1]})
    html = render_hit(tiny_clip.frames, regions, qs, CLASSES, probs).encode()
    posted = []

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(html)

        def do_POST(self):
            n = int(self.headers.get("Content-Length", 0))
            posted.append((self.path, urllib.parse.parse_qs(self.rfile.read(n).decode())))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"thanks")

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_port}"
    try:
        with chromium_driver() as d:
            from selenium.webdriver.common.by import By
            from selenium.webdriver.common.keys import Keys

            d.get(f"{base}/hit?assignmentId=A1&workerId=W1&turkSubmitTo={urllib.parse.quote(base)}")
            labels = [e.text for e in d.find_elements(By.CSS_SELECTOR, ".cp-question.cur label")]
            assert labels == ["1 triangle", "2 disc", "3 background", "4 box", "0 mixed"]
            body = d.find_element(By.TAG_NAME, "body")
            body.send_keys("2")  # question 7: disc
            assert wait_for(lambda: d.find_element(By.ID, "cp-k").text == "2")
            body.send_keys("m")  # question 8: mixed
            body.send_keys(Keys.ENTER)  # not all answered: nothing is sent
            assert d.find_element(By.ID, "cp-submit").get_attribute("disabled") is not None
            body.send_keys("1")  # question 9: triangle
            assert wait_for(lambda: d.find_element(By.ID, "cp-submit").get_attribute("disabled") is None)
            assert d.find_element(By.ID, "cp-done").text == "3"
            body.send_keys(Keys.ENTER)
            assert wait_for(lambda: bool(posted))
    finally:
        srv.shutdown()
    path, form = posted[0]
    assert path == "/mturk/externalSubmit"
    assert form["assignmentId"] == ["A1"] and form["workerId"] == ["W1"]  # the shared worker_form.js passes it on
    assert form["q7"] == ["1"] and form["q8"] == ["mixed"] and form["q9"] == ["3"]


def test_served_pictures_keep_a_hit_under_mturks_limit(tiny_clip):
    regions = np.zeros(tiny_clip.labels.shape, np.int64)
    qs = pd.DataFrame({"question": np.arange(50), "frame": np.arange(50) % 6, "region": 0})
    html = render_hit(tiny_clip.frames, regions, qs, CLASSES, None,
                      image_url=lambda t, r: f"https://example.org/hit/{t}-{r}.png")
    assert len(html.encode()) < 65535 and html.count("https://example.org/hit/") == 50
    assert "https://example.org/hit/5-0.png" in html


# ------------------------------------------------------------------ a campaign of 12 classes
CLASSES12 = ["background", "disc", "box", "triangle", "car", "person", "tree", "road", "sky", "sign", "bicycle",
             "water"]
WEIGHTS12 = [0.05, 0.20, 0.10, 0.15, 0.08, 0.12, 0.03, 0.06, 0.07, 0.01, 0.02, 0.04]
"""The network's mean probabilities: keys 1-9 are disc, triangle, person, box, car, sky, road,
background, water; tree, bicycle (the 11th class, id 10) and sign are on no key."""
QIDS = [f"v1-0-0-{k}" for k in range(4)]


def _twelve_class_hit(tiny_clip):
    """HTML of a 4-question HIT of a 12-class campaign, as the run renders it (the hits table's
    ``choices``, pictures inline), and each question's keyed classes."""
    from crowdprop.video.page import choice_order

    t, h, w = tiny_clip.labels.shape
    regions = np.zeros((t, h, w), np.int64)
    regions[:, : h // 2] = 1
    keyed = choice_order(np.array(WEIGHTS12))[:9]
    assert keyed == [1, 3, 5, 2, 4, 8, 7, 0, 11]
    qs = pd.DataFrame({"question": -1, "qid": QIDS, "frame": [0, 2, 4, 5], "region": [1, 0, 1, 0],
                       "choices": [keyed] * 4})
    return render_hit(tiny_clip.frames, regions, qs, CLASSES12, None), {q: keyed for q in QIDS}


def _client(url: str):
    import boto3
    from botocore.config import Config

    return boto3.client("mturk", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing",
                        config=Config(retries={"mode": "standard", "total_max_attempts": 1}))


def test_a_worker_chooses_any_class_of_the_campaign_and_the_reader_takes_it(tiny_clip):
    """On crowdprop's local MTurk endpoint (boto3 creates the HIT and lists the assignments): one
    worker answers by keyboard, one by pointer in a phone-sized window, one forges a class id
    outside the campaign; the answers are read by the reader the crowd backends use."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from crowdprop.hits.render import PageRenderer
    from crowdprop.mturk_local import LocalMTurk, ManualClock, serve
    from crowdprop.config import SimulationSection
    from crowdprop.replay.workers import WorkerPool
    from crowdprop.video.crowd import MIXED
    from crowdprop.video.hits import parse_unit_answers

    html, offered = _twelve_class_hit(tiny_clip)
    xml = PageRenderer(lambda row: "", dict(enumerate(CLASSES12))).question_xml(html)  # refused past 64 KB
    local = LocalMTurk({}, WorkerPool.build(SimulationSection(), 0), simulate=False, clock=ManualClock())
    handle = serve(local)
    url = handle.url
    try:
        client = _client(url)
        hit_id = client.create_hit(Title="Which class is the highlighted region?", Description="video regions",
                                   Reward="0.05", MaxAssignments=3, LifetimeInSeconds=3600,
                                   AssignmentDurationInSeconds=600, Question=xml)["HIT"]["HITId"]
        with chromium_driver() as d:
            def accept(worker):
                d.get(f"{url}/hits/{hit_id}/accept?workerId={worker}")
                d.find_element(By.ID, "cp-accept").click()
                assert wait_for(lambda: "assignmentId=" in d.current_url and d.find_elements(By.ID, "cp-submit"))
                return d.find_element(By.TAG_NAME, "body")

            def cur():
                return d.find_element(By.ID, "cp-k").text

            def listed():
                return [b.text for b in d.find_elements(By.CSS_SELECTOR, "#cp-other-list button") if b.is_displayed()]

            box = (By.ID, "cp-other-box")
            # preview: the list does not open
            d.get(f"{url}/hits/{hit_id}")
            assert wait_for(lambda: "ASSIGNMENT_ID_NOT_AVAILABLE" in d.current_url)
            d.find_element(By.TAG_NAME, "body").send_keys("o")
            d.find_element(By.ID, "cp-other-open").click()
            assert not d.find_element(*box).is_displayed()

            # keyboard
            body = accept("AKEYS1")
            labels = [e.text for e in d.find_elements(By.CSS_SELECTOR, ".cp-question.cur label:not(.cp-other)")]
            assert labels == [f"{k + 1} {CLASSES12[c]}" for k, c in enumerate(offered[QIDS[0]])] + ["0 mixed"]
            assert not d.find_elements(By.CSS_SELECTOR, ".cp-question.cur label.cp-other")
            body.send_keys("o")  # question 1: the 11th class, typed
            assert d.find_element(*box).is_displayed()
            assert d.switch_to.active_element.get_attribute("id") == "cp-other-filter"
            assert listed() == ["bicycle", "sign", "tree"]  # the classes on no key, by name
            d.switch_to.active_element.send_keys("BIC")
            assert listed() == ["bicycle"]
            d.switch_to.active_element.send_keys(Keys.ENTER)
            assert wait_for(lambda: cur() == "2") and not d.find_element(*box).is_displayed()
            first = d.find_element(By.CSS_SELECTOR, f'[data-question-id="{QIDS[0]}"] input[data-key="other"]')
            assert first.get_attribute("value") == "10" and first.is_selected()
            body.send_keys("9")  # question 2: the ninth key
            assert wait_for(lambda: cur() == "3")
            body.send_keys("/")  # question 3: the second on the list, by arrows
            d.switch_to.active_element.send_keys(Keys.ARROW_DOWN, Keys.ENTER)
            assert wait_for(lambda: cur() == "4")
            body.send_keys("O")  # question 4: keys typed into the filter stay there; Esc closes
            d.switch_to.active_element.send_keys("9")
            assert listed() == [] and cur() == "4" and d.find_element(By.ID, "cp-done").text == "3"
            d.switch_to.active_element.send_keys(Keys.ESCAPE)
            assert not d.find_element(*box).is_displayed()
            body.send_keys("m")
            assert wait_for(lambda: d.find_element(By.ID, "cp-done").text == "4")
            body.send_keys(Keys.ARROW_UP, "o")  # back to question 3: sign becomes bicycle
            assert cur() == "3"
            d.switch_to.active_element.send_keys("cycle", Keys.ENTER)
            third = d.find_element(By.CSS_SELECTOR, f'[data-question-id="{QIDS[2]}"] label.cp-other')
            assert third.get_attribute("textContent").strip() == "/ bicycle"
            body.send_keys(Keys.ENTER)
            assert wait_for(lambda: "HIT submitted" in d.page_source)

            # pointer, on a phone-sized window
            d.set_window_size(390, 844)
            accept("ATAPS1")
            d.find_element(By.ID, "cp-other-open").click()
            next(b for b in d.find_elements(By.CSS_SELECTOR, "#cp-other-list button") if b.text == "bicycle").click()
            assert wait_for(lambda: cur() == "2")
            d.find_elements(By.CSS_SELECTOR, ".cp-question.cur label")[0].click()  # key 1
            assert wait_for(lambda: cur() == "3")
            mixed = d.find_element(By.CSS_SELECTOR, '.cp-question.cur input[value="mixed"]')
            mixed.find_element(By.XPATH, "..").click()
            assert wait_for(lambda: cur() == "4")
            d.find_element(By.ID, "cp-other-open").click()
            d.find_element(By.ID, "cp-other-filter").send_keys("tr")
            assert listed() == ["tree"]
            d.find_element(By.CSS_SELECTOR, "#cp-other-list button.hi").click()
            assert wait_for(lambda: d.find_element(By.ID, "cp-submit").is_enabled())
            assert d.find_element(By.CSS_SELECTOR, ".cp-question.cur label.cp-other").text == "/ tree"
            d.find_element(By.ID, "cp-submit").click()
            assert wait_for(lambda: "HIT submitted" in d.page_source)

            # a forged class id: the 11th class chosen, then its value changed to 12 (no such class)
            d.set_window_size(900, 1100)
            body = accept("AFORGE1")
            body.send_keys("o")
            d.switch_to.active_element.send_keys("bicycle", Keys.ENTER)
            body.send_keys("1", "0", "1")
            d.execute_script(f"document.querySelector('[data-question-id=\"{QIDS[0]}\"] "
                             "input[data-key=\"other\"]').value = '12';")
            body.send_keys(Keys.ENTER)
            assert wait_for(lambda: "HIT submitted" in d.page_source)
        listed_asg = client.list_assignments_for_hit(HITId=hit_id, AssignmentStatuses=["Submitted"])["Assignments"]
    finally:
        handle.stop()
    got = {a["WorkerId"]: parse_unit_answers(a["Answer"], offered, n_classes=len(CLASSES12)) for a in listed_asg}
    q0, q1, q2, q3 = QIDS
    assert got["AKEYS1"] == ({q0: 10, q1: 11, q2: 10, q3: MIXED}, None)
    assert got["ATAPS1"] == ({q0: 10, q1: 1, q2: MIXED, q3: 6}, None)
    answers, flag = got["AFORGE1"]
    assert flag is not None and "'12'" in flag and "not offered" in flag
    assert answers == {q1: 1, q2: MIXED, q3: 1}  # what could be read; a flagged assignment's answers are not used
    # read against the keys alone, as before the list existed, the 11th class would be refused
    keys_only = parse_unit_answers(next(a["Answer"] for a in listed_asg if a["WorkerId"] == "AKEYS1"), offered)
    assert keys_only[1] is not None and "'10'" in keys_only[1]


def _well_formed(html: str) -> None:
    """Every element closed in order (void elements aside), ids unique, one form: what MTurk's
    HTMLQuestion needs of the page."""
    from html.parser import HTMLParser

    void = {"meta", "link", "img", "input", "br", "hr"}

    class P(HTMLParser):
        def __init__(self):
            super().__init__()
            self.open, self.ids, self.forms = [], [], 0

        def handle_starttag(self, tag, attrs):
            self.ids += [v for k, v in attrs if k == "id"]
            self.forms += tag == "form"
            if tag not in void:
                self.open.append(tag)

        def handle_endtag(self, tag):
            assert self.open and self.open.pop() == tag, f"</{tag}> closes nothing open"

    p = P()
    p.feed(html)
    p.close()
    assert p.open == [] and len(p.ids) == len(set(p.ids)) and p.forms == 1


def test_pages_whose_questions_have_every_class_on_keys_have_no_other_list(tiny_clip):
    regions = np.zeros(tiny_clip.labels.shape, np.int64)
    qs = pd.DataFrame({"question": [0, 1], "frame": [0, 1], "region": 0})
    html = render_hit(tiny_clip.frames, regions, qs, CLASSES, None)
    assert "cp-other" not in html
    twelve, _ = _twelve_class_hit(tiny_clip)
    assert twelve.count('id="cp-other-list"') == 1 and 'data-key="10"' not in twelve
    assert twelve.count("<button type=\"button\" data-class=") == 12  # every class, listed once per page
    _well_formed(html)
    _well_formed(twelve)
