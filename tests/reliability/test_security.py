"""Credentials never reach logs, reports, exports or Parquet; worker pages load nothing from
elsewhere than the campaign's own image location.

Covered elsewhere and not repeated: XML entity expansion and external entities
(tests/mturk/test_answers.py, and through a live campaign in test_bad_inputs.py), jinja2
autoescaping of class names holding HTML and script on the worker page
(tests/mturk/test_render.py) and in report.html (tests/report/test_report_html.py), production
only with an explicit --target production and a typed yes or --yes (tests/test_mturk_campaign.py).
"""
from __future__ import annotations

import logging
import re
from html.parser import HTMLParser

from crowdprop.cli import main
from crowdprop.commands.replay import sample_paths
from crowdprop.mturk_local import LocalMTurk, serve, truth_from_masks
from crowdprop.replay.workers import WorkerPool

ENV_KEY, ENV_SECRET = "AKIAENVFAKE000000001", "envSecretFake/0000000000000000000000000001"
FILE_KEY, FILE_SECRET = "AKIAFILEFAKE00000002", "fileSecretFake/000000000000000000000000002"
PROFILE_KEY, PROFILE_SECRET = "AKIAPROFFAKE00000003", "profSecretFake/000000000000000000000000003"
SESSION_TOKEN = "FwoGZXIvYXdzEFakeSessionToken0000000000000004"
SECRETS = (ENV_KEY, ENV_SECRET, FILE_KEY, FILE_SECRET, PROFILE_KEY, PROFILE_SECRET, SESSION_TOKEN)


class Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.script_src: list[str] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href", "action", "srcset", "data", "poster") and v is not None:
                self.refs.append((tag, k, v))
            if tag == "script" and k == "src":
                self.script_src.append(v or "")


def test_credentials_never_leak_and_pages_load_only_campaign_images(tmp_path, monkeypatch, capsys, caplog):
    creds = tmp_path / "aws" / "credentials"
    creds.parent.mkdir()
    creds.write_text(f"[default]\naws_access_key_id = {FILE_KEY}\naws_secret_access_key = {FILE_SECRET}\n\n"
                     f"[crowdprop]\naws_access_key_id = {PROFILE_KEY}\naws_secret_access_key = {PROFILE_SECRET}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ENV_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ENV_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    caplog.set_level(logging.DEBUG)
    preds, gt, config = sample_paths()
    toml = tmp_path / "c.toml"
    toml.write_text(open(config).read() + "\n[campaign]\nbudget_usd = 1.5\n")
    run = tmp_path / "run"
    texts = []

    def cli(*args):
        assert main(["-vv", *map(str, args)]) == 0
        out, err = capsys.readouterr()
        texts.extend([out, err])

    cli("init", run, "--predictions", preds, "--gt", gt, "--config", toml, "--crowd", "mturk")
    from crowdprop.campaign.store import RunDir

    rd = RunDir(run)
    cfg = rd.config
    local = LocalMTurk(truth_from_masks(rd.masks, correct_iou=cfg.campaign.correct_iou),
                       WorkerPool.build(cfg.simulation, cfg.campaign.seed), images_dir=run / "hit_images")
    with serve(local) as h:
        cli("run", run, "--endpoint-url", h.url, "--rounds", "1")  # signs with the environment's key
        cli("run", run, "--endpoint-url", h.url, "--profile", "crowdprop")  # and with a profile's key
        hits = [x["HITId"] for x in local.call("ListHITs", {"MaxResults": 100})["HITs"]]
        pages = [local.hit_page(x) for x in hits]
        url = h.url
    cli("report", run, "--html")
    cli("status", run)
    cli("export", run, "-o", tmp_path / "accepted.json", "--answers", tmp_path / "answers.csv",
        "--golds", tmp_path / "golds.csv")
    assert caplog.records and rd.rounds()  # debug logging was on, and the campaign ran
    texts.append(caplog.text)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p != creds]
    assert any(p.suffix == ".parquet" for p in files) and (run / "report.html").exists()
    for secret in SECRETS:
        assert not any(secret in t for t in texts), secret
        raw = secret.encode()
        for p in files:
            assert raw not in p.read_bytes(), (secret, p)

    # the worker pages: one inline script, no <script src>, every reference the campaign's images
    assert len(pages) >= 2
    for page in pages:
        parser = Refs()
        parser.feed(page)
        assert parser.script_src == [] and not re.search(r"<script[^>]*\ssrc\s*=", page, re.I)
        imgs = [v for t, k, v in parser.refs if t == "img"]
        assert imgs and all(v.startswith(url + "/images/") for v in imgs)
        others = [(t, k, v) for t, k, v in parser.refs if t != "img"]
        assert all(v == "" or v.startswith(("data:", "#")) for _, _, v in others), others  # action: set by JS
        assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", page, re.I)


def test_credentials_typed_into_the_endpoint_url_are_dropped_not_printed_or_stored(tmp_path, capsys, caplog):
    import json

    from crowdprop.campaign.store import RunDir

    caplog.set_level(logging.DEBUG)
    preds, gt, config = sample_paths()
    toml = tmp_path / "c.toml"
    toml.write_text(open(config).read() + "\n[campaign]\nbudget_usd = 1.0\n")
    run = tmp_path / "run"
    assert main(["init", str(run), "--predictions", preds, "--gt", gt, "--config", str(toml), "--crowd", "mturk"]) == 0
    rd = RunDir(run)
    cfg = rd.config
    local = LocalMTurk(truth_from_masks(rd.masks, correct_iou=cfg.campaign.correct_iou),
                       WorkerPool.build(cfg.simulation, cfg.campaign.seed), images_dir=run / "hit_images")
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYTYPEDSECRET"
    with serve(local) as h:
        typed = h.url.replace("http://", f"http://{ENV_KEY}:{secret}@")
        assert main(["-vv", "run", str(run), "--endpoint-url", typed, "--rounds", "1"]) == 0
        out, err = capsys.readouterr()
    assert rd.rounds() == [1]  # it ran, at the URL without the credentials
    assert "user name and password in --endpoint-url are ignored" in err
    crowd = json.loads((run / "campaign.json").read_text())["crowd"]
    assert crowd["endpoint_url"] == h.url
    texts = [out, err, caplog.text] + [p.read_bytes().decode("latin-1") for p in run.rglob("*") if p.is_file()]
    for t in texts:
        assert ENV_KEY not in t and "TYPEDSECRET" not in t and "K7MDENG" not in t
