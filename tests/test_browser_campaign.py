"""A campaign round whose HIT a real browser does (Debian chromium + chromedriver via selenium).

The campaign loop runs against the local MTurk endpoint with simulated workers
off; headless Chromium accepts the HIT, answers every question with the
keyboard and submits; the round's Parquet state must hold exactly those answers.

Needs ``apt-get install -y chromium chromium-driver`` and ``pip install selenium``;
selenium-manager is never used (it would download a driver).
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from crowdprop.campaign.backends import local_endpoint_backend
from crowdprop.campaign.init import init_run
from crowdprop.campaign.loop import Campaign
from crowdprop.commands.replay import sample_paths

from chromium import chromium_driver, wait_for  # noqa: E402

pytestmark = pytest.mark.browser

CATEGORY = 44
"""The sample's class with 19 predicted masks: round 1 fits in one HIT."""
WORKER = "ABROWSERWORKER7"


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
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "preds.json").write_text(json.dumps(preds))
    (folder / "gt.json").write_text(json.dumps(gt))
    return folder / "preds.json", folder / "gt.json"


def test_a_browser_does_the_hit_and_the_campaign_holds_its_answers(driver, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    preds, gt = one_class_sample(tmp_path / "in")
    toml = tmp_path / "campaign.toml"
    # a keyboard driven by selenium is faster than any person: no minimum time per question
    toml.write_text("[policy]\nk_pa = 0.0\n[crowd]\npoll_interval_s = 0.05\nround_timeout_s = 120.0\n"
                    "[quality]\nmin_seconds_per_question = 0.0\n")
    rd = init_run(tmp_path / "run", predictions=preds, gt=gt, config_path=toml,
                  crowd={"kind": "mturk-local", "images": "render"})
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
