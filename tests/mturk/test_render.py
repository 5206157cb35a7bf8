"""The worker page: contract attributes, escaping, no external scripts, HTMLQuestion size."""
from __future__ import annotations

from html.parser import HTMLParser

import pytest
from defusedxml import ElementTree as DET

from crowdprop.crowd.base import HitRequest, Question
from crowdprop.hits.render import MAX_QUESTION_BYTES, HitTooLarge, PageRenderer

from .conftest import CLASS_NAMES, make_hit


class _Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.fieldsets, self.radios, self.scripts, self.urls, self.hidden = [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "fieldset" and "data-question-id" in a:
            self.fieldsets.append(a)
        if tag == "input" and a.get("type") == "radio":
            self.radios.append((a["name"], a["value"]))
        if tag == "input" and a.get("type") == "hidden":
            self.hidden.append(a.get("name"))
        if tag == "script":
            self.scripts.append(a)
        for key in ("src", "href", "action"):
            if a.get(key):
                self.urls.append((tag, key, a[key]))

    handle_startendtag = handle_starttag


def parse(html: str) -> _Page:
    p = _Page()
    p.feed(html)
    return p


def url_of(row) -> str:
    return f"https://img.example.org/m/{int(row['mask_id'])}.jpg?sig=a&b=c"


@pytest.fixture(scope="module")
def renderer(coco128):
    masks, _, _ = coco128
    return PageRenderer(url_of, CLASS_NAMES, masks=masks)


def test_one_fieldset_per_question_with_contract_attributes(renderer, coco128):
    masks, _, _ = coco128
    hit = make_hit(masks, n=9, start=2)
    page = parse(renderer.render(hit))
    assert [f["data-question-id"] for f in page.fieldsets] == [q.question_id for q in hit.questions]
    rows = [masks.iloc[q.mask_row] for q in hit.questions]
    assert [int(f["data-mask-id"]) for f in page.fieldsets] == [int(r["mask_id"]) for r in rows]
    assert [int(f["data-category-id"]) for f in page.fieldsets] == [int(r["category_id"]) for r in rows]
    assert all(f["class"] == "cp-question" for f in page.fieldsets)
    assert page.radios == [(q.question_id, v) for q in hit.questions for v in ("yes", "no")]
    assert page.hidden == ["assignmentId"]
    imgs = [u for t, k, u in page.urls if t == "img"]
    assert imgs == [url_of(r) for r in rows]  # &amp; in the markup decodes back to the URL


def test_golds_look_like_other_questions(renderer, coco128):
    masks, _, _ = coco128
    plain = make_hit(masks, n=4)
    gold = HitRequest(plain.token, 0, 0, tuple(Question(q.question_id, q.mask_row, is_gold=True, gold_label=True)
                                               for q in plain.questions), 1, 0.05, "test")
    assert renderer.render(gold) == renderer.render(plain)


def test_class_name_and_question_id_are_escaped(coco128):
    masks, _, _ = coco128
    names = {c: "<script>alert(1)</script>" for c in masks["category_id"].unique()}
    r = PageRenderer(url_of, names, masks=masks)
    qid = 'q"><img src=x onerror=alert(2)>'
    hit = HitRequest("t", 0, 0, (Question(qid, 0),), 1, 0.05)
    html = r.render(hit)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html
    assert "onerror=alert(2)>" not in html
    page = parse(html)
    assert [f["data-question-id"] for f in page.fieldsets] == [qid]
    assert [t for t, k, u in page.urls if t == "img"] == ["img"]  # the injected <img> did not become a tag


def test_no_external_script_or_style(renderer, coco128):
    masks, _, _ = coco128
    html = renderer.render(make_hit(masks, n=5))
    page = parse(html)
    assert "<script src" not in html.lower()
    assert all("src" not in s for s in page.scripts)
    assert len(page.scripts) == 1  # the inline one
    non_image = [(t, k, u) for t, k, u in page.urls if t != "img"]
    assert non_image == [("link", "href", "data:,")]  # the empty favicon; the form action is set by JS


def test_question_xml_round_trips_the_page(renderer, coco128):
    masks, _, _ = coco128
    html = renderer.render(make_hit(masks, n=3)) + "<!-- a ]]> inside the page -->"
    xml = renderer.question_xml(html)
    root = DET.fromstring(xml)
    ns = "{http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2011-11-11/HTMLQuestion.xsd}"
    assert root.tag == f"{ns}HTMLQuestion"
    assert root.find(f"{ns}HTMLContent").text.strip() == html
    assert root.find(f"{ns}FrameHeight").text == "0"


def test_question_over_64kb_is_refused_with_a_clear_error(coco128):
    masks, _, _ = coco128
    long_url = lambda row: "https://bucket.s3.amazonaws.com/" + "x" * 1500  # noqa: E731
    r = PageRenderer(long_url, CLASS_NAMES, masks=masks)
    hit = make_hit(masks, n=50, token="big")
    with pytest.raises(HitTooLarge, match=r"HIT big: the HTMLQuestion is \d+ bytes and MTurk accepts at most 65535"):
        r.question_xml(r.render(hit), token="big")
    small = make_hit(masks, n=5)
    assert len(r.question_xml(r.render(small)).encode()) <= MAX_QUESTION_BYTES


def test_default_50_question_hit_fits_with_ordinary_urls(renderer, coco128):
    masks, _, _ = coco128
    xml = renderer.question_xml(renderer.render(make_hit(masks, n=50)))
    assert len(xml.encode()) <= MAX_QUESTION_BYTES
    assert xml.count('class="cp-question"') == 50
