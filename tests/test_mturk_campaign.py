"""Whole campaigns through MTurk's API: a real boto3 client against the local
MTurk-compatible endpoint (crowdprop.mturk_local), no mocks.

One run directory is initialised from the shipped sample per module and copied
for each test; a test changes only sections of config.json that do not shape
the cluster trees (crowd, simulation, campaign budget).
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from crowdprop.campaign.export import final_status
from crowdprop.campaign.init import init_run
from crowdprop.campaign.loop import Campaign
from crowdprop.campaign.store import RunDir
from crowdprop.cli import main
from crowdprop.commands.replay import sample_paths
from crowdprop.config import SimulationSection
from crowdprop.crowd.factory import local_endpoint_backend, make_backend, mturk_backend, simulated_backend
from crowdprop.crowd.resume import MTurkCrowd
from crowdprop.crowd.targets import record_target, resolve_target
from crowdprop.errors import InputError
from crowdprop.io import atomic_write_text
from crowdprop.mturk_local import LocalMTurk, ManualClock, serve, truth_from_masks
from crowdprop.replay.workers import WorkerPool

FAKE_KEY = "AKIAFAKEFAKEFAKE1234"
FAKE_SECRET = "fAkEsEcReTfAkEsEcReT0123456789abcdefGHIJ"
PERFECT = SimulationSection(workers=25, accuracy=1.0, accuracy_spread=0.0)
"""Workers who always answer the truth: any crowd must then reach the same decisions."""


class Crash(Exception):
    """Stands for the process being killed."""


pytestmark = pytest.mark.usefixtures("no_aws_credentials")


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> RunDir:
    preds, gt, config = sample_paths()
    return init_run(tmp_path_factory.mktemp("base") / "run", predictions=preds, gt=gt, config_path=config,
                    crowd={"kind": "mturk", "target": "sandbox"})


def clone(base: RunDir, dest: Path, who: dict, **sections) -> RunDir:
    """A copy of ``base`` with another crowd and some config sections replaced."""
    shutil.copytree(base.path, dest)
    cfg = base.config
    cfg = dataclasses.replace(cfg, **{name: dataclasses.replace(getattr(cfg, name), **kw) if isinstance(kw, dict)
                                      else kw for name, kw in sections.items()})
    atomic_write_text(dest / "config.json", cfg.to_json())
    camp = dict(base.campaign, crowd=who)
    atomic_write_text(dest / "campaign.json", json.dumps(camp, indent=2, sort_keys=True))
    return RunDir(dest)


def endpoint_for(rd: RunDir, **kw):
    cfg = rd.config
    truth = truth_from_masks(rd.masks, correct_iou=cfg.campaign.correct_iou)
    local = LocalMTurk(truth, WorkerPool.build(cfg.simulation, cfg.campaign.seed), images_dir=rd.path / "hit_images",
                       **kw)
    return serve(local)


def check_books(rd: RunDir, local: LocalMTurk) -> dict:
    """The endpoint's ledger against the run directory: one HIT per token, one approval per assignment, same money."""
    led = local.ledger(entries=False)
    hits = rd.read_rounds("hits")
    asg = rd.read_rounds("assignments")
    spend = rd.read_rounds("spend")
    assert led["tokens_with_several_hits"] == []
    assert led["hits_created"] == len(hits) == hits["token"].nunique()
    assert set(hits["hit_id"]) <= {h["HITId"] for h in local.call("ListHITs", {"MaxResults": 100})["HITs"]}
    assert led["approved_more_than_once"] == []
    approved = asg["approved"].astype(bool)
    assert led["approvals"] == led["approve_calls"] == int(approved.sum())
    assert led["assignments"].get("Rejected", 0) == int((~approved).sum())
    assert led["assignments"].get("Approved", 0) + led["assignments"].get("Rejected", 0) == len(asg)
    assert asg["assignment_id"].is_unique
    assert round(float(led["spent_usd"]) * 100) == spend["cents"].sum()
    return led


# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def perfect_sim(base_run, tmp_path_factory) -> RunDir:
    """The in-process simulated crowd's campaign with perfect workers."""
    rd = clone(base_run, tmp_path_factory.mktemp("sim") / "run", {"kind": "simulated"}, simulation=PERFECT)
    res = Campaign(rd, simulated_backend(rd), progress=False).run()
    assert res.stop_reason == "no candidates left"
    return rd


def test_local_endpoint_replay_decides_exactly_as_the_in_process_crowd(base_run, perfect_sim, tmp_path):
    local_rd = clone(base_run, tmp_path / "local", {"kind": "mturk-local", "images": "skip"}, simulation=PERFECT)
    sim_rd = perfect_sim

    crowd = make_backend(local_rd)
    assert isinstance(crowd, MTurkCrowd) and crowd.handle.url.startswith("http://127.0.0.1:")
    try:
        res = Campaign(local_rd, crowd, progress=False).run()
    finally:
        crowd.close()
    assert res.stop_reason == "no candidates left"

    a, b = final_status(local_rd), final_status(sim_rd)
    assert (a == 1).any() and (a == 0).any()  # the sample leaves clusters under K_pa open (-1)
    np.testing.assert_array_equal(a, b)
    cols = ["round", "node_id", "decision", "free", "n_labeled"]  # soft counts and estimates weigh worker ids
    assert local_rd.read_rounds("decisions")[cols].equals(sim_rd.read_rounds("decisions")[cols])

    # every answer went page -> endpoint -> boto3 -> loop to the mask it was asked about
    truth = local_rd.masks["gt_iou"].to_numpy() > local_rd.config.campaign.correct_iou
    ans = local_rd.read_rounds("answers")
    np.testing.assert_array_equal(ans["label"].to_numpy(), truth[ans["mask_row"].to_numpy()].astype(np.int8))
    q = local_rd.read_rounds("questions")
    assert sorted(ans["question_id"]) == sorted(q["question_id"])
    assert ans["hit_id"].str.fullmatch(r"[A-Z0-9]{30}").all()  # MTurk ids, not the in-process crowd's

    led = check_books(local_rd, crowd.local)
    assert round(float(led["spent_usd"]) * 100) == sim_rd.read_rounds("spend")["cents"].sum()
    # simulated workers never look at pictures: none were drawn
    assert not any((local_rd.path / "hit_images").iterdir())


def test_replay_command_goes_through_the_local_endpoint_by_default(perfect_sim, tmp_path, capsys):
    toml = tmp_path / "perfect.toml"
    sample_config = Path(sample_paths()[2]).read_text()  # the sample's policy, perfect workers
    toml.write_text(sample_config + "\n[simulation]\naccuracy = 1.0\naccuracy_spread = 0.0\n")
    run_dir = tmp_path / "replay"
    assert main(["replay", "--run-dir", str(run_dir), "--config", str(toml)]) == 0
    out = capsys.readouterr().out
    assert "local MTurk endpoint at http://127.0.0.1:" in out and "stopped: no candidates left" in out
    rd = RunDir(run_dir)
    assert rd.campaign["crowd"] == {"kind": "mturk-local", "images": "skip"}
    np.testing.assert_array_equal(final_status(rd), final_status(perfect_sim))
    assert rd.read_rounds("hits")["hit_id"].str.fullmatch(r"[A-Z0-9]{30}").all()


def test_hard_block_reaches_the_endpoint(base_run, tmp_path):
    rd = clone(base_run, tmp_path / "r", {"kind": "mturk-local", "images": "skip"})
    crowd = make_backend(rd)
    try:
        crowd.block("ASPAMMER1", "hard")
        crowd.block("ASLOPPY2", "soft")
        blocked = crowd.backend.client.list_worker_blocks(MaxResults=10)["WorkerBlocks"]
        assert [b["WorkerId"] for b in blocked] == ["ASPAMMER1"]
    finally:
        crowd.close()


def test_interrupted_local_replay_continues_with_run(base_run, tmp_path, capsys):
    """`crowdprop run` on a replay killed mid-round starts a local endpoint again and finishes it
    with the same answers (noisy workers: answers are a function of the HIT token and question)."""
    rd = clone(base_run, tmp_path / "r", {"kind": "mturk-local", "images": "skip"})
    ref = clone(base_run, tmp_path / "ref", {"kind": "mturk-local", "images": "skip"})
    crowd = make_backend(ref)
    try:
        Campaign(ref, crowd, progress=False).run()
    finally:
        crowd.close()
    crowd = make_backend(rd)
    real_settle = crowd.backend.settle
    calls = []

    def settle(aid, approve, feedback=None):  # killed after the first approval of round 2
        if rd.rounds() == [1]:
            calls.append(aid)
            if len(calls) == 2:
                raise Crash("killed")
        return real_settle(aid, approve, feedback)

    crowd.backend.settle = settle
    with pytest.raises(Crash):
        Campaign(rd, crowd, progress=False).run()
    crowd.close()
    assert rd.rounds() == [1] and (rd.path / "journal").exists()

    assert main(["run", str(rd.path)]) == 0
    assert "stopped: no candidates left" in capsys.readouterr().out
    np.testing.assert_array_equal(final_status(rd), final_status(ref))
    asg, asg_ref = rd.read_rounds("assignments"), ref.read_rounds("assignments")
    assert len(asg) == len(asg_ref) and asg["assignment_id"].is_unique
    key = ["question_id", "worker_id", "label"]
    ans, ans_ref = rd.read_rounds("answers"), ref.read_rounds("answers")
    assert ans[key].sort_values(key).reset_index(drop=True).equals(ans_ref[key].sort_values(key).reset_index(drop=True))
    # the second process's endpoint numbered its HITs apart from the first's
    assert rd.read_rounds("hits")["hit_id"].is_unique


class CrashAfterCreate:
    """A boto3 client that dies right after the n-th CreateHIT returned (before the id is recorded)."""

    def __init__(self, client, n: int):
        self._client, self._n, self.created = client, n, 0

    def __getattr__(self, name):
        fn = getattr(self._client, name)
        if name != "create_hit_with_hit_type":
            return fn

        def create(**kw):
            out = fn(**kw)
            self.created += 1
            if self.created == self._n:
                raise Crash(out["HIT"]["HITId"])
            return out
        return create


def test_crash_between_create_hit_and_its_record_makes_no_second_hit(base_run, tmp_path):
    # a budget for 4 of round 1's 11 HITs keeps the pictures to draw few
    rd = clone(base_run, tmp_path / "r", {"kind": "mturk", "target": "sandbox"}, campaign={"budget_usd": 1.0})
    clock = ManualClock()
    handle = endpoint_for(rd, clock=clock)
    try:
        where = resolve_target(rd, endpoint_url=handle.url)
        assert where.target == "local"
        record_target(rd, where)
        raw = mturk_backend(rd, where)
        crowd = mturk_backend(rd, where, client=CrashAfterCreate(raw.backend.client, 3))
        with pytest.raises(Crash) as crash:
            Campaign(rd, crowd, progress=False).run(max_rounds=1)
        published = rd.journal_lines(1, "published")
        assert [x["event"] for x in published if "event" in x] == ["create"] * 3
        assert len([x for x in published if "hit_id" in x]) == 2  # the third HIT exists, its id is not recorded
        assert handle.local.ledger()["hits_created"] == 3

        clock.advance(25 * 3600)  # MTurk has forgotten the UniqueRequestTokens by now
        crowd = make_backend(rd, endpoint_url=handle.url)
        assert crowd.orphans == {published[-1]["token"]} and len(crowd.known) == 2
        res = Campaign(rd, crowd, progress=False).run(max_rounds=1)
        assert res.rounds_run == 1 and crowd.reused == 3
        hits = rd.read_rounds("hits")
        assert crash.value.args[0] in set(hits["hit_id"])
        check_books(rd, handle.local)
        assert json.loads((rd.path / "campaign.json").read_text())["crowd"] == {
            "kind": "mturk", "target": "local", "endpoint_url": handle.url}

        # without the journal and ListHITs, publishing that token again would have made a second HIT
        token = crash.value.args[0]
        [tok] = hits.loc[hits["hit_id"] == token, "token"]
        from crowdprop.crowd.base import HitRequest, Question

        q = rd.read_rounds("questions")
        qs = q[q["token"] == tok]
        again = HitRequest(tok, 1, 0, tuple(Question(i, int(m)) for i, m in zip(qs["question_id"], qs["mask_row"])),
                           1, 0.2, rd.config.campaign.name)
        assert raw.backend.publish(again) != token
        assert handle.local.ledger()["tokens_with_several_hits"] == [tok]
    finally:
        handle.stop()


def test_unanswered_hit_expires_at_round_timeout_and_is_asked_again(base_run, tmp_path):
    rd = clone(base_run, tmp_path / "r", {"kind": "mturk-local", "images": "skip"},
               crowd={"round_timeout_s": 5.0, "poll_interval_s": 0.0})
    crowd = local_endpoint_backend(rd, unanswered_share=0.5)
    ticks = iter(range(10**6))
    try:
        Campaign(rd, crowd, progress=False, clock=lambda: float(next(ticks))).run(max_rounds=2)
        hits = rd.read_rounds("hits")
        h1 = hits[hits["round"] == 1]
        gone = h1[h1["expired"]]
        assert len(gone) >= 1 and (gone["n_submitted"] == 0).all()
        assert (h1.loc[~h1["expired"], "n_submitted"] == 1).all()
        for hid in gone["hit_id"]:  # taken off the market on the endpoint
            h = crowd.backend.client.get_hit(HITId=hid)["HIT"]
            assert h["HITStatus"] != "Assignable" and h["NumberOfAssignmentsAvailable"] == 0
        q = rd.read_rounds("questions")
        ans = rd.read_rounds("answers")
        lost = q[q["token"].isin(gone["token"])]
        assert not set(lost["question_id"]) & set(ans["question_id"])
        # the candidates of the unanswered questions are asked about again in round 2
        lost_nodes = set(lost.loc[~lost["is_gold"], "node_id"])
        q2 = q[(q["round"] == 2) & ~q["is_gold"]]
        assert lost_nodes and lost_nodes <= set(q2["node_id"])
        check_books(rd, crowd.local)
    finally:
        crowd.close()


def test_production_without_yes_and_without_a_terminal_refuses(base_run, tmp_path, monkeypatch, capsys):
    rd = clone(base_run, tmp_path / "r", {"kind": "mturk", "target": "sandbox"})
    before = (rd.path / "campaign.json").read_text()
    monkeypatch.setattr(sys, "stdin", io.StringIO("yes\n"))
    assert main(["run", str(rd.path), "--target", "production"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "--yes" in err
    assert (rd.path / "campaign.json").read_text() == before
    assert not (rd.path / "journal").exists() and rd.rounds() == []


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_production_confirmation_and_credentials_never_leak(base_run, tmp_path, monkeypatch, capsys, caplog):
    rd = clone(base_run, tmp_path / "r", {"kind": "mturk", "target": "sandbox"}, campaign={"budget_usd": 1.0})
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    caplog.set_level(logging.DEBUG)
    handle = endpoint_for(rd, balance=123.45)
    try:
        args = ["-vv", "run", str(rd.path), "--target", "production", "--endpoint-url", handle.url, "--rounds", "1"]
        monkeypatch.setattr(sys, "stdin", FakeTerminal("no\n"))
        assert main(args) == 2
        out, err = capsys.readouterr()
        # $1.00 left; a full HIT is 1 x ($0.20 + $0.04 fee) = $0.24, so 4 HITs
        assert "$1.00 of the $1.00 budget is left" in out and "at most 4 HITs" in out and "= $0.24" in out
        assert "account balance: $123.45" in out and "nothing was published" in err
        assert handle.local.ledger()["hits_created"] == 0

        monkeypatch.setattr(sys, "stdin", FakeTerminal("yes\n"))
        assert main(args) == 0
        out2, err2 = capsys.readouterr()
        led = check_books(rd, handle.local)
        assert led["hits_created"] > 0 and rd.rounds() == [1]
        crowd = json.loads((rd.path / "campaign.json").read_text())["crowd"]
        assert crowd == {"kind": "mturk", "target": "production", "endpoint_url": handle.url}
        # once on production, always explicitly
        monkeypatch.setattr(sys, "stdin", FakeTerminal("yes\n"))
        assert main(["run", str(rd.path), "--endpoint-url", handle.url]) == 2
        out3, err3 = capsys.readouterr()
        assert "--target production" in err3 and handle.local.ledger()["hits_created"] == led["hits_created"]
    finally:
        handle.stop()
    assert caplog.records  # DEBUG logging was on
    texts = [out, err, out2, err2, out3, err3, caplog.text]
    for path in rd.path.rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("latin-1"))
    for secret in (FAKE_KEY, FAKE_SECRET):
        assert not any(secret in t for t in texts)


def test_config_with_mturk_and_quality_tables_is_accepted(tmp_path):
    toml = tmp_path / "campaign.toml"
    toml.write_text(textwrap.dedent("""\
        [policy]
        k_pa = 0.0
        [mturk]
        title = "Outline check"
        image_base_url = "https://example.org/hits"
        locale = ["US", "CA"]
        [quality]
        min_gold_accuracy = 0.8
        soft_block_after = 3
        """))
    # a fresh interpreter that imports nothing but the configuration module
    code = ("import json, crowdprop.config as c; cfg = c.load(%r).to_dict(); "
            "print(json.dumps({k: cfg[k] for k in ('mturk', 'quality')}, sort_keys=True))" % str(toml))
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert (out["mturk"]["title"], out["mturk"]["image_base_url"], out["mturk"]["locale"]) == \
        ("Outline check", "https://example.org/hits", ["US", "CA"])
    assert (out["quality"]["min_gold_accuracy"], out["quality"]["soft_block_after"]) == (0.8, 3)
    # and a run directory keeps them: the MTurk backend reads its [mturk] section back
    from crowdprop import config as config_mod

    cfg = config_mod.load(toml)
    (tmp_path / "run").mkdir()
    atomic_write_text(tmp_path / "run" / "config.json", cfg.to_json())
    again = config_mod.load_json(tmp_path / "run" / "config.json")
    sec = again.mturk
    assert (sec.title, sec.image_base_url, sec.locale) == ("Outline check", "https://example.org/hits", ["US", "CA"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[mturk]\nreward = 0.5\n")
    with pytest.raises(InputError) as e:
        config_mod.load(bad)
    assert "[mturk]" in str(e.value) and "reward" in str(e.value) and str(bad) in str(e.value)


@pytest.mark.parametrize("unanswered", [0.0, 1.0])
def test_the_diminishing_returns_stop_counts_only_rounds_that_got_answers(base_run, tmp_path, unanswered):
    """Through boto3 and the endpoint: a round whose HITs all expire unanswered says nothing about
    what asking yields, so it does not stop the campaign; a round that got answers and decided
    under the share does. Either way every HIT published is settled and paid for once."""
    from crowdprop.campaign.loop import DIMINISHING

    rd = clone(base_run, tmp_path / "r", {"kind": "mturk-local", "images": "skip"},
               crowd={"round_timeout_s": 5.0, "poll_interval_s": 0.0},
               campaign={"stop_below_share": 0.99, "stop_patience": 1, "max_rounds": 2})
    crowd = local_endpoint_backend(rd, unanswered_share=unanswered)
    ticks = iter(range(10**6))
    try:
        res = Campaign(rd, crowd, progress=False, clock=lambda: float(next(ticks))).run()
        hits = rd.read_rounds("hits")
        ans = rd.read_rounds("answers")
        if unanswered:
            # nothing answered: both rounds ran (round 2 asked round 1's questions again), no stop
            assert res.stop_reason == "round limit reached" and rd.rounds() == [1, 2]
            assert len(ans) == 0 and hits["expired"].all() and set(hits["round"]) == {1, 2}
            assert "stopped" not in RunDir(rd.path).campaign
        else:
            # round 1 got its answers and decided under 99 % of the masks: round 2 is never published
            assert res.stop_reason == DIMINISHING and rd.rounds() == [1]
            assert len(ans) > 0 and set(hits["round"]) == {1}
            assert RunDir(rd.path).campaign["stopped"] == {"reason": DIMINISHING, "after_round": 1}
        led = check_books(rd, crowd.local)
        assert led["hits_created"] == len(hits)
        for hid in hits["hit_id"]:  # nothing left on the market
            assert crowd.backend.client.get_hit(HITId=hid)["HIT"]["NumberOfAssignmentsAvailable"] == 0
    finally:
        crowd.close()
