"""Video HITs on the MTurk machinery: real boto3 against crowdprop's local MTurk-compatible endpoint,
simulated workers doing the HITs through the endpoint's worker side (answers from ground truth).
No mocks of boto3."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from crowdprop.cli import main  # noqa: E402
from crowdprop.config import SimulationSection  # noqa: E402
from crowdprop.crowd.targets import Target  # noqa: E402
from crowdprop.errors import InputError  # noqa: E402
from crowdprop.mturk_local import LocalMTurk, ManualClock, serve  # noqa: E402
from crowdprop.replay.workers import WorkerPool  # noqa: E402
from crowdprop.video import hits as vh  # noqa: E402
from crowdprop.video.crowd import MIXED, simulated_workers  # noqa: E402
from crowdprop.video.localcrowd import EndpointWorkers, page_regions, worker_id  # noqa: E402
from crowdprop.video.run import VideoRun, init_video, run  # noqa: E402

pytestmark = [pytest.mark.detect, pytest.mark.usefixtures("no_aws_credentials")]

MTURK_ID = r"[A-Z0-9]{30}"


@pytest.fixture
def hit_config(tmp_path):
    """Two rounds, HITs of 4 questions (1 gold), 6 workers of whom 3 spammers (answer at random, too fast);
    no qualification test, so the spammers work and are caught by the rules (test_qualification.py has it)."""
    p = tmp_path / "mturk.toml"
    p.write_text("[video]\nrounds = 2\nclicks_per_round = 12\nfinetune_steps = 4\ncheckpoint_every = 0\n"
                 "superpixel_px = 40\n[crowd]\nquestions_per_hit = 4\ngolds_per_hit = 1\nreward_usd = 0.05\n"
                 "poll_interval_s = 0.0\n[simulation]\nworkers = 6\naccuracy = 1.0\naccuracy_spread = 0.0\n"
                 "spammer_share = 0.5\n[quality]\nsoft_block_after = 1\nqualification_size = 0\n"
                 "[campaign]\nbudget_usd = 5.0\n")
    return p


def client_for(url: str):
    import boto3
    from botocore.config import Config

    return boto3.client("mturk", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing",
                        config=Config(retries={"mode": "standard", "total_max_attempts": 1}))


def _spammers(vr: VideoRun) -> set[str]:
    cfg = vr.config
    return {worker_id(w) for w in simulated_workers(cfg.simulation, cfg.campaign.seed) if w.kind == "spammer"}


def _check_labels(vr: VideoRun) -> pd.DataFrame:
    """Approved label answers are the ground truth's (accurate workers); spammers' work is rejected
    and unpaid; money is integer cents of approved work."""
    truth = vh.region_truth(vr)
    ans, asg = vr.table("answers"), vr.table("assignments")
    assert len(ans) and len(asg)
    assert asg["hit_id"].str.fullmatch(MTURK_ID).all() and asg["assignment_id"].is_unique
    spam = _spammers(vr)
    ok = ans.loc[ans["approved"].astype(bool) & (ans["kind"] == "label")]
    assert len(ok) and not set(ok["worker"]) & spam
    np.testing.assert_array_equal(ok["answer"].to_numpy(), truth[ok["region"].to_numpy()])
    rejected = asg.loc[~asg["approved"].astype(bool)]
    assert set(rejected["worker"]) <= spam and len(rejected)
    assert (rejected["status"] == "Rejected").all() and (rejected["reward_cents"] == 0).all()
    paid = asg.loc[asg["status"] == "Approved"]
    assert (paid["reward_cents"] > 0).all()
    assert vr.metrics()[-1]["cents"] == int(asg["reward_cents"].sum() + asg["fee_cents"].sum())
    # human labels override the network on the regions they cover
    regions = vr.units()["regions"]
    final = vr.pred()
    for row in ok.loc[ok["answer"] >= 0].itertuples():
        assert (final[regions == row.region] == row.answer).all()
    return asg


def test_video_run_publishes_hits_on_a_local_endpoint(tmp_path, clip_dir, checkpoint, hit_config, capsys):
    a = tmp_path / "a"
    assert main(["video", "init", str(a), "--frames", str(clip_dir / "frames"), "--labels",
                 str(clip_dir / "labels.json"), "--gt", str(clip_dir / "gt"), "--model", str(checkpoint),
                 "--config", str(hit_config), "--crowd", "local"]) == 0
    assert main(["run", str(a)]) == 0  # crowdprop run on a video run directory
    vr = VideoRun(a).require()
    assert vr.rounds() == [0, 1, 2]
    asg = _check_labels(vr)
    # the HITs as published: questions_per_hit questions with golds_per_hit golds, ids on the page
    hits = pd.concat([pd.read_parquet(a / "state" / f"round-0000{r}" / "hits.parquet") for r in (1, 2)])
    per = hits.groupby("token").agg(n=("slot", "size"), golds=("kind", lambda k: int((k == "gold").sum())),
                                    hit_id=("hit_id", "first"))
    assert (per["n"] <= 4).all() and (per["golds"] == 1).all() and per["hit_id"].str.fullmatch(MTURK_ID).all()
    assert set(asg["token"]) <= set(per.index)
    # a spammer was blocked after its first rejection (soft_block_after = 1) and never worked again
    first_rejection = asg.loc[~asg["approved"].astype(bool)].groupby("worker").size()
    assert (first_rejection == 1).all()
    # re-asked: the label questions of a HIT whose only assignment was rejected went out again
    assert (hits["attempt"] > 0).any()
    # simulated workers do not look at the pictures: linked at the endpoint, not drawn (a person's are: below)
    assert (vr.path / "hit_images").is_dir() and not any((vr.path / "hit_images").iterdir())
    assert "mturk-local" in json.loads((a / "campaign.json").read_text())["crowd"]["kind"]


class Crash(Exception):
    """Stands for the process being killed."""


def _endpoint(run_dir):
    clock = ManualClock()
    local = LocalMTurk({}, WorkerPool.build(SimulationSection(), 0), simulate=False, clock=clock,
                       images_dir=run_dir / "hit_images")
    return local, serve(local), clock


def _init_on_endpoint(run_dir, handle, clip_dir, checkpoint, config):
    """``crowdprop video init`` of the test clip for the local endpoint ``handle``; its VideoRun.

    An MTurk campaign's id is random (its HIT tokens must not collide across campaigns), and the
    endpoint's simulated workers draw who takes a HIT from its tokens: the id is pinned here so
    which worker does which HIT, and so which spammer is caught, is the same on every run."""
    init_video(run_dir, frames=clip_dir / "frames", labels=clip_dir / "labels.json", model=checkpoint,
               gt=clip_dir / "gt", config=config, crowd={"kind": "mturk", "target": "local",
                                                         "endpoint_url": handle.url})
    vr = VideoRun(run_dir).require()
    vr.write_campaign({**vr.campaign, "campaign_id": "c0ffee5eed01"})
    return VideoRun(run_dir).require()


def _crowd(vr, handle, local, clock):
    cfg = vr.config
    workers = EndpointWorkers(local, vh.region_truth(vr), len(vr.classes), cfg.simulation, cfg.campaign.seed)
    return vh.connect(vr, vh.resolve_target(vr), client=client_for(handle.url), sleep=workers.step, clock=clock,
                      retry_wait_s=0.01)


def test_restart_mid_campaign_loses_no_answer_and_pays_nothing_twice(tmp_path, clip_dir, checkpoint, hit_config):
    """The controller killed after CreateHIT and before the journal has the HIT id, then after an
    approval went through and before the journal has it; run again each time on the same endpoint.
    The endpoint's books and the run directory's agree with an uninterrupted twin."""
    paths = {}
    for name in ("a", "b"):
        paths[name] = tmp_path / name
    local_a, handle_a, clock_a = _endpoint(paths["a"])
    local_b, handle_b, clock_b = _endpoint(paths["b"])
    try:
        init_video(paths["a"], frames=clip_dir / "frames", labels=clip_dir / "labels.json", model=checkpoint,
                   gt=clip_dir / "gt", config=hit_config,
                   crowd={"kind": "mturk", "target": "local", "endpoint_url": handle_a.url})
        shutil.copytree(paths["a"], paths["b"])  # the same campaign id: the same tokens and simulated answers
        camp = json.loads((paths["b"] / "campaign.json").read_text())
        camp["crowd"]["endpoint_url"] = handle_b.url
        (paths["b"] / "campaign.json").write_text(json.dumps(camp))
        a, b = VideoRun(paths["a"]).require(), VideoRun(paths["b"]).require()

        ca = _crowd(a, handle_a, local_a, clock_a)
        run(a.path, crowd=ca)
        ca.close()

        # b: killed after its second CreateHIT went out (the journal has no HIT id for it)
        cb = _crowd(b, handle_b, local_b, clock_b)
        publish = cb.backend.publish
        n = []

        def publish_then_die(hit, **kw):
            hit_id = publish(hit, **kw)
            n.append(hit_id)
            if len(n) == 2:
                raise Crash
            return hit_id

        cb.backend.publish = publish_then_die
        with pytest.raises(Crash):
            run(b.path, crowd=cb)
        cb.close()
        ev = [json.loads(x) for x in (b.journal_dir(1) / vh.EVENTS).read_text().splitlines()]
        assert [e["event"] for e in ev].count("published") == 1 and [e["event"] for e in ev].count("admit") == 2
        assert vh.open_hits(b) == [n[0]]  # what an interrupted run says may still be live

        # b again: killed right after its third approval or rejection went through
        cb = _crowd(b, handle_b, local_b, clock_b)
        settle = cb.backend.settle
        k = []

        def settle_then_die(aid, approve, feedback=None):
            state = settle(aid, approve, feedback)
            k.append(aid)
            if len(k) == 3:
                raise Crash
            return state

        cb.backend.settle = settle_then_die
        with pytest.raises(Crash):
            run(b.path, crowd=cb)
        cb.close()
        assert b.rounds() == [0]

        cb = _crowd(b, handle_b, local_b, clock_b)
        run(b.path, crowd=cb)
        cb.close()
        b = VideoRun(paths["b"]).require()
        assert b.rounds() == [0, 1, 2]

        for vr, local in ((a, local_a), (b, local_b)):
            asg = _check_labels(vr)
            led = local.ledger(entries=False)
            hits = pd.concat([pd.read_parquet(vr.round_dir(r) / "hits.parquet") for r in (1, 2)])
            assert led["tokens_with_several_hits"] == [] and led["approved_more_than_once"] == []
            assert led["hits_created"] == hits["token"].nunique()
            assert led["approvals"] == int((asg["status"] == "Approved").sum())
            assert led["approve_calls"] == led["approvals"]  # the approval made before the kill was not made again
            assert led["assignments"].get("Approved", 0) + led["assignments"].get("Rejected", 0) == len(asg)
            assert round(float(led["spent_usd"]) * 100) == vr.metrics()[-1]["cents"]
            # every assignment the endpoint took is in the run directory: no answer lost
            on_endpoint = {x["AssignmentId"] for h in set(hits["hit_id"]) for x in
                           local.call("ListAssignmentsForHIT", {"HITId": h, "MaxResults": 100})["Assignments"]}
            assert on_endpoint == set(asg["assignment_id"])

        cols = ["round", "worker", "question", "region", "kind", "answer", "approved"]
        pa, pb = a.table("answers"), b.table("answers")
        assert pa[cols].equals(pb[cols])
        assert np.array_equal(a.pred(), b.pred())
        assert a.metrics()[-1]["cents"] == b.metrics()[-1]["cents"]
        sb = b.table("assignments")
        assert (sb["settled_by"] == "mturk").sum() == 1  # the one settled before the kill, found settled
    finally:
        handle_a.stop()
        handle_b.stop()


def test_answers_are_read_against_the_choices_offered():
    offered = {"v1-0-0-0": [2, 0, 1], "v1-0-0-1": [0, 1, 2]}

    def xml(pairs):
        from crowdprop.mturk_local import answers_xml

        return answers_xml(pairs)

    got, flag = vh.parse_unit_answers(xml([("v1-0-0-0", "1"), ("v1-0-0-1", "mixed")]), offered)
    assert got == {"v1-0-0-0": 1, "v1-0-0-1": MIXED} and flag is None
    got, flag = vh.parse_unit_answers(xml([("v1-0-0-0", "7"), ("v1-0-0-1", "0")]), offered)
    assert flag and "'7'" in flag and "not offered" in flag
    _, flag = vh.parse_unit_answers(xml([("v1-0-0-0", "1")]), offered)
    assert flag and "missing answers to 1" in flag
    _, flag = vh.parse_unit_answers(xml([("v1-0-0-0", "1"), ("v1-0-0-1", "1"), ("zz", "1")]), offered)
    assert flag and "unknown question id 'zz'" in flag
    _, flag = vh.parse_unit_answers('<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>', offered)
    assert flag and flag.startswith("refused answer XML")


def test_the_page_says_which_region_each_question_is(tiny_clip):
    from crowdprop.video.page import render_hit

    regions = np.zeros(tiny_clip.labels.shape, np.int64)
    regions[:, :4] = 3
    qs = pd.DataFrame({"question": [-1, -1], "qid": ["v1-0-0-0", "v1-0-0-1"], "frame": [0, 2], "region": [3, 0],
                       "choices": [[2, 0], [1, 3, 0]]})
    html = render_hit(tiny_clip.frames, regions, qs, ["background", "disc", "box", "triangle"], None)
    assert page_regions(html) == [("v1-0-0-0", 3), ("v1-0-0-1", 0)]
    first = html[html.index('data-question-id="v1-0-0-0"'):html.index('data-question-id="v1-0-0-1"')]
    assert first.index("box") < first.index("background") and "disc" not in first


def test_an_mturk_run_is_refused_without_where_to_publish(tmp_path, clip_dir, checkpoint, hit_config, capsys):
    a = tmp_path / "a"
    init_video(a, frames=clip_dir / "frames", labels=clip_dir / "labels.json", model=checkpoint, config=hit_config,
               crowd={"kind": "mturk", "target": "sandbox"})
    with pytest.raises(Exception, match="crowdprop video run"):
        run(a)
    # production is never assumed
    camp = json.loads((a / "campaign.json").read_text())
    camp["crowd"]["target"] = "production"
    (a / "campaign.json").write_text(json.dumps(camp))
    assert main(["video", "run", str(a)]) == 2
    assert "--target production" in capsys.readouterr().err
    vr = VideoRun(a).require()
    assert vh.resolve_target(vr, target="production") == Target("production")
    # crowdprop run's image-only options are one line each, exit 2, nothing published
    assert main(["run", str(a), "--dry-run"]) == 2
    assert "--dry-run" in capsys.readouterr().err
    assert main(["run", str(a), "--images", str(tmp_path)]) == 2
    assert "--images" in capsys.readouterr().err
    assert vr.rounds() == [0] and not (a / "journal").exists()
    # pictures: s3_public gives plain URLs named by a keyed hash, the key kept in campaign.json
    conf = json.loads((a / "config.json").read_text())
    conf["mturk"].update(s3_bucket="my-bucket", s3_public=True)
    (a / "config.json").write_text(json.dumps(conf))
    vr = VideoRun(a).require()
    t1 = vh.image_target(vr, Target("sandbox"))
    key = json.loads((a / "campaign.json").read_text())["image_url_key"]
    assert t1.public_key == bytes.fromhex(key) and len(key) == 64
    url = t1.url("video-f00001-r5.png")
    assert url.startswith("https://my-bucket.s3.amazonaws.com/") and "X-Amz" not in url and "r5" not in url
    assert vh.image_target(VideoRun(a).require(), Target("sandbox")).url("video-f00001-r5.png") == url
    conf["mturk"].update(s3_bucket="", s3_public=False)
    (a / "config.json").write_text(json.dumps(conf))
    with pytest.raises(InputError, match="s3_bucket"):  # nowhere to serve the pictures from
        vh.image_target(VideoRun(a).require(), Target("sandbox"))


def test_the_budget_cap_and_hard_blocks_on_the_endpoint(tmp_path, clip_dir, checkpoint, hit_config):
    """A cap that buys 4 HITs: the rest stays unasked, nothing is paid past it; hard_block blocks the
    rejected spammers with CreateWorkerBlock."""
    cfg = tmp_path / "cap.toml"
    cfg.write_text(hit_config.read_text().replace("budget_usd = 5.0", "budget_usd = 0.25")
                   .replace("soft_block_after = 1", "soft_block_after = 1\nhard_block = true"))
    a = tmp_path / "a"
    local, handle, clock = _endpoint(a)
    try:
        vr = _init_on_endpoint(a, handle, clip_dir, checkpoint, cfg)
        c = _crowd(vr, handle, local, clock)
        run(a, crowd=c)
        c.close()
        vr = VideoRun(a).require()
        hits = pd.concat([pd.read_parquet(vr.round_dir(r) / "hits.parquet") for r in vr.rounds()[1:]])
        # a HIT costs at most 1 assignment x (5 cents + the 1 cent minimum fee); rejected work costs
        # nothing, so re-asks fit while the cap leaves room, and then HITs stay unpublished
        assert (hits["hit_id"] == "").any() and (hits["hit_id"] != "").any()
        led = local.ledger(entries=False)
        spent = round(float(led["spent_usd"]) * 100)
        assert spent == vr.metrics()[-1]["cents"] and 25 - 6 < spent <= 25
        assert led["hits_created"] == hits.loc[hits["hit_id"] != "", "token"].nunique()
        asg = vr.table("assignments")
        rejected = set(asg.loc[~asg["approved"].astype(bool), "worker"])
        assert rejected and set(led["blocked_workers"]) == rejected <= _spammers(vr)
    finally:
        handle.stop()


def test_a_person_does_the_hits_through_the_endpoints_pages(tmp_path, clip_dir, checkpoint, hit_config):
    """No simulated workers: between polls a person accepts each HIT on the endpoint's page and posts
    the worker page's form (the fields video_unit.html posts: assignmentId, workerId, one per question)."""
    import re
    import urllib.parse
    import urllib.request

    cfg = tmp_path / "one.toml"
    cfg.write_text(hit_config.read_text().replace("rounds = 2", "rounds = 1"))
    a = tmp_path / "a"
    local, handle, clock = _endpoint(a)
    seen = []
    try:
        vr = _init_on_endpoint(a, handle, clip_dir, checkpoint, cfg)
        truth = vh.region_truth(vr)

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kw):
                return None

        opener = urllib.request.build_opener(NoRedirect)

        def person(_seconds):
            for h in local.call("ListHITs", {"MaxResults": 100})["HITs"]:
                if h["HITStatus"] != "Assignable" or h["HITId"] in seen:
                    continue
                seen.append(h["HITId"])
                body = urllib.parse.urlencode({"workerId": "APERSON1"}).encode()
                try:
                    opener.open(f"{handle.url}/hits/{h['HITId']}/accept", data=body)
                    raise AssertionError("accepting should redirect to the HIT's page")
                except urllib.error.HTTPError as e:
                    assert e.code == 303
                    page_url = handle.url + e.headers["Location"]
                q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(page_url).query))
                html = urllib.request.urlopen(page_url).read().decode()
                for img in re.findall(r'<img src="([^"]+)"', html):  # the pictures are served
                    assert urllib.request.urlopen(img).read()[:4] == b"\x89PNG"
                clock.advance(60)
                fields = [("assignmentId", q["assignmentId"]), ("workerId", "APERSON1")]
                fields += [(qid, "mixed" if truth[reg] == MIXED else str(truth[reg]))
                           for qid, reg in page_regions(html)]
                form = urllib.parse.urlencode(fields).encode()
                assert b"submitted" in urllib.request.urlopen(f"{handle.url}/mturk/externalSubmit", data=form).read()
                return

        c = vh.connect(vr, vh.resolve_target(vr), client=client_for(handle.url), sleep=person, clock=clock,
                       retry_wait_s=0.01)
        run(a, crowd=c)
        c.close()
        vr = VideoRun(a).require()
        asg, ans = vr.table("assignments"), vr.table("answers")
        assert set(asg["worker"]) == {"APERSON1"} and asg["approved"].all() and len(asg) == len(seen)
        np.testing.assert_array_equal(ans["answer"].to_numpy(), truth[ans["region"].to_numpy()])
    finally:
        handle.stop()


def test_a_local_crowd_stopped_mid_round_asks_the_round_again_with_the_same_answers(
        tmp_path, clip_dir, checkpoint, hit_config, monkeypatch):
    """The endpoint of a local crowd lives in its process: run again, the round in progress is asked
    again from its plan on a new endpoint, and comes out as a run that was not stopped."""
    from crowdprop.video import localcrowd

    cfg = tmp_path / "one.toml"
    cfg.write_text(hit_config.read_text().replace("rounds = 2", "rounds = 1"))
    paths = [tmp_path / "a", tmp_path / "b"]
    for p in paths:
        init_video(p, frames=clip_dir / "frames", labels=clip_dir / "labels.json", model=checkpoint,
                   gt=clip_dir / "gt", config=cfg, crowd={"kind": "mturk-local"})
    run(paths[0])
    step = localcrowd.EndpointWorkers.step
    calls = []

    def step_then_die(self, seconds=0.0):
        done = step(self, seconds)
        calls.append(done)
        if len(calls) == 2:
            raise Crash
        return done

    monkeypatch.setattr(localcrowd.EndpointWorkers, "step", step_then_die)
    with pytest.raises(Crash):
        run(paths[1])
    b = VideoRun(paths[1]).require()
    assert b.rounds() == [0] and (b.journal_dir(1) / vh.EVENTS).exists()
    monkeypatch.setattr(localcrowd.EndpointWorkers, "step", step)
    run(paths[1])
    a, b = VideoRun(paths[0]).require(), VideoRun(paths[1]).require()
    cols = ["round", "worker", "question", "region", "kind", "answer", "approved"]
    assert a.table("answers")[cols].equals(b.table("answers")[cols])
    assert a.metrics()[-1]["cents"] == b.metrics()[-1]["cents"] and np.array_equal(a.pred(), b.pred())


def test_a_live_round_expires_its_hits_at_round_timeout(tmp_path, clip_dir, checkpoint, hit_config):
    """One uninterrupted round on the endpoint: workers do the first two HITs and nobody takes the
    other two. At ``[crowd] round_timeout_s`` after the round started (the endpoint's clock) the
    round expires the open HITs on the endpoint, waits for nothing more, and ends: the unanswered
    label questions get no answer and keep the network's labels, and only the approved work is
    paid, in integer cents the endpoint's books agree with."""
    cfg = tmp_path / "timeout.toml"
    cfg.write_text(hit_config.read_text().replace("rounds = 2", "rounds = 1")
                   .replace("spammer_share = 0.5", "spammer_share = 0.0")
                   .replace("poll_interval_s = 0.0", "poll_interval_s = 0.0\nround_timeout_s = 900"))
    a = tmp_path / "a"
    local, handle, clock = _endpoint(a)
    expired_at: dict[str, float] = {}
    try:
        vr = _init_on_endpoint(a, handle, clip_dir, checkpoint, cfg)
        c = vr.config

        class FirstTwoHits(EndpointWorkers):
            """Workers who take the round's first two HITs only (batches 0 and 1)."""

            def _hits(self):
                return [h for h in super()._hits() if str(h.get("RequesterAnnotation", "")).endswith(
                    ("-v1-0-0", "-v1-1-0"))]

        workers = FirstTwoHits(local, vh.region_truth(vr), len(vr.classes), c.simulation, c.campaign.seed)
        idle = []

        def poll(_seconds):  # an idle poll: 100 s pass on the endpoint
            if not workers.step():
                idle.append(clock())
                clock.advance(100)

        start = clock()
        crowd = vh.connect(vr, vh.resolve_target(vr), client=client_for(handle.url), sleep=poll, clock=clock,
                           retry_wait_s=0.01)
        expire = crowd.backend.expire

        def expire_logged(hit_id):
            expired_at[hit_id] = clock()
            expire(hit_id)

        crowd.backend.expire = expire_logged
        run(a, crowd=crowd)
        crowd.close()

        vr = VideoRun(a).require()
        assert vr.rounds() == [0, 1]
        hits = pd.read_parquet(vr.round_dir(1) / "hits.parquet")
        per = hits.groupby("token").agg(batch=("batch", "first"), hit_id=("hit_id", "first"))
        assert len(per) == 4 and (hits["attempt"] == 0).all()  # 12 questions, 3 per HIT; nothing asked again
        answered = set(per.loc[per["batch"] < 2, "hit_id"])
        unanswered = set(per.loc[per["batch"] >= 2, "hit_id"])
        # the two HITs nobody took were expired once, at the first poll past the timeout
        assert set(expired_at) == unanswered
        for t in expired_at.values():
            assert start + 900 < t <= start + 900 + 100 + 60  # one idle poll (100 s) and some work time late
        assert clock() < start + 900 + 100 + 60  # and the round waited for nothing after that
        for hit_id in unanswered:
            h = local.call("GetHIT", {"HITId": hit_id})["HIT"]
            exp = h["Expiration"].timestamp() if hasattr(h["Expiration"], "timestamp") else float(h["Expiration"])
            assert exp <= clock() and int(h["NumberOfAssignmentsPending"]) == 0
            assert local.call("ListAssignmentsForHIT", {"HITId": hit_id, "MaxResults": 100})["Assignments"] == []
        # the answered HITs were approved and paid; the unanswered questions have no answer
        asg, ans = vr.table("assignments"), vr.table("answers")
        assert set(asg["hit_id"]) == answered and (asg["status"] == "Approved").all() and len(asg) == 2
        assert set(ans["hit_id"]) == answered
        lab = hits.loc[hits["kind"] == "label"]
        left = lab.loc[lab["hit_id"].isin(unanswered)]
        assert len(left) == 6 and not set(left["question"]) & set(ans["question"])
        m = vr.metrics()[-1]
        assert m["clicks"] == int(((ans["kind"] == "label") & ans["approved"]).sum()) == 6
        # the unanswered regions keep the network's labels (human labels cover only what was answered)
        regions = vr.units()["regions"]
        final = vr.pred()
        model_pred = (np.asarray(vr.pred_store(1, name="model_pred")) if hasattr(vr, "pred_store")
                      else np.load(vr.round_dir(1) / "model_pred.npz")["labels"])  # the network's own labels
        for reg in set(left["region"]) - set(ans.loc[ans["kind"] == "label", "region"]):
            assert (final[regions == reg] == model_pred[regions == reg]).all()
        # money: 2 approved assignments x (5 cents + the 1 cent minimum fee), nothing for the expired HITs
        led = local.ledger(entries=False)
        assert m["cents"] == int(asg["reward_cents"].sum() + asg["fee_cents"].sum()) == 2 * (5 + 1)
        assert round(float(led["spent_usd"]) * 100) == m["cents"] and led["hits_created"] == 4
        assert led["approvals"] == 2
    finally:
        handle.stop()


@pytest.mark.parametrize("killed", [False, True])
def test_the_adaptive_vote_adds_assignments_to_hits_on_the_endpoint(tmp_path, clip_dir, checkpoint, hit_config,
                                                                    killed):
    """[video] vote = adaptive on MTurk: once a round's HITs are done, a HIT holding a region whose answers
    disagree (or whose lone answer's worker is not trusted) gets one more assignment
    (CreateAdditionalAssignmentsForHIT: MTurk gives it to a worker who has not done the HIT), up to
    vote_max; at the end no region the rule would ask again sits in a HIT with room left, and the
    endpoint's books and the run's agree in integer cents. ``killed``: the controller dies right after
    its first CreateAdditionalAssignmentsForHIT went through, and run again adds nothing twice."""
    from crowdprop.video.crowd import ask_again

    cfg = tmp_path / "vote.toml"
    cfg.write_text(hit_config.read_text().replace("rounds = 2", "rounds = 1\nvote = \"adaptive\"\nvote_max = 3\n"
                                                  "vote_trust = 0.8")
                   .replace("spammer_share = 0.5", "spammer_share = 0.0").replace("accuracy = 1.0", "accuracy = 0.8"))
    a = tmp_path / "a"
    local, handle, clock = _endpoint(a)
    try:
        vr = _init_on_endpoint(a, handle, clip_dir, checkpoint, cfg)
        c = _crowd(vr, handle, local, clock)
        if killed:
            extend = c.backend.extend

            def extend_then_die(hit_id, n, token):
                extend(hit_id, n, token)
                raise Crash

            c.backend.extend = extend_then_die
            with pytest.raises(Crash):
                run(a, crowd=c)
            c.close()
            c = _crowd(vr, handle, local, clock)
        run(a, crowd=c)
        c.close()
        vr = VideoRun(a).require()
        v = vr.config.video
        asg, ans = vr.table("assignments"), vr.table("answers")
        hits = pd.read_parquet(vr.round_dir(1) / "hits.parquet")
        per = asg.groupby("hit_id")["worker"].agg(["size", "nunique"])
        assert (per["size"] == per["nunique"]).all()  # a HIT's assignments are distinct workers
        assert per["size"].max() <= 3 and (per["size"] > 1).any()  # some HITs voted on, none past vote_max
        # what was added is on the endpoint: every HIT's MaxAssignments is the assignments it got
        for hit_id, n in per["size"].items():
            assert local.call("GetHIT", {"HITId": hit_id})["HIT"]["MaxAssignments"] == n
        # the rule is at rest: whatever it would still ask sits in a HIT that has vote_max assignments
        plan = hits.loc[hits["kind"] == "label", ["question", "region", "frame"]].drop_duplicates("question")
        plan = plan.assign(truth=-2).sort_values("question").reset_index(drop=True)
        again, _ = ask_again(plan, ans, asg, v)
        full = set(per.index[per["size"] >= v.vote_max])
        # (the HITs of its approved votes: an earlier attempt whose one assignment was rejected is done)
        voted = ans.loc[(ans["kind"] == "label") & ans["approved"].astype(bool)]
        q_hit = voted.groupby("question")["hit_id"].agg(set)
        assert all(q_hit[q] <= full for q in plan["question"].to_numpy()[again])
        # money: every approved assignment, extra ones included, in integer cents on both books
        led = local.ledger(entries=False)
        assert round(float(led["spent_usd"]) * 100) == vr.metrics()[-1]["cents"] == \
            int(asg["reward_cents"].sum() + asg["fee_cents"].sum())
        assert led["approvals"] == int((asg["status"] == "Approved").sum())
        assert led["hits_created"] == hits["token"].nunique()
    finally:
        handle.stop()
