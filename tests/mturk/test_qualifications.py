"""Campaign qualifications on MTurk: soft blocks through a 'blocked' qualification type and
the qualification test as a qualification type with an answer key.

A real boto3 client talks to the local MTurk-compatible endpoint (no mocks). Expected
grades come from the documented contract (``pool.answer(w, "qualification:mask-<id>",
truth)`` scored against the gold labels), never from the code under test.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from crowdprop.campaign.export import final_status
from crowdprop.campaign.init import init_run
from crowdprop.campaign.loop import Campaign
from crowdprop.campaign.store import RunDir
from crowdprop.commands.replay import sample_paths
from crowdprop.crowd.factory import make_backend
from crowdprop.crowd.mturk import MTurkError, QualificationTest, passing_percentage
from crowdprop.crowd.mturk_xml import ANSWER_KEY_NS, QUESTION_FORM_NS
from crowdprop.crowd.qualification import qualification_results, qualification_test, qualification_test_golds
from crowdprop.mturk_local import html_question, question_page
from crowdprop.mturk_local.qualification import parse_answer_key, parse_test
from crowdprop.quality import QualitySection, passes_qualification
from crowdprop.replay.workers import WorkerPool

from .conftest import make_hit
from .endpoint import start

SPAMMY = "[policy]\nk_pa = 0.0\n[simulation]\nspammer_share = 0.2\nsloppy_share = 0.1\n"


pytestmark = pytest.mark.usefixtures("fake_credentials")


@pytest.fixture
def rig(tmp_path, coco128):
    masks, images, root = coco128
    r = start(tmp_path, masks, images, root, workers=12)
    yield r
    r.handle.stop()


def graded(client, qt) -> dict[str, int]:
    pages = client.get_paginator("list_workers_with_qualification_type").paginate(QualificationTypeId=qt)
    return {q["WorkerId"]: q["IntegerValue"] for p in pages for q in p["Qualifications"]}


def holders(client, qt) -> set[str]:
    return set(graded(client, qt))


def types_named(client, text) -> list[dict]:
    pages = client.get_paginator("list_qualification_types").paginate(Query=text, MustBeRequestable=False,
                                                                      MustBeOwnedByCaller=True)
    return [q for p in pages for q in p["QualificationTypes"]]


# ------------------------------------------------------------------------------ pure parts
@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 100), share=st.floats(0.0, 1.0), data=st.data())
def test_passing_percentage_agrees_with_the_in_process_pass_rule(n, share, data):
    """MTurk grants floor(100 * right / n); value >= the bar exactly when passes_qualification says so."""
    right = data.draw(st.integers(0, n))
    bar = passing_percentage(n, share)
    assert ((100 * right) // n >= bar) == passes_qualification(n, right, QualitySection(qualification_pass=share))


def test_passing_percentage_of_the_defaults_is_90():
    assert passing_percentage(10, 0.9) == 90
    assert QualificationTest((1,) * 10, (True,) * 10, 0.9).passing_percentage == 90


def test_test_and_answer_key_xml_follow_the_schemas(rig):
    rows = (0, 3, 5)
    labels = (True, False, True)
    backend = rig.backend(campaign_id="c1", test=QualificationTest(rows, labels, 0.9))
    form, key = backend.test_xml()
    assert f'xmlns="{QUESTION_FORM_NS}"' in form and f'xmlns="{ANSWER_KEY_NS}"' in key
    qs = parse_test(form)
    ids = [int(rig.masks.iloc[r]["mask_id"]) for r in rows]
    assert [q.identifier for q in qs] == [f"mask-{m}" for m in ids]
    assert all(q.selections == ("yes", "no") for q in qs)
    # the pictures are those of the HIT pages, served by the endpoint
    import xml.etree.ElementTree as ET

    urls = [e.text for e in ET.fromstring(form).iter(f"{{{QUESTION_FORM_NS}}}DataURL")]
    assert urls == [rig.page.image_url(rig.masks.iloc[r]) for r in rows]
    assert sorted(p.name for p in rig.images_dir.iterdir()) == sorted(f"mask_{m}.jpg" for m in ids)
    k = parse_answer_key(key, qs)
    right = {f"mask-{m}": frozenset(["yes" if lab else "no"]) for m, lab in zip(ids, labels)}
    assert k.value(k.score(right)) == 100
    assert k.value(k.score(dict(right, **{f"mask-{ids[1]}": frozenset(["yes"])}))) == 66


def test_a_test_over_64_kb_is_refused_before_mturk_sees_it(rig):
    backend = rig.backend(campaign_id="c1", test=QualificationTest(tuple(range(12)), (True,) * 12, 0.9))
    backend.page.image_url = lambda row: "https://example.org/" + "x" * 6000 + ".jpg"
    with pytest.raises(MTurkError, match="qualification_size"):
        backend.test_qualification_id()
    assert types_named(rig.client, "qualification test") == []


# ------------------------------------------------------------------------------ the backend
def test_hit_types_require_the_test_and_exclude_soft_blocked_workers(rig):
    rows = tuple(range(10))
    labels = tuple(rig.truth[int(rig.masks.iloc[r]["mask_id"])] for r in rows)
    backend = rig.backend(campaign_id="camp1", test=QualificationTest(rows, labels, 0.8))
    hit_id = backend.publish(make_hit(rig.masks, n=4, assignments=9, token="q-r1-b0"))
    reqs = rig.client.get_hit(HITId=hit_id)["HIT"]["QualificationRequirements"]
    blocked = backend.blocked_qualification_id()
    test = backend.test_qualification_id()
    assert {(r["QualificationTypeId"], r["Comparator"], tuple(r.get("IntegerValues", ()))) for r in reqs} == {
        (blocked, "DoesNotExist", ()), (test, "GreaterThanOrEqualTo", (80,))}
    assert [q["Name"] for q in types_named(rig.client, "crowdprop camp1")] == [
        "crowdprop camp1 blocked", "crowdprop camp1 qualification test"]

    # every worker took the test once and was graded as the pool answers it
    mids = [int(rig.masks.iloc[r]["mask_id"]) for r in rows]
    want = {wid: (100 * sum(rig.pool.answer(w, f"qualification:mask-{m}", rig.truth[m]) == lab
                            for m, lab in zip(mids, labels))) // len(rows)
            for w, wid in enumerate(rig.pool.worker_ids)}
    assert graded(rig.client, test) == want
    failed = {w for w, v in want.items() if v < 80}
    assert failed and backend.failed_qualification == failed
    worked = {a.worker_id for a in backend.poll([hit_id])}
    assert worked and not worked & failed

    # a soft block: the qualification is associated (again is harmless); no CreateWorkerBlock
    victim = sorted(worked)[0]
    backend.block(victim, "soft")
    backend.block(victim, "soft")
    backend.block(sorted(failed)[0], "qualification")  # nothing to send: MTurk keeps them out
    assert holders(rig.client, blocked) == {victim}
    assert rig.client.list_worker_blocks()["WorkerBlocks"] == []
    allowed = set(rig.pool.worker_ids) - failed - {victim}
    hit2 = backend.publish(make_hit(rig.masks, n=4, assignments=9, token="q-r2-b0", round=2))
    got = {a.worker_id for a in backend.poll([hit2])}
    assert got == allowed if len(allowed) <= 9 else (len(got) == 9 and got <= allowed)

    backend.block("AHARDBLOCKED1", "hard")
    assert [(b["WorkerId"], b["Reason"]) for b in rig.client.list_worker_blocks()["WorkerBlocks"]] == [
        ("AHARDBLOCKED1", "Answers to known items were wrong too often.")]
    with pytest.raises(ValueError):
        backend.block(victim, "banned")


def test_a_later_process_finds_the_campaign_types_by_name(rig):
    rows = tuple(range(6))
    test = QualificationTest(rows, (True,) * 6, 0.5)
    first = rig.backend(campaign_id="camp2", test=test)
    first.block("ASOFT1", "soft")
    first.publish(make_hit(rig.masks, n=3, token="p-r1-b0"))
    ids = (first.blocked_qualification_id(), first.test_qualification_id())
    later = rig.backend(campaign_id="camp2", test=test)  # a new process: nothing cached
    later.block("ASOFT1", "soft")
    later.block("ASOFT2", "soft")
    assert (later.blocked_qualification_id(), later.test_qualification_id()) == ids
    assert len(types_named(rig.client, "crowdprop camp2")) == 2
    assert holders(rig.client, ids[0]) == {"ASOFT1", "ASOFT2"}
    # another campaign gets its own types: its blocks do not reach this one
    other = rig.backend(campaign_id="camp3")
    other.block("ASOFT3", "soft")
    assert other.blocked_qualification_id() not in ids and holders(rig.client, ids[0]) == {"ASOFT1", "ASOFT2"}


def test_no_campaign_id_keeps_the_old_behaviour(rig):
    backend = rig.backend()
    hit_id = backend.publish(make_hit(rig.masks, n=3, token="o-r1-b0"))
    assert rig.client.get_hit(HITId=hit_id)["HIT"]["QualificationRequirements"] == []
    backend.block("ASOFT1", "soft")
    assert backend.failed_qualification == set()
    assert rig.client.list_qualification_types(MustBeRequestable=False)["QualificationTypes"] == []


# ------------------------------------------------------------------------------ whole replays
@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    preds, gt, _ = sample_paths()
    return preds, gt, tmp_path_factory.mktemp("qual")


def replay(sample, name: str, crowd: str, toml: str, *, seed: int = 7, rounds: int | None = None):
    preds, gt, root = sample
    folder = root / name
    folder.mkdir()
    (folder / "c.toml").write_text(toml)
    who = {"kind": "simulated"} if crowd == "simulated" else {"kind": "mturk-local", "images": "skip"}
    rd = init_run(folder / "run", predictions=preds, gt=gt, config_path=str(folder / "c.toml"), crowd=who,
                  seed=seed, progress=False)
    return rd


def run_to_end(rd: RunDir, *, max_rounds: int | None = None, inspect=None):
    crowd = make_backend(rd)
    try:
        res = Campaign(rd, crowd, progress=False).run(max_rounds=max_rounds)
        if inspect is not None:
            inspect(crowd)
    finally:
        crowd.close()
    return res


def test_replay_through_the_endpoint_keeps_spammers_out_like_the_in_process_crowd(sample):
    sim = replay(sample, "sim", "simulated", SPAMMY)
    loc = replay(sample, "loc", "local", SPAMMY)
    run_to_end(sim)
    seen = {}

    def inspect(crowd):
        qt = crowd.backend.test_qualification_id()
        seen["grades"] = graded(crowd.backend.client, qt)

    run_to_end(loc, inspect=inspect)
    pool = WorkerPool.build(loc.config.simulation, loc.config.campaign.seed)
    q = loc.config.quality
    # the test's golds are the in-process test's, and each worker's grade is its in-process score
    expected = qualification_results(loc, pool)
    assert seen["grades"] == {w: (100 * right) // n for w, (n, right) in expected.items()}
    failed = {w for w, (n, right) in expected.items() if not passes_qualification(n, right, q)}
    spammers = {w for w, k in zip(pool.worker_ids, pool.kind) if k == "spammer"}
    assert spammers and spammers <= failed  # 10 golds at 0.9: a spammer passes 1 % of the time

    def kinds(rd, kind):
        b = rd.read_rounds("blocks")
        return set(b.loc[b["kind"] == kind, "worker_id"])

    assert kinds(loc, "qualification") == kinds(sim, "qualification") == failed
    assert sorted(loc.read_rounds("blocks")["kind"]) == sorted(sim.read_rounds("blocks")["kind"])
    a, b = final_status(loc), final_status(sim)
    assert (a >= 0).all()
    np.testing.assert_array_equal(a, b)
    assert not set(loc.read_rounds("assignments")["worker_id"]) & failed
    assert set(loc.read_rounds("assignments")["worker_id"]) == set(sim.read_rounds("assignments")["worker_id"])


def test_soft_blocked_workers_get_no_more_hits_on_the_endpoint(sample):
    # a pass mark of 0.5 lets some spammers through the test; their golds get them soft-blocked later
    toml = SPAMMY + "[quality]\nqualification_pass = 0.5\n"
    sim = replay(sample, "sim-soft", "simulated", toml)
    loc = replay(sample, "loc-soft", "local", toml)
    run_to_end(sim)
    # two processes: the second starts a fresh endpoint, and the blocks of the run directory reach it
    run_to_end(loc, max_rounds=3)
    after = {}

    def inspect(crowd):
        c = crowd.backend.client
        after["blocked_holders"] = holders(c, crowd.backend.blocked_qualification_id())
        reward = int(loc.read_rounds("hits")["reward_cents"].iloc[0]) / 100
        mid = int(loc.masks["mask_id"].iloc[0])
        hid = c.create_hit_with_hit_type(HITTypeId=crowd.backend.hit_type_id(reward), MaxAssignments=50,
                                         LifetimeInSeconds=600,
                                         Question=html_question(question_page([("probe", mid)])))["HIT"]["HITId"]
        pages = c.get_paginator("list_assignments_for_hit").paginate(HITId=hid)
        after["probe"] = {a["WorkerId"] for p in pages for a in p["Assignments"]}

    run_to_end(loc, inspect=inspect)
    blocks = loc.read_rounds("blocks")
    assert blocks.sort_values("worker_id").reset_index(drop=True).equals(
        sim.read_rounds("blocks").sort_values("worker_id").reset_index(drop=True))
    soft = blocks[blocks["kind"] == "soft"]
    assert len(soft) > 0
    np.testing.assert_array_equal(final_status(loc), final_status(sim))
    assert after["blocked_holders"] == set(soft["worker_id"])
    # a HIT open to everyone in the campaign's HIT type: exactly the workers not blocked take it
    pool = WorkerPool.build(loc.config.simulation, loc.config.campaign.seed)
    assert after["probe"] == set(pool.worker_ids) - set(blocks["worker_id"])
    # no HIT of a round after a worker's soft block went to that worker
    asg = loc.read_rounds("assignments")
    for w, r in zip(soft["worker_id"], soft["round"]):
        assert not ((asg["worker_id"] == w) & (asg["round"] > r)).any()
        assert ((asg["worker_id"] == w) & (asg["round"] <= r)).any()  # they did work before


def test_no_golds_or_no_test_size_means_no_test(sample, tmp_path):
    rd = replay(sample, "nogolds", "local", SPAMMY + "[quality]\nqualification_size = 0\n")
    assert len(qualification_test_golds(rd)) == 0 and qualification_test(rd) is None
    crowd = make_backend(rd)
    try:
        assert crowd.backend.test is None and crowd.failed_qualification == set()
        assert [q["Name"] for q in types_named(crowd.backend.client, "crowdprop")] == []
        crowd.block("ASOFT1", "soft")
        assert [q["Name"] for q in types_named(crowd.backend.client, "crowdprop")] == [
            f"crowdprop {rd.campaign['campaign_id']} blocked"]
    finally:
        crowd.close()
