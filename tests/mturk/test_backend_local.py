"""MTurkBackend against the local MTurk-compatible endpoint, through a real boto3 client."""
from __future__ import annotations

import urllib.parse
import urllib.request
from datetime import datetime

import pytest
from botocore.exceptions import ClientError

from crowdprop.crowd.base import Fees, content_key
from crowdprop.crowd.mturk import connect
from crowdprop.crowd.spend import BudgetGuard
from crowdprop.errors import BudgetExhausted
from crowdprop.hits.render import HitTooLarge, PageRenderer
from crowdprop.mturk_local import page_questions
from crowdprop.mturk_local.faults import Fault

from .conftest import CLASS_NAMES, make_hit
from .endpoint import ScriptedFaults, start


pytestmark = pytest.mark.usefixtures("fake_credentials")


@pytest.fixture
def rig(tmp_path, coco128):
    masks, images, root = coco128
    r = start(tmp_path, masks, images, root)
    yield r
    r.handle.stop()


def sim_key(hit):
    """What the endpoint's simulated workers key their answers by: the questions the HIT asks."""
    return content_key([q.question_id for q in hit.questions])


def expected_answers(rig, hit, worker_id):
    w = rig.pool.index(worker_id)
    return {q.question_id: rig.pool.answer(w, f"{sim_key(hit)}:{q.question_id}",
                                           rig.truth[int(rig.masks.iloc[q.mask_row]["mask_id"])])
            for q in hit.questions}


def test_publish_poll_settle_round_trip(rig):
    backend = rig.backend()
    hit = make_hit(rig.masks, n=8, assignments=3, reward=0.25, token="rt-r0-b0")
    hit_id = backend.publish(hit)
    got = backend.poll([hit_id])
    assert len(got) == 3 and len({a.worker_id for a in got}) == 3
    for a in got:
        assert a.flag is None and a.hit_id == hit_id
        assert a.answers == expected_answers(rig, hit, a.worker_id)
        w = rig.pool.index(a.worker_id)
        assert a.work_seconds == pytest.approx(rig.pool.seconds(w, sim_key(hit), 8), abs=1e-3)
    # the page the endpoint stored names every question, and every image it points at is served
    assert [q.question_id for q in page_questions(rig.local.hit_page(hit_id))] == [q.question_id for q in hit.questions]
    assert sorted(p.name for p in rig.images_dir.iterdir()) == sorted(
        f"mask_{int(rig.masks.iloc[q.mask_row]['mask_id'])}.jpg" for q in hit.questions)
    assert backend.settle(got[0].assignment_id, True, "thanks") == "Approved"
    assert backend.settle(got[1].assignment_id, True) == "Approved"
    assert backend.settle(got[2].assignment_id, False, "too many wrong answers on known items") == "Rejected"
    assert backend.settle(got[0].assignment_id, True) == "Approved"  # again: already approved is success
    assert backend.settle(got[2].assignment_id, False) == "Rejected"
    ledger = rig.ledger()
    assert ledger["approvals"] == 2 and ledger["approved_more_than_once"] == []
    assert ledger["assignments"] == {"Approved": 2, "Rejected": 1}
    assert float(ledger["rewards_usd"]) == pytest.approx(0.50)
    assert float(ledger["fees_usd"]) == pytest.approx(2 * 0.05)
    assert backend.poll([hit_id]) == []  # settled work is not returned again
    # ... unless asked for: every assignment with MTurk's state
    assert sorted((a.assignment_id, a.status) for a in backend.poll([hit_id], settled=True)) == sorted(
        [(got[0].assignment_id, "Approved"), (got[1].assignment_id, "Approved"), (got[2].assignment_id, "Rejected")])
    # rejected -> approve is a real state change MTurk refuses: nothing paid, MTurk's state returned
    assert backend.settle(got[2].assignment_id, True) == "Rejected"
    assert rig.ledger()["approvals"] == 2


def test_publishing_a_token_twice_makes_one_hit(rig):
    hit = make_hit(rig.masks, n=5, token="dup-r1-b4", round=1, batch=4)
    first = rig.backend().publish(hit)
    # a new process (nothing remembered) publishes the same HIT again after a crash
    second = rig.backend().publish(hit)
    assert second == first
    ledger = rig.ledger()
    assert ledger["hits_created"] == 1 and ledger["tokens_with_several_hits"] == []
    assert rig.backend().find_hits("test") == {"dup-r1-b4": first}


def test_lost_create_response_is_retried_into_the_same_hit(rig):
    # CreateHITType ok, CreateHIT's answer lost
    rig.local.fault_injector = ScriptedFaults([None, Fault("error", 503, after=True)])
    hit_id = rig.backend().publish(make_hit(rig.masks, n=4, token="lost-r0-b0"))
    assert rig.ledger()["hits_created"] == 1
    # type, lost create, create -> HitAlreadyExists, GetHIT: the existing HIT holds what was asked
    assert rig.local.fault_injector.counts["requests"] == 4
    assert rig.client.get_hit(HITId=hit_id)["HIT"]["RequesterAnnotation"] == "crowdprop:test:r0:lost-r0-b0"


def test_polling_pages_through_every_assignment(rig):
    backend = rig.backend()
    backend.page_size = 4  # 9 assignments per HIT -> 3 pages each
    hits = [make_hit(rig.masks, n=3, assignments=9, reward=0.05, token=f"pg-r0-b{b}", batch=b, start=b)
            for b in range(3)]
    ids = [backend.publish(h) for h in hits]
    got = backend.poll(ids)
    assert len(got) == 27 == sum(rig.ledger()["assignments"].values())
    assert len({a.assignment_id for a in got}) == 27
    for h, hid in zip(hits, ids):
        mine = [a for a in got if a.hit_id == hid]
        assert len(mine) == 9 and len({a.worker_id for a in mine}) == 9
        assert all(a.answers == expected_answers(rig, h, a.worker_id) for a in mine)


def test_find_hits_pages_and_keeps_to_its_campaign(rig):
    backend = rig.backend()
    backend.page_size = 7
    ours = {f"fh-r0-b{b}": backend.publish(make_hit(rig.masks, n=1, token=f"fh-r0-b{b}", batch=b, campaign="one"))
            for b in range(30)}
    backend.publish(make_hit(rig.masks, n=1, token="other-r0-b0", campaign="two"))
    assert backend.find_hits("one") == ours
    assert list(backend.find_hits("two")) == ["other-r0-b0"]


def test_a_restarted_backend_rederives_the_questions(rig):
    hit = make_hit(rig.masks, n=6, assignments=2, token="re-r0-b0")
    hit_id = rig.backend().publish(hit)
    got = rig.backend().poll([hit_id])  # knows nothing: reads question ids back from GetHIT
    assert len(got) == 2 and all(a.flag is None and a.answers == expected_answers(rig, hit, a.worker_id)
                                 for a in got)


def test_budget_guard_refuses_the_hit_that_would_pass_the_cap(rig):
    # 2 assignments x ($0.30 + $0.06 fee) = $0.72 per HIT; the cap allows two
    backend = rig.backend(guard=BudgetGuard(cap_cents=150, committed_cents=0, fees=Fees()))
    backend.publish(make_hit(rig.masks, n=2, assignments=2, reward=0.30, token="b-0"))
    backend.publish(make_hit(rig.masks, n=2, assignments=2, reward=0.30, token="b-1"))
    with pytest.raises(BudgetExhausted, match=r"HIT b-2 .* could cost \$0.72"):
        backend.publish(make_hit(rig.masks, n=2, assignments=2, reward=0.30, token="b-2"))
    assert rig.ledger()["hits_created"] == 2


def test_question_over_64kb_is_refused_before_any_create_call(rig):
    fat = PageRenderer(lambda row: rig.handle.url + "/images/" + "x" * 2000, CLASS_NAMES, masks=rig.masks)
    backend = rig.backend()
    backend.page = fat
    rig.local.fault_injector = ScriptedFaults([])  # counts API requests
    with pytest.raises(HitTooLarge, match="at most 65535"):
        backend.publish(make_hit(rig.masks, n=50, token="fat"))
    assert rig.local.fault_injector.counts["requests"] == 0
    assert rig.ledger()["hits_created"] == 0


def test_throttling_and_5xx_are_retried_request_errors_are_not(rig):
    backend = rig.backend()
    rig.local.fault_injector = ScriptedFaults([Fault("throttle", 400), Fault("error", 503), Fault("error", 500)])
    assert backend.balance() == pytest.approx(10000.0)
    assert rig.local.fault_injector.counts["requests"] == 4
    rig.local.fault_injector = ScriptedFaults([])
    with pytest.raises(ClientError) as e:
        backend.expire("3" + "A" * 29)  # no such HIT: a RequestError
    assert e.value.response["Error"]["Code"] == "RequestError"
    assert rig.local.fault_injector.counts["requests"] == 1
    rig.local.fault_injector = ScriptedFaults([Fault("throttle", 400)] * 10)
    with pytest.raises(ClientError) as e:
        backend.balance()
    assert e.value.response["Error"]["Code"] == "ThrottlingException"
    assert rig.local.fault_injector.counts["requests"] == 6  # bounded: retry_attempts


def test_expire_takes_the_hit_off_the_market(rig):
    rig.local.simulate = False
    backend = rig.backend()
    hit_id = backend.publish(make_hit(rig.masks, n=2, token="ex-r0-b0"))
    before = rig.client.get_hit(HITId=hit_id)["HIT"]
    assert before["HITStatus"] == "Assignable"
    backend.expire(hit_id)
    after = rig.client.get_hit(HITId=hit_id)["HIT"]
    assert after["HITStatus"] != "Assignable"
    assert after["Expiration"] <= datetime.now(after["Expiration"].tzinfo)


def test_bonus_is_paid_once_per_token(rig):
    backend = rig.backend()
    hit_id = backend.publish(make_hit(rig.masks, n=2, token="bo-r0-b0"))
    a = backend.poll([hit_id])[0]
    for _ in range(2):
        backend.send_bonus(worker_id=a.worker_id, assignment_id=a.assignment_id, amount_usd=0.10,
                           reason="accurate work", token="bonus-" + a.assignment_id[:20])
    ledger = rig.ledger()
    assert ledger["bonuses"] == 1 and float(ledger["bonuses_usd"]) == pytest.approx(0.10)


def test_malformed_browser_submission_is_flagged(rig):
    backend = rig.backend()
    hit = make_hit(rig.masks, n=3, token="manual-r0-b0", campaign="manual")
    rig.local.simulate = False  # a campaign's HITs are left for a browser by --no-simulate, not by its name
    hit_id = backend.publish(hit)
    aid = rig.local.accept(hit_id, "AHUMANWORKER01")
    qs = [q.question_id for q in hit.questions]
    form = urllib.parse.urlencode([("assignmentId", aid), ("workerId", "AHUMANWORKER01"),
                                   (qs[0], "yes"), (qs[1], "perhaps"), ("extra", "no")]).encode()
    req = urllib.request.Request(rig.handle.url + "/mturk/externalSubmit", data=form,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 200
    [a] = backend.poll([hit_id])
    assert a.worker_id == "AHUMANWORKER01"
    assert "malformed answer 'perhaps'" in a.flag and "unknown question id 'extra'" in a.flag
    assert "missing answers to 1 question(s)" in a.flag


def test_local_endpoint_needs_no_credentials(monkeypatch, tmp_path, coco128):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    masks, images, root = coco128
    r = start(tmp_path, masks, images, root)
    try:
        assert float(connect(None, endpoint_url=r.handle.url).get_account_balance()["AvailableBalance"]) == 10000.0
    finally:
        r.handle.stop()


def test_botocore_itself_does_not_retry(rig):
    assert rig.client.meta.config.retries["total_max_attempts"] == 1
