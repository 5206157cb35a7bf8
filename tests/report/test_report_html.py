"""report.json and report.html against the Parquet state, recomputed here from the tables."""
from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from crowdprop.campaign.export import final_status
from crowdprop.campaign.store import RunDir
from crowdprop.cli import main
from crowdprop.report.html import render_report, sample_gallery

from .conftest import NASTY


def tables(run: RunDir, name: str) -> pd.DataFrame:
    """Every committed round's table ``name``, read straight from the files."""
    files = sorted((run.path / "state" / name).glob("round-*.parquet"))
    frames = [f for f in (pd.read_parquet(f) for f in files) if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class Page(HTMLParser):
    """Collects text by element id, table cells by (row key, data-col), and every src/href."""

    def __init__(self):
        super().__init__()
        self.ids, self.cells, self.refs, self.tags = {}, {}, [], []
        self._id = None
        self._row = None
        self._col = None
        self._buf = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        for k in ("src", "href"):
            if k in a:
                self.refs.append((tag, k, a[k]))
        if tag == "tr":
            key = a.get("data-category-id") or a.get("data-worker")
            self._row = key
        if "id" in a and tag in ("div", "span"):
            self._id, self._buf = a["id"], []
        if tag == "td" and ("data-col" in a or "data-key" in a):
            self._col, self._buf = a.get("data-col") or a.get("data-key"), []

    def handle_endtag(self, tag):
        if tag in ("div", "span") and self._id is not None:
            self.ids[self._id] = "".join(self._buf).strip()
            self._id = None
        if tag == "td" and self._col is not None:
            self.cells[(self._row, self._col)] = "".join(self._buf).strip()
            self._col = None

    def handle_data(self, data):
        if self._id is not None or self._col is not None:
            self._buf.append(data)


def number(s: str) -> float:
    return float(s.replace(",", "").replace("$", "").replace("×", ""))


@pytest.fixture(scope="module")
def page(sample_run):
    p = Page()
    p.feed((sample_run.path / "report.html").read_text())
    return p


def test_report_json_totals_match_parquet(sample_run):
    rep = json.loads((sample_run.path / "report.json").read_text())
    ans, spend, hits = tables(sample_run, "answers"), tables(sample_run, "spend"), tables(sample_run, "hits")
    usable = ans[ans["used"]]
    final = final_status(sample_run)
    t = rep["total"]
    assert t["questions"] == int((~usable["is_gold"]).sum())
    assert t["golds"] == int(usable["is_gold"].sum())
    assert round(t["usd"] * 100) == spend["cents"].sum()
    assert t["hits"] == len(hits)
    assert t["accepted"] == int((final == 1).sum())
    assert t["rejected"] == int((final == 0).sum())
    assert t["rounds"] == len(list((sample_run.path / "state" / "questions").glob("round-*.parquet")))


def test_report_html_summary_matches_parquet(sample_run, page):
    ans, spend = tables(sample_run, "answers"), tables(sample_run, "spend")
    final = final_status(sample_run)
    assert number(page.ids["sum-accepted"]) == (final == 1).sum()
    assert number(page.ids["sum-masks"]) == len(final)
    assert number(page.ids["sum-questions"]) == (ans["used"] & ~ans["is_gold"]).sum()
    assert number(page.ids["sum-usd"]) == pytest.approx(spend["cents"].sum() / 100, abs=0.005)
    assert number(page.cells[(None, "rewards")]) == pytest.approx(
        spend.loc[spend["kind"] == "reward", "cents"].sum() / 100, abs=0.005)
    assert number(page.cells[(None, "fees")]) == pytest.approx(spend.loc[spend["kind"] == "fee", "cents"].sum() / 100,
                                                               abs=0.005)
    hours = tables(sample_run, "assignments")["work_seconds"].sum() / 3600
    assert number(page.ids["sum-hours"]) == pytest.approx(hours, abs=0.005)
    masks = pd.read_parquet(sample_run.path / "masks.parquet")
    correct = masks["gt_iou"].to_numpy() > sample_run.config.campaign.correct_iou
    assert number(page.ids["sum-true-precision"]) == pytest.approx(correct[final == 1].mean(), abs=5e-4)


def test_report_html_per_class_matches_parquet(sample_run, page):
    masks = pd.read_parquet(sample_run.path / "masks.parquet")
    ans = tables(sample_run, "answers")
    final = final_status(sample_run)
    cat = masks["category_id"].to_numpy()
    plain = ans[ans["used"] & ~ans["is_gold"]]
    q = pd.Series(cat[plain["mask_row"].to_numpy()]).value_counts()
    shown = {k[0] for k in page.cells if k[0] is not None and k[0].isdigit()}
    assert shown == {str(c) for c in np.unique(cat)}
    for c in np.unique(cat):
        k = str(c)
        assert int(page.cells[(k, "masks")]) == (cat == c).sum()
        assert int(page.cells[(k, "accepted")]) == ((cat == c) & (final == 1)).sum()
        assert int(page.cells[(k, "rejected")]) == ((cat == c) & (final == 0)).sum()
        assert int(page.cells[(k, "questions")]) == q.get(c, 0)


def test_report_html_workers_match_parquet(sample_run, page):
    ass = tables(sample_run, "assignments")
    ans = tables(sample_run, "answers")
    blocks = tables(sample_run, "blocks")
    kinds = blocks.groupby("worker_id")["kind"].agg(set).to_dict() if len(blocks) else {}
    per = ass.groupby("worker_id").agg(n=("n_gold", "sum"), ok=("n_gold_correct", "sum"), a=("approved", "sum"),
                                       k=("approved", "size"))
    assert {k[0] for k in page.cells if k[0] and k[0].startswith("SIMW")} == set(per.index)
    for w, r in per.iterrows():
        assert int(page.cells[(w, "golds")]) == r["n"]
        # Beta(1, 1) posterior mean of gold accuracy
        assert number(page.cells[(w, "gold_accuracy")]) == pytest.approx((r["ok"] + 1) / (r["n"] + 2), abs=5e-4)
        assert int(page.cells[(w, "approved")]) == r["a"]
        assert int(page.cells[(w, "rejected")]) == r["k"] - r["a"]
        assert int(page.cells[(w, "answers")]) == (ans["worker_id"] == w).sum()
        k = kinds.get(w, set())
        assert page.cells[(w, "status")] == ("hard-blocked" if "hard" in k else "soft-blocked" if k else "ok")


def test_report_html_has_no_external_reference(sample_run, page):
    html = (sample_run.path / "report.html").read_text()
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert page.refs, "the page has images and anchors"
    for tag, attr, value in page.refs:
        if attr == "src":
            assert value.startswith("data:image/"), (tag, value[:60])
        else:
            assert value.startswith("#"), (tag, value)
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", html, re.I)
    assert not re.search(r"url\(|@import|@font-face", html, re.I)
    # the only http(s) text is the COCO URLs of images, shown as text (tooltips)
    urls = set(re.findall(r"https?://[^\s\"'<>&]+", html))
    coco = set(pd.read_parquet(sample_run.path / "images.parquet")["coco_url"])
    assert urls and urls <= coco


def test_class_name_holding_html_is_escaped(coco128_run, tmp_path):
    run, img_dir = coco128_run
    html = render_report(run, image_root=img_dir, per_class=2)
    assert "<script" not in html.lower()
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;people&#34; $x$"
    assert html.count(escaped) >= 3  # class table (text and title), gallery heading
    p = Page()
    p.feed(html)
    assert "script" not in p.tags


def _thumbs(gallery):
    from PIL import Image

    for g in gallery:
        for key in ("accepted", "rejected"):
            for m in g[key]:
                data = base64.b64decode(m["src"].split(",", 1)[1])
                yield g, key, m, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def test_gallery_draws_on_image_files_or_gray(coco128_run):
    run, img_dir = coco128_run
    final = final_status(run)
    gray_share = {}
    for root in (None, img_dir):
        gal = sample_gallery(run, final, rng=np.random.default_rng(0), per_class=2, image_root=root)
        gray_share[root is None] = [float((np.abs(px - 128).max(axis=2) <= 8).mean()) for *_, px in _thumbs(gal)]
    assert len(gray_share[True]) == len(gray_share[False]) > 10
    assert min(gray_share[True]) > 0.3  # gray canvas around every mask
    assert np.median(gray_share[False]) < 0.1  # photographs


def test_gallery_samples_are_seeded_and_labeled(sample_run):
    final = final_status(sample_run)
    masks = pd.read_parquet(sample_run.path / "masks.parquet")
    row_of = {int(m): i for i, m in enumerate(masks["mask_id"])}

    def ids(seed):
        gal = sample_gallery(sample_run, final, rng=np.random.default_rng(seed), per_class=3, max_classes=5,
                             out_px=32)
        return {(g["category_id"], k): [m["mask_id"] for m in g[k]] for g in gal for k in ("accepted", "rejected")}
    a, b, c = ids(1), ids(1), ids(2)
    assert a == b and a != c
    counts = masks["category_id"].value_counts()
    assert [k[0] for k in a][::2] == sorted(counts.index, key=lambda x: (-counts[x], x))[:5]
    for (cat, key), mids in a.items():
        want = 1 if key == "accepted" else 0
        rows = [row_of[m] for m in mids]
        assert all(final[r] == want and masks["category_id"].iat[r] == cat for r in rows)
        assert len(mids) == min(3, int(((masks["category_id"] == cat).to_numpy() & (final == want)).sum()))


def test_cli_report_html_keeps_the_text_report(sample_run, copy_run, capsys):
    run = copy_run(sample_run)
    (run.path / "report.html").unlink()
    assert main(["report", str(run.path)]) == 0
    plain = capsys.readouterr().out
    assert not (run.path / "report.html").exists()
    assert main(["report", str(run.path), "--html", "--gallery", "1", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(plain) and out[len(plain):].strip() == f"report page: {run.path / 'report.html'}"
    assert (run.path / "report.html").stat().st_size > 10_000
    assert main(["report", str(run.path), "--images", str(run.path)]) == 2
    assert "--images" in capsys.readouterr().err


def test_per_class_interval_of_zero_to_one_says_too_few_answers(sample_run):
    """A class whose interval is [0, 1] (no evidence) shows "too few answers", the others their interval."""
    rep = json.loads((sample_run.path / "report.json").read_text())
    classes = [c for c in rep["classes"] if c.get("est_precision") is not None]
    assert len(classes) >= 2
    vacuous, informative = classes[0], classes[1]
    vacuous.update(est_precision=0.5, est_precision_lo=0.0, est_precision_hi=1.0)
    informative.update(est_precision=0.9, est_precision_lo=0.8, est_precision_hi=0.95)
    html = render_report(sample_run, rep, progress=False)
    rows = {m.group(1): m.group(2) for m in re.finditer(r'<tr data-category-id="(\d+)">(.*?)</tr>', html, re.S)}
    assert "too few answers" in rows[str(vacuous["category_id"])]
    assert "[0.000, 1.000]" not in rows[str(vacuous["category_id"])]
    assert "[0.800, 0.950]" in rows[str(informative["category_id"])]
    assert "too few answers" not in rows[str(informative["category_id"])]


def test_estimate_against_truth_axes_follow_the_truth_and_log_axes_need_a_decade():
    from crowdprop.report.figures import _decades, _estimate_limits

    (x0, x1), (y0, y1) = _estimate_limits(np.array([0.920, 0.921, 0.925]), np.array([0.70, 0.75, 0.80]),
                                          np.array([1.0, 0.99, 0.97]))
    assert x1 - x0 >= 0.1 and x0 < 0.920 and x1 > 0.925  # not a strip at the edge
    assert y0 <= 0.70 and y1 >= 1.0
    assert _decades(np.array([10.0, 50.0, 99.0])) < 1.0 <= _decades(np.array([10.0, 100.0, 1000.0]))
    assert _decades(np.array([np.nan, 0.0])) == 0.0
