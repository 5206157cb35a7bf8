"""`crowdprop hits` and `crowdprop run`'s Ctrl-C, through the real boto3 client against the local
MTurk-compatible endpoint: a campaign interrupted with its HITs live, a person who accepted one
before it was expired and submits after, extensions (idempotent on their token) and deletion."""
from __future__ import annotations

import dataclasses
import json
import re
import shutil

import pytest

from crowdprop.campaign.init import init_run
from crowdprop.campaign.ledger import actions, extra_assignments
from crowdprop.campaign.store import RunDir
from crowdprop.cli import main
from crowdprop.crowd import mturk as mt
from crowdprop.io import atomic_write_text
from crowdprop.mturk_local import LocalMTurk, page_questions, serve, truth_from_masks
from crowdprop.mturk_local.faults import Fault
from crowdprop.replay.workers import WorkerPool

from .endpoint import ScriptedFaults

pytestmark = pytest.mark.usefixtures("no_aws_credentials")


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> RunDir:
    """A small synthetic set (120 masks, golds from its ground truth) initialised for the MTurk sandbox."""
    data = tmp_path_factory.mktemp("data")
    assert main(["synth", "--masks", "120", "--classes", "2", "-o", str(data), "-q"]) == 0
    rd = init_run(tmp_path_factory.mktemp("base") / "run", predictions=str(data / "predictions.json"),
                  gt=str(data / "gt.json"), crowd={"kind": "mturk", "target": "sandbox"})
    cfg = rd.config
    cfg = dataclasses.replace(cfg, crowd=dataclasses.replace(cfg.crowd, questions_per_hit=12, golds_per_hit=3,
                                                             poll_interval_s=0.0))
    atomic_write_text(rd.path / "config.json", cfg.to_json())
    return RunDir(rd.path)


@pytest.fixture(scope="module")
def interrupted(base_run, tmp_path_factory):
    """A sandbox-style MTurk run on a local endpoint without simulated workers, stopped by Ctrl-C
    while its first round waits for work: ``(run directory, endpoint handle, what run printed)``."""
    rd = _copy(base_run, tmp_path_factory.mktemp("hits") / "run")
    cfg = rd.config
    local = LocalMTurk(truth_from_masks(rd.masks, correct_iou=cfg.campaign.correct_iou),
                       WorkerPool.build(cfg.simulation, cfg.campaign.seed), simulate=False,
                       images_dir=rd.path / "hit_images")
    handle = serve(local)
    mp = pytest.MonkeyPatch()
    real_poll = mt.MTurkBackend.poll

    def poll(self, hit_ids, **kw):  # Ctrl-C while the round waits for its first work
        raise KeyboardInterrupt

    mp.setattr(mt.MTurkBackend, "poll", poll)
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["run", str(rd.path), "--endpoint-url", handle.url])
    mp.setattr(mt.MTurkBackend, "poll", real_poll)
    mp.undo()
    yield rd, handle, code, err.getvalue()
    handle.stop()


def _copy(rd: RunDir, dest) -> RunDir:
    shutil.copytree(rd.path, dest)
    return RunDir(dest)


def _list(rd, capsys) -> list[dict]:
    capsys.readouterr()
    assert main(["hits", str(rd.path), "list", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_interrupt_says_what_is_live_then_expire_and_late_work_is_recorded(interrupted, capsys):
    rd, handle, code, err = interrupted
    local = handle.local
    published = [x["hit_id"] for x in rd.journal_lines(1, "published") if "hit_id" in x]
    assert code == 130 and len(published) >= 2
    assert f"{len(published)} HIT(s) of {rd.path} are still live" in err
    assert f"crowdprop hits {rd.path} expire" in err

    rows = _list(rd, capsys)
    assert sorted(r["hit_id"] for r in rows) == sorted(published)
    assert {r["status"] for r in rows} == {"Assignable"} and all(r["live"] and r["round"] == 1 for r in rows)

    # a person accepts one HIT before it is expired, and submits after
    first = rows[0]["hit_id"]
    types = local.call("ListQualificationTypes", {"MustBeRequestable": False, "MaxResults": 100})["QualificationTypes"]
    for qt in types:
        if qt["Name"].endswith("qualification test"):  # passed (the browser test of it: test_do_a_hit_yourself)
            local.call("AssociateQualificationWithWorker", {"QualificationTypeId": qt["QualificationTypeId"],
                                                            "WorkerId": "AHUMANWORKER1", "IntegerValue": 100})
    aid = local.accept(first, "AHUMANWORKER1")
    assert main(["hits", str(rd.path), "expire"]) == 0
    out = capsys.readouterr().out
    assert out.count("expired") == len(rows) and "1 worker(s) who accepted it may still submit" in out
    sent = [a for a in actions(rd) if a.get("event") == "send"]
    assert sorted(a["hit_id"] for a in sent) == sorted(published) and {a["action"] for a in sent} == {"expire"}
    done = {a["id"] for a in actions(rd) if a.get("event") == "done"}
    assert {a["id"] for a in sent} == done  # each recorded before it was sent, and its outcome after

    after = {r["hit_id"]: r for r in _list(rd, capsys)}
    assert after[first]["status"] == "Unassignable" and after[first]["pending"] == 1
    assert all(r["status"] == "Reviewable" and not r["live"] for h, r in after.items() if h != first)
    qids = [q.question_id for q in page_questions(local.hit_page(first))]
    local.external_submit([("assignmentId", aid)] + [(q, "yes") for q in qids], worker_id="AHUMANWORKER1")
    assert main(["hits", str(rd.path), "list", "-q"]) == 0  # -v / -q after the command too
    assert "0 live" in capsys.readouterr().out

    # delete is refused while the run has not recorded that work; nothing is sent
    n_actions = len(actions(rd))
    assert main(["hits", str(rd.path), "delete", first]) == 2
    assert "not yet recorded and settled by the run" in capsys.readouterr().err
    assert len(actions(rd)) == n_actions

    # the run continues the round: it records, judges and settles the late work, and does not wait
    local.fault_injector = ScriptedFaults([Fault("throttle", 400)])  # its first call is throttled once
    assert main(["run", str(rd.path), "--rounds", "1"]) == 0
    local.fault_injector = None
    asg = rd.read_rounds("assignments")
    assert list(asg["assignment_id"]) == [aid] and asg["worker_id"].tolist() == ["AHUMANWORKER1"]
    state = local.call("GetAssignment", {"AssignmentId": aid})["Assignment"]["AssignmentStatus"]
    assert state == ("Approved" if bool(asg["approved"].iloc[0]) else "Rejected")
    assert rd.read_rounds("answers")["question_id"].nunique() == len(qids)
    log = (rd.path / "campaign.log").read_text()  # both runs: the interrupt, then the round it finished
    assert "WARNING crowdprop.commands.run: interrupted (Ctrl-C)" in log
    assert "INFO crowdprop.campaign.loop: round 1:" in log and "ThrottlingException; retry 1" in log

    # every HIT is now reviewable and settled: delete takes them all
    assert main(["hits", str(rd.path), "delete"]) == 0
    assert capsys.readouterr().out.count("deleted") == len(published)
    assert {r["status"] for r in _list(rd, capsys)} == {"Disposed"}
    assert local.call("ListHITs", {"MaxResults": 100})["HITs"] == []


def test_extend_adds_time_and_assignments_once(interrupted, tmp_path, capsys):
    rd0, handle, _, _ = interrupted
    local = handle.local
    # a second campaign on the same endpoint: publish one round, interrupted like the first
    rd = _copy(rd0, tmp_path / "run")
    for p in (rd.path / "journal", rd.path / "state", rd.path / "hit_actions.jsonl"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    data = dict(rd.campaign, campaign_id=rd.campaign["campaign_id"] + "x", nonce="other")
    data.pop("home", None)
    atomic_write_text(rd.path / "campaign.json", json.dumps(data))
    rd = RunDir(rd.path)
    mp = pytest.MonkeyPatch()
    mp.setattr(mt.MTurkBackend, "poll", lambda self, ids, **kw: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert main(["run", str(rd.path), "--endpoint-url", handle.url]) == 130
    mp.undo()
    rows = _list(rd, capsys)
    mp = pytest.MonkeyPatch()
    hid = rows[0]["hit_id"]
    before = local.call("GetHIT", {"HITId": hid})["HIT"]

    assert main(["hits", str(rd.path), "extend", hid, "--hours", "2"]) == 0
    after = local.call("GetHIT", {"HITId": hid})["HIT"]
    assert after["Expiration"] == pytest.approx(before["Expiration"] + 7200, abs=2)

    # the response of CreateAdditionalAssignmentsForHIT is lost after it took effect: the retry
    # carries the same UniqueRequestToken and MTurk adds the assignments once
    # requests before it: GetHIT of each HIT, then ListAssignmentsForHIT of each live one (the budget check)
    local.fault_injector = ScriptedFaults([None] * (2 * len(rows)) + [Fault("error", 503, after=True)])
    assert main(["hits", str(rd.path), "extend", hid, "--assignments", "2"]) == 0
    local.fault_injector = None
    assert local.call("GetHIT", {"HITId": hid})["HIT"]["MaxAssignments"] == before["MaxAssignments"] + 2
    assert "added before (same request)" in capsys.readouterr().out
    assert extra_assignments(rd) == {hid: 2}
    # the same command after a crash between its record and MTurk's answer: same token, added once
    tok = [a for a in actions(rd) if a.get("assignments")][0]["token"]
    with pytest.raises(Exception, match="DuplicateRequest|already been processed"):
        local.call("CreateAdditionalAssignmentsForHIT",
                   {"HITId": hid, "NumberOfAdditionalAssignments": 2, "UniqueRequestToken": tok})
    assert main(["hits", str(rd.path), "list"]) == 0 and hid in capsys.readouterr().out

    # MTurk does not extend a HIT of fewer than 10 assignments to 10 or more; nothing is sent
    n = len(actions(rd))
    assert main(["hits", str(rd.path), "extend", hid, "--assignments", "8"]) == 2
    assert "fewer than 10" in capsys.readouterr().err and len(actions(rd)) == n
    # nor past the budget cap
    cfg = rd.config
    atomic_write_text(rd.path / "config.json", dataclasses.replace(
        cfg, campaign=dataclasses.replace(cfg.campaign, budget_usd=0.5)).to_json())
    assert main(["hits", str(rd.path), "extend", hid, "--assignments", "1"]) == 2
    assert "budget" in capsys.readouterr().err and len(actions(rd)) == n

    # on the production MTurk every changing action asks to type yes (no terminal here: refused), --yes skips it
    data = dict(rd.campaign, crowd={"kind": "mturk", "target": "production", "endpoint_url": handle.url})
    atomic_write_text(rd.path / "campaign.json", json.dumps(data))
    mp.setenv("AWS_ACCESS_KEY_ID", "AKIDLOCALTEST")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "local-secret")
    assert main(["hits", str(rd.path), "expire"]) == 2  # production must be named
    assert "--target production" in capsys.readouterr().err
    assert main(["hits", str(rd.path), "expire", "--target", "production"]) == 2
    assert "typed confirmation" in capsys.readouterr().err and len(actions(rd)) == n
    assert main(["hits", str(rd.path), "expire", "--target", "production", "--yes"]) == 0
    assert len([a for a in actions(rd) if a.get("action") == "expire" and a["event"] == "send"]) == len(rows)
    mp.undo()


def _digest(path) -> dict:
    import hashlib

    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != ".lock"}


class Crash(Exception):
    """Stands for the process being killed."""


def test_gold_bonus_is_paid_once_across_a_restart(base_run, tmp_path, capsys):
    """[crowd] bonus_cents_per_gold_correct: journaled with its token before SendBonus; a process killed
    right after MTurk took a bonus (the answer lost) does not pay it again when the round resumes."""
    from crowdprop.campaign import ledger
    from crowdprop.campaign.loop import Campaign
    from crowdprop.crowd.factory import mturk_backend
    from crowdprop.crowd.targets import Target, record_target

    rd = _copy(base_run, tmp_path / "run")
    cfg = rd.config
    atomic_write_text(rd.path / "config.json", dataclasses.replace(
        cfg, crowd=dataclasses.replace(cfg.crowd, bonus_cents_per_gold_correct=3)).to_json())
    rd = RunDir(rd.path)
    local = LocalMTurk(truth_from_masks(rd.masks, correct_iou=cfg.campaign.correct_iou),
                       WorkerPool.build(cfg.simulation, cfg.campaign.seed), images_dir=rd.path / "hit_images")
    handle = serve(local)
    where = Target("local", endpoint_url=handle.url)
    try:
        # --dry-run: the first round's HITs and cost; nothing published, nothing of the run written
        before = _digest(rd.path)
        capsys.readouterr()
        assert main(["run", str(rd.path), "--dry-run", "--endpoint-url", handle.url]) == 0
        out = capsys.readouterr().out
        m = re.search(r"round 1 would publish: (\d+) HIT\(s\), (\d+) questions .*at most \$(\d+)\.(\d\d) "
                      r"\(rewards \$[\d.]+ \+ MTurk fees \$[\d.]+ \+ gold bonuses up to \$[\d.]+\)", out, re.S)
        assert m, out
        assert local.ledger(entries=False)["hits_created"] == 0 and _digest(rd.path) == before
        record_target(rd, where)
        crowd = mturk_backend(rd, where, retry_wait_s=0.001)
        real = crowd.backend.send_bonus
        calls = []

        def send_bonus(**kw):
            out = real(**kw)
            calls.append(kw["assignment_id"])
            if len(calls) == 2:
                raise Crash("killed after MTurk took the second bonus")
            return out

        crowd.backend.send_bonus = send_bonus
        with pytest.raises(Crash):
            Campaign(rd, crowd, progress=False).run(max_rounds=1)
        assert local.ledger(entries=False)["bonuses"] == 2
        Campaign(rd, mturk_backend(rd, where, retry_wait_s=0.001), progress=False).run(max_rounds=1)
        asg = rd.read_rounds("assignments")
        spend = rd.read_rounds("spend")
        bonus = spend[spend["kind"] == "bonus"].set_index("assignment_id")["cents"]
        # every approved assignment with golds right got 3 cents per gold right, once
        want = {a: 3 * int(n) for a, n, ok in zip(asg["assignment_id"], asg["n_gold_correct"], asg["approved"])
                if ok and n > 0}
        assert len(want) >= 3 and bonus.to_dict() == want
        hits = rd.read_rounds("hits")  # what the dry run said round 1 would publish, and its most cost
        assert (len(hits), int(hits["n_questions"].sum())) == (int(m.group(1)), int(m.group(2)))
        most = sum(a * (c + max(1, (20 * c + 50) // 100)) for a, c in zip(hits["assignments"], hits["reward_cents"]))
        assert int(m.group(3)) * 100 + int(m.group(4)) > most
        led = local.ledger(entries=False)
        assert led["bonuses"] == len(want) and max(local._bonus_counts.values()) == 1
        assert round(float(led["bonuses_usd"]) * 100) == sum(want.values())
        fees = spend[spend["kind"] == "bonus_fee"]["cents"].sum()
        assert round(float(led["spent_usd"]) * 100) == spend["cents"].sum() and fees == sum(
            max(1, (20 * c + 50) // 100) for c in want.values())

        # a bonus by hand: the same command twice pays once, and it counts against the budget
        spent = ledger.spent_cents(rd)
        worker = asg["worker_id"].iloc[0]
        argv = ["bonus", str(rd.path), worker, "--usd", "0.25", "--reason", "careful work"]
        capsys.readouterr()
        assert main(argv) == 0 and main(argv) == 0
        assert "sent before (same request); not again" in capsys.readouterr().out
        assert ledger.spent_cents(rd) == spent + 25 + 5
        assert main(["bonus", str(rd.path), worker, "--usd", "0.30", "--reason", "more"]) == 0
        assert ledger.spent_cents(rd) == spent + 30 + 6 + 30
        assert local.ledger(entries=False)["bonuses"] == len(want) + 2
        cfg = rd.config
        atomic_write_text(rd.path / "config.json", dataclasses.replace(cfg, campaign=dataclasses.replace(
            cfg.campaign, budget_usd=(spent + 66 + 10) / 100)).to_json())
        assert main(["bonus", str(rd.path), worker, "--usd", "0.10", "--reason", "too much"]) == 2
        assert "budget" in capsys.readouterr().err and local.ledger(entries=False)["bonuses"] == len(want) + 2
    finally:
        handle.stop()


def test_bad_aws_profile_and_a_first_round_that_reached_nobody(base_run, tmp_path, monkeypatch, capsys):
    """AWS_PROFILE naming no profile is one line (exit 2) naming it; a first round whose endpoint could
    not be reached published nothing, so the campaign may still move to another target."""
    rd = _copy(base_run, tmp_path / "run")
    monkeypatch.setenv("AWS_PROFILE", "nosuch")
    before = _digest(rd.path)
    capsys.readouterr()
    assert main(["run", str(rd.path), "--endpoint-url", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "field 'AWS_PROFILE': no AWS profile 'nosuch'" in err
    assert _digest(rd.path) == before
    monkeypatch.delenv("AWS_PROFILE")
    assert main(["run", str(rd.path), "--endpoint-url", "http://127.0.0.1:9"]) == 2  # nothing listens there
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Could not connect" in err and "nothing is lost" in err
    lines = rd.journal_lines(1, "published")
    assert [x["event"] for x in lines] == ["create", "unsent"]
    assert "WARNING" not in err and "ERROR crowdprop.commands.run: stopped by" in (rd.path / "campaign.log").read_text()
    # nothing reached MTurk: the campaign may still go to the sandbox (a dry run shows its first round)
    assert main(["run", str(rd.path), "--target", "sandbox", "--dry-run"]) == 0
    assert "round 1 is in progress; its frozen plan" in capsys.readouterr().out
