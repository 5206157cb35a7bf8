"""The video qualification test: ``[quality] qualification_size`` gold regions answered before the
first HIT, at ``qualification_pass``; in process (simulated workers screened by the same draws) and on
crowdprop's local MTurk endpoint through boto3 (a qualification type with a Test and an AnswerKey
that the HIT type requires, graded by the endpoint)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crowdprop.errors import MTurkError
from crowdprop.quality.rules import passes_qualification
from crowdprop.video.config import load
from crowdprop.video.crowd import (qualification_answers, qualification_golds, qualification_results,
                                   qualified_workers, run_questions, simulated_workers)

N_CLASSES = 4


def _pool(n=30, seed=4):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"region": np.arange(200, 200 + n)[::-1], "frame": 0,
                         "truth": rng.integers(-1, N_CLASSES, n), "used": 0})


def test_the_test_is_drawn_once_from_the_gold_pool():
    cfg = load(None, {"quality": {"qualification_size": 8}})
    pool = _pool()
    t = qualification_golds(pool, cfg.quality, seed=3)
    assert len(t) == 8 and t["region"].is_unique and set(t["region"]) <= set(pool["region"])
    truth = dict(zip(pool["region"], pool["truth"]))
    assert [truth[r] for r in t["region"]] == t["truth"].tolist()
    # the same test whatever the pool's row order or use counts; another seed draws another
    shuffled = pool.sample(frac=1.0, random_state=1).assign(used=5)
    pd.testing.assert_frame_equal(qualification_golds(shuffled, cfg.quality, seed=3), t)
    assert set(qualification_golds(pool, cfg.quality, seed=4)["region"]) != set(t["region"])
    assert len(qualification_golds(pool.head(5), cfg.quality, seed=3)) == 5  # a small pool: all of it
    assert not len(qualification_golds(pool.head(0), cfg.quality, seed=3))
    off = load(None, {"quality": {"qualification_size": 0}})
    assert not len(qualification_golds(pool, off.quality, seed=3))


def test_in_process_workers_who_fail_get_no_hit():
    cfg = load(None, {"crowd": {"questions_per_hit": 12, "golds_per_hit": 3, "reward_usd": 0.10},
                      "quality": {"qualification_size": 10, "qualification_pass": 0.9},
                      "simulation": {"workers": 12, "accuracy": 0.9, "accuracy_spread": 0.05,
                                     "spammer_share": 0.25}})
    workers = simulated_workers(cfg.simulation, seed=0)
    pool = _pool()
    test = qualification_golds(pool, cfg.quality, cfg.campaign.seed)
    res = qualification_results(test, workers, N_CLASSES, cfg.campaign.seed)
    assert set(res) == {w.worker for w in workers} and all(n == 10 for n, _ in res.values())
    # the score is what the worker's answers get right (the same draws as on the endpoint)
    w0 = workers[0]
    got = qualification_answers(w0, 0, test["truth"].to_numpy(), N_CLASSES, cfg.campaign.seed)
    assert res[w0.worker][1] == int((got == test["truth"].to_numpy()).sum())
    passed = {w.worker for w in qualified_workers(pool, workers, cfg, N_CLASSES)}
    assert passed == {w for w, (n, k) in res.items() if passes_qualification(n, k, cfg.quality)}
    spam = {w.worker for w in workers if w.kind == "spammer"}
    assert spam and not spam & passed  # random answers over 5 options do not pass 9 of 10
    failed_normal = {w.worker for w in workers if w.kind == "normal"} - passed
    assert failed_normal and len(passed) >= 5  # 90 %-ish workers: most pass, some do not
    rng = np.random.default_rng(4)
    q = pd.DataFrame({"question": np.arange(90), "region": np.arange(90), "frame": 0,
                      "truth": rng.integers(-1, N_CLASSES, 90)})
    _, asg, _ = run_questions(q, pool.copy(), workers, cfg, round_=1, rng=np.random.default_rng(0), spent_cents=0,
                              history=None, n_classes=N_CLASSES)
    assert len(asg) >= 10 and set(asg["worker"]) <= passed  # 10 HITs, and any asked again


# ------------------------------------------------------------------ on the local endpoint, through boto3


def test_on_the_endpoint_a_worker_who_fails_cannot_accept_and_one_who_passes_can(tmp_path, clip_dir, checkpoint):
    import urllib.parse
    import urllib.request

    pytest.importorskip("torch")
    from crowdprop.video import hits as vh
    from crowdprop.video.golds import pool
    from crowdprop.video.localcrowd import EndpointWorkers, page_regions, worker_id
    from crowdprop.video.run import VideoRun, run

    from .test_mturk import _endpoint, _init_on_endpoint, client_for

    cfgp = tmp_path / "q.toml"
    cfgp.write_text("[video]\nrounds = 2\nclicks_per_round = 12\nfinetune_steps = 2\ncheckpoint_every = 0\n"
                    "superpixel_px = 40\n[crowd]\nquestions_per_hit = 4\ngolds_per_hit = 1\nreward_usd = 0.05\n"
                    "poll_interval_s = 0.0\n[simulation]\nworkers = 6\naccuracy = 1.0\naccuracy_spread = 0.0\n"
                    "spammer_share = 0.5\n[quality]\nqualification_size = 8\nqualification_pass = 0.75\n"
                    "[campaign]\nbudget_usd = 5.0\n")
    a = tmp_path / "a"
    local, handle, clock = _endpoint(a)
    try:
        vr = _init_on_endpoint(a, handle, clip_dir, checkpoint, cfgp)
        cfg = vr.config
        truth = vh.region_truth(vr)
        test, golds = vh.qualification(vr)
        assert len(test) == 8 and test.passing_percentage == 75
        assert golds["truth"].tolist() == truth[golds["region"].to_numpy()].tolist()
        workers = EndpointWorkers(local, truth, len(vr.classes), cfg.simulation, cfg.campaign.seed)
        seen: dict[str, object] = {}

        def people_then_workers(_seconds):
            """At the first poll two people take the test in a browser: one answers every question
            right, one every question wrong; then the simulated workers take it and do the HITs."""
            if not seen:
                (t,) = local.tests()
                _, _, _, items = local.test_page(t["QualificationTypeId"])
                right = {it.identifier: vh.qualification_selection(truth[int(it.identifier.split("-")[1])])
                         for it in items}
                wrong = {k: ("mixed" if v != "mixed" else "0") for k, v in right.items()}
                # the person who passes takes it on the endpoint's page, as in a browser: a radio button per
                # class and one for "mixed", each question's picture linked
                url = f"{handle.url}/qualifications/{t['QualificationTypeId']}"
                page = urllib.request.urlopen(url + "?workerId=APASSES").read().decode()
                assert page.count("type='radio'") == len(items) * (len(vr.classes) + 1)
                assert page.count("<img src=") == len(items) and "/images/video-f" in page
                assert all(f"> {c}</label>" in page for c in [*vr.classes, "mixed"])
                form = urllib.parse.urlencode([("workerId", "APASSES"), *right.items()]).encode()
                urllib.request.urlopen(url, data=form).read()
                seen["right"] = next(q["IntegerValue"] for q in local.call(
                    "ListWorkersWithQualificationType", {"QualificationTypeId": t["QualificationTypeId"],
                                                          "MaxResults": 100})["Qualifications"]
                    if q["WorkerId"] == "APASSES")
                seen["wrong"] = local.take_test(t["QualificationTypeId"], "AFAILS", wrong)
                hit = next(h for h in local.call("ListHITs", {"MaxResults": 100})["HITs"]
                           if h["HITStatus"] == "Assignable")
                with pytest.raises(MTurkError):
                    local.accept(hit["HITId"], "AFAILS")  # failed the test: may not accept
                aid = local.accept(hit["HITId"], "APASSES")  # passed: accepts and does the HIT
                clock.advance(30)
                fields = [("assignmentId", aid)] + [(qid, vh.qualification_selection(truth[reg]))
                                                    for qid, reg in page_regions(local.hit_page(hit["HITId"]))]
                local.external_submit(fields, worker_id="APASSES", hit_id=hit["HITId"])
                seen["hit"] = hit["HITId"]
                return
            workers.step()

        crowd = vh.connect(vr, vh.resolve_target(vr), client=client_for(handle.url), sleep=people_then_workers,
                           clock=clock, retry_wait_s=0.01)
        run(a, crowd=crowd, rounds=1)
        crowd.close()
        assert seen["right"] == 100 and seen["wrong"] == 0
        # a later process (another backend and other simulated workers) finds the test type by name and
        # creates none; nobody takes the test twice
        workers = EndpointWorkers(local, truth, len(vr.classes), cfg.simulation, cfg.campaign.seed)
        crowd = vh.connect(vr, vh.resolve_target(vr), client=client_for(handle.url), sleep=workers.step,
                           clock=clock, retry_wait_s=0.01)
        run(a, crowd=crowd)
        crowd.close()
        assert VideoRun(a).require().rounds() == [0, 1, 2]

        # the qualification type: a Test of the 8 gold regions, required by the campaign's HIT type
        client = client_for(handle.url)
        name = f"crowdprop {vr.campaign_id()} qualification test"
        qts = [q for q in client.list_qualification_types(MustBeRequestable=False, MustBeOwnedByCaller=True,
                                                           MaxResults=100)["QualificationTypes"]
               if q["Name"] == name]
        assert len(qts) == 1 and qts[0]["TestDurationInSeconds"] == cfg.mturk.test_duration_s
        assert len(local.tests()) == 1
        qt = qts[0]["QualificationTypeId"]
        assert [f"region-{r}" for r in golds["region"]] == [it.identifier for it in local.test_page(qt)[3]]
        reqs = client.get_hit(HITId=seen["hit"])["HIT"]["QualificationRequirements"]
        assert {"QualificationTypeId": qt, "Comparator": "GreaterThanOrEqualTo",
                "IntegerValues": [75]}.items() <= next(r for r in reqs if r["QualificationTypeId"] == qt).items()

        # every simulated worker was graded by the endpoint as the in-process replay scores them
        granted = {q["WorkerId"]: q["IntegerValue"] for q in client.list_workers_with_qualification_type(
            QualificationTypeId=qt, Status="Granted", MaxResults=100)["Qualifications"]}
        sim = simulated_workers(cfg.simulation, cfg.campaign.seed)
        res = qualification_results(golds, sim, len(vr.classes), cfg.campaign.seed)
        assert {worker_id(w): 100 * res[w.worker][1] // 8 for w in sim} == \
            {k: v for k, v in granted.items() if k not in ("APASSES", "AFAILS")}
        passed = {worker_id(w) for w in qualified_workers(pool(vr), sim, cfg, len(vr.classes))}
        spam = {worker_id(w) for w in sim if w.kind == "spammer"}
        assert passed == {w for w, v in granted.items() if v >= 75} - {"APASSES"} and not passed & spam
        assert len(passed) == 3  # the three accurate workers

        # only those who passed worked: the person who passed did one HIT, the one who failed none
        asg = vr.table("assignments")
        assert set(asg["worker"]) <= passed | {"APASSES"} and "APASSES" in set(asg["worker"])
        assert asg["approved"].all() and (asg["status"] == "Approved").all()
        ans = vr.table("answers")
        np.testing.assert_array_equal(ans["answer"].to_numpy(), truth[ans["region"].to_numpy()])
    finally:
        handle.stop()
