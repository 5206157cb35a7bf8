"""README's "Do a HIT yourself", followed as written: the shipped sample on MTurk's API through
`crowdprop mturk-local RUN_DIR --no-simulate` and `crowdprop run --endpoint-url`, a person in a real
headless Chromium who takes the qualification test and does a HIT, Ctrl-C, then `crowdprop hits
RUN_DIR expire`."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from crowdprop.cli import main
from crowdprop.commands.replay import sample_paths
from crowdprop.mturk_local.qualification import parse_answer_key, parse_test

from chromium import chromium_driver, wait_for  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("no_aws_credentials")]

README = Path(__file__).resolve().parents[2] / "README.md"


def _walkthrough() -> tuple[str, list[str]]:
    """The TOML and the shell lines of README's "Do a HIT yourself"."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Do a HIT yourself", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, flags=re.S)
    toml = next(b for lang, b in blocks if lang == "toml")
    shell = [line.split("#", 1)[0].strip() for lang, b in blocks if lang == "bash" for line in b.splitlines()]
    return toml, [line for line in shell if line]


def _popen(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "crowdprop", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_do_a_hit_yourself_as_the_readme_says(tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By

    toml, lines = _walkthrough()
    monkeypatch.chdir(tmp_path)
    Path("me.toml").write_text(toml, encoding="utf-8")
    preds, gt, _ = sample_paths()
    # line 1: crowdprop init (the sample's files: what README's S=... resolves to)
    init, serve_line, run_line = lines[-3:]
    assert init.startswith("crowdprop init runs/me") and "--crowd mturk" in init and "--config me.toml" in init
    assert main(["init", "runs/me", "--predictions", preds, "--gt", gt, "--config", "me.toml", "--crowd", "mturk"]) == 0
    # line 2: the endpoint, no simulated workers, the run's pictures; a free port instead of 8443
    assert serve_line.startswith("crowdprop mturk-local runs/me --no-simulate")
    endpoint = _popen(["mturk-local", "runs/me", "--no-simulate", "--port", "0"])
    run = None
    try:
        first = endpoint.stdout.readline()
        assert first.startswith("local MTurk endpoint: http://127.0.0.1:"), first + endpoint.stderr.read()
        url = first.split(": ", 1)[1].strip()
        # line 3: crowdprop run against it, which prints the page to open
        assert run_line.startswith("crowdprop run runs/me --endpoint-url http://127.0.0.1:8443")
        run = _popen(["run", "runs/me", "--endpoint-url", url])
        out = ""
        while "workers' page" not in out:
            line = run.stdout.readline()
            assert line, run.stderr.read()
            out += line
        assert f"workers' page: {url}/" in out

        with chromium_driver("1000,1200") as d:
            assert wait_for(lambda: d.get(url + "/") or "Accept" in d.page_source, timeout=60)
            # take the qualification test as ALOCALWORKER, answering what you see (here: the known answers)
            d.find_element(By.PARTIAL_LINK_TEXT, "qualification test").click()
            qt_id = d.current_url.rsplit("/", 1)[1].split("?")[0]
            import boto3
            import botocore

            client = boto3.client("mturk", endpoint_url=url, region_name="us-east-1",
                                  config=botocore.config.Config(signature_version=botocore.UNSIGNED))
            qt = client.get_qualification_type(QualificationTypeId=qt_id)["QualificationType"]
            key = parse_answer_key(qt["AnswerKey"], parse_test(qt["Test"]))
            right = {q: next(iter(opts[0][0])) for q, opts in key.options.items()}
            assert len(right) >= 3
            assert d.find_element(By.NAME, "workerId").get_attribute("value") == "ALOCALWORKER"
            for fs in d.find_elements(By.CSS_SELECTOR, "fieldset[data-question-id]"):
                qid = fs.get_attribute("data-question-id")
                assert fs.find_elements(By.TAG_NAME, "img")  # the gold mask's picture
                fs.find_element(By.CSS_SELECTOR, f"input[value='{right[qid]}']").click()
            d.find_element(By.ID, "cp-submit-test").click()
            assert wait_for(lambda: "scored 100" in d.page_source)
            # press Accept next to a HIT, answer every question (y), submit
            d.get(url + "/")
            d.find_element(By.CSS_SELECTOR, "form[action^='/hits/'] button").click()
            assert wait_for(lambda: "assignmentId=" in d.current_url and d.find_elements(By.ID, "cp-submit"))
            done_hit = re.search(r"/hits/([A-Z0-9]+)\?", d.current_url).group(1)
            n = len(d.find_elements(By.CSS_SELECTOR, "fieldset.cp-question"))
            body = d.find_element(By.TAG_NAME, "body")
            for _ in range(n):
                body.send_keys("y")
            assert wait_for(lambda: d.find_element(By.ID, "cp-submit").is_enabled())
            d.find_element(By.ID, "cp-submit").click()
            assert wait_for(lambda: "HIT submitted" in d.page_source)

        # crowdprop run records the answers at its next poll
        received = Path("runs/me/journal/round=00001/received.parquet")
        assert wait_for(received.exists, timeout=60)
        # Ctrl-C: it says how many HITs are still live and how to take them off the market
        _, err = _stop(run)
        assert run.returncode == 130, err
        m = re.search(r"(\d+) HIT\(s\) of runs/me are still live", err)
        assert m and int(m.group(1)) >= 1 and "crowdprop hits runs/me expire" in err
        live = int(m.group(1))
        assert main(["hits", "runs/me", "expire"]) == 0
        hits = {h["HITId"]: h for h in client.list_hits(MaxResults=100)["HITs"]}
        assert hits[done_hit]["NumberOfAssignmentsCompleted"] + hits[done_hit]["NumberOfAssignmentsPending"] == 0
        assert {h["HITStatus"] for h in hits.values()} == {"Reviewable"}
        assert sum(h["NumberOfAssignmentsAvailable"] for h in hits.values()) == 0 and live < len(hits) + 1
    finally:
        if run is not None and run.poll() is None:
            _stop(run)
        _stop(endpoint)
