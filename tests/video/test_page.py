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
