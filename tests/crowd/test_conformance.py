"""One conformance suite for every crowd backend (crowdprop.crowd.base.CrowdBackend).

Each test runs on the in-process simulated crowd and on the MTurk backend talking through a
real boto3 client to the local MTurk-compatible endpoint (simulated workers answering from
the same truth). What differs between them is only what the protocol allows to differ: the
"not supported" answers of a crowd without money (bonus, extend, balance, guard).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

from crowdprop.config import SimulationSection
from crowdprop.crowd.base import UNSUPPORTED, BlockKind, CrowdBackend, CrowdKind
from crowdprop.crowd.spend import BudgetGuard
from crowdprop.crowd.simulated import SimulatedCrowd
from crowdprop.replay.workers import WorkerPool
from tests.mturk.conftest import coco128_masks, make_hit
from tests.mturk.endpoint import start

KINDS = ["simulated", "mturk-local-endpoint"]


@dataclass
class Crowd:
    backend: CrowdBackend
    money: bool
    """Whether the crowd pays real (or endpoint-ledgered) money: bonus, extend, balance."""
    hits_created: Callable[[], int]
    bonuses: Callable[[], int]


@pytest.fixture(scope="module")
def coco():
    return coco128_masks()


@pytest.fixture(params=KINDS)
def crowd(request, coco, tmp_path, monkeypatch):
    masks, images, root = coco
    if request.param == "simulated":
        pool = WorkerPool.build(SimulationSection(workers=12, accuracy=0.9), seed=3)
        truth = np.array([i % 3 != 0 for i in range(len(masks))])
        b = SimulatedCrowd(truth, pool)
        yield Crowd(b, False, lambda: len({a.hit_id for a in b.poll(list(b._by_hit), settled=True)}), lambda: 0)
        b.close()
        return
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDLOCALTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    rig = start(tmp_path, masks, images, root)
    b = rig.backend(campaign_id="conformance")
    yield Crowd(b, True, lambda: rig.ledger()["hits_created"], lambda: rig.ledger()["bonuses"])
    b.close()
    rig.handle.stop()


def test_is_a_crowd_backend_with_a_known_kind(crowd):
    assert isinstance(crowd.backend, CrowdBackend)
    assert crowd.backend.name in {k.value for k in CrowdKind}


def test_publish_is_idempotent_and_lists_every_assignment(crowd, coco):
    b = crowd.backend
    hit = make_hit(coco[0], n=5, assignments=3, token="conf-r1-b0")
    hid = b.publish(hit)
    assert b.publish(hit) == hid and b.publish(hit, admitted=True) == hid  # retries create nothing
    assert crowd.hits_created() == 1
    got = b.poll([hid])
    assert len(got) == 3 and len({a.worker_id for a in got}) == 3
    for a in got:
        assert a.hit_id == hid and a.flag is None and a.status == "Submitted"
        assert sorted(a.answers) == sorted(q.question_id for q in hit.questions)
        assert a.reward_cents == 5
    assert b.poll([hid], settled=True) == got
    state = b.hit_state(hid)
    assert (state["pending"], state["available"], state["gone"]) == (0, 0, False)
    assert b.hit_state("3" + "Z" * 29)["gone"] is True


def test_approve_reject_and_settle_again(crowd, coco):
    b = crowd.backend
    hid = b.publish(make_hit(coco[0], n=4, assignments=3, token="conf-r1-b1"))
    a, r, keep = sorted(b.poll([hid]), key=lambda x: x.assignment_id)
    assert b.settle(a.assignment_id, True, "thanks") == "Approved"
    assert b.settle(r.assignment_id, False, "wrong checks") == "Rejected"
    # again (a lost response): the state the crowd holds, whatever is asked now
    assert b.settle(a.assignment_id, False) == "Approved"
    assert b.settle(r.assignment_id, True) == "Rejected"
    assert [x.assignment_id for x in b.poll([hid])] == [keep.assignment_id]
    states = {x.assignment_id: x.status for x in b.poll([hid], settled=True)}
    assert states == {a.assignment_id: "Approved", r.assignment_id: "Rejected", keep.assignment_id: "Submitted"}


def test_expire_leaves_submitted_work(crowd, coco):
    b = crowd.backend
    hid = b.publish(make_hit(coco[0], n=3, assignments=2, token="conf-r1-b2"))
    b.expire(hid)
    b.expire(hid)  # again is harmless
    assert b.hit_state(hid)["available"] == 0
    assert len(b.poll([hid])) == 2


def test_extend(crowd, coco):
    b = crowd.backend
    hid = b.publish(make_hit(coco[0], n=3, assignments=2, token="conf-r1-b3"))

    def slots():
        st = b.hit_state(hid)
        return len(b.poll([hid], settled=True)) + st["pending"] + st["available"]

    if not crowd.money:
        assert b.extend(hid, 2, "conf-x-1") == UNSUPPORTED
        assert slots() == 2
        return
    assert b.extend(hid, 2, "conf-x-1") == "sent"
    assert b.extend(hid, 2, "conf-x-1") == "already"  # a retried call adds nothing
    assert slots() == 4


def test_bonus_once_per_token(crowd, coco):
    b = crowd.backend
    hid = b.publish(make_hit(coco[0], n=3, assignments=1, token="conf-r1-b4"))
    (a,) = b.poll([hid])
    b.settle(a.assignment_id, True)
    kw = dict(worker_id=a.worker_id, assignment_id=a.assignment_id, reason="golds right", token="conf-bonus-1",
              amount_cents=7)
    if not crowd.money:
        assert b.send_bonus(**kw) == UNSUPPORTED
        assert b.balance() is None and b.guard is None
        return
    assert b.send_bonus(**kw) == "sent"
    assert b.send_bonus(**kw) == "already"
    assert b.send_bonus(**{**kw, "token": "conf-bonus-2"}) == "already"  # listed for the assignment: not twice
    assert crowd.bonuses() == 1
    assert isinstance(b.guard, BudgetGuard)
    assert b.balance() == pytest.approx(10000.0 - 0.05 - 0.01 - 0.07 - 0.01)  # reward, fee, bonus, bonus fee


def test_blocked_worker_gets_no_more_hits(crowd, coco):
    b = crowd.backend
    masks = coco[0]
    first = b.publish(make_hit(masks, n=4, assignments=3, token="conf-r1-b5"))
    workers = sorted(a.worker_id for a in b.poll([first]))
    # the same questions under another token: the same workers would be picked again
    again = b.publish(make_hit(masks, n=4, assignments=3, token="conf-r2-b5"))
    assert sorted(a.worker_id for a in b.poll([again])) == workers
    b.block(workers[0], BlockKind.SOFT)
    b.block(workers[0], "soft")  # again is harmless
    third = b.publish(make_hit(masks, n=4, assignments=3, token="conf-r3-b5"))
    got = sorted(a.worker_id for a in b.poll([third]))
    assert len(got) == 3 and workers[0] not in got
    b.block(workers[1], BlockKind.QUALIFICATION)  # accepted by every crowd
    with pytest.raises(ValueError):
        b.block(workers[1], "gentle")
    assert b.failed_qualification == set()  # no qualification test here
