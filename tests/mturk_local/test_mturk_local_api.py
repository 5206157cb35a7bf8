"""The local endpoint driven by the real boto3 client: MTurk semantics, errors, pagination, money."""
from __future__ import annotations

import json
import urllib.request
from datetime import datetime, timezone

import pytest
from botocore.exceptions import ClientError

from crowdprop.mturk_local import ManualClock

from .conftest import hit_kwargs, make_pool, question


def _err(excinfo) -> tuple[str, str, str]:
    r = excinfo.value.response
    return r["Error"]["Code"], r.get("TurkErrorCode", ""), r["Error"]["Message"]


def _type_kwargs(**kw) -> dict:
    out = dict(AutoApprovalDelayInSeconds=86400, AssignmentDurationInSeconds=600, Reward="0.20",
               Title="Is this mask correct?", Keywords="image, yes/no", Description="yes/no questions")
    out.update(kw)
    return out


def test_hit_type_is_idempotent(endpoint):
    _, c = endpoint()
    a = c.create_hit_type(**_type_kwargs())["HITTypeId"]
    b = c.create_hit_type(**_type_kwargs())["HITTypeId"]
    other = c.create_hit_type(**_type_kwargs(Reward="0.21"))["HITTypeId"]
    assert a == b
    assert other != a
    hit = c.create_hit_with_hit_type(HITTypeId=a, MaxAssignments=1, LifetimeInSeconds=600,
                                     Question=question([("q0", 100)]))["HIT"]
    assert hit["HITTypeId"] == a
    assert hit["Reward"] == "0.20" and hit["AutoApprovalDelayInSeconds"] == 86400
    with pytest.raises(ClientError) as e:
        c.create_hit_with_hit_type(HITTypeId="3NOSUCHTYPE", LifetimeInSeconds=600, Question=question([("q", 100)]))
    assert _err(e)[0] == "RequestError"


def test_token_reuse_returns_hit_already_exists_with_the_id(endpoint):
    clock = ManualClock()
    h, c = endpoint(clock=clock)
    first = c.create_hit(**hit_kwargs(UniqueRequestToken="camp-r0-b0"))["HIT"]["HITId"]
    with pytest.raises(ClientError) as e:
        c.create_hit(**hit_kwargs(UniqueRequestToken="camp-r0-b0"))
    code, turk, message = _err(e)
    assert (code, turk) == ("RequestError", "AWS.MechanicalTurk.HitAlreadyExists")
    assert f'"{first}"' in message
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert len(c.list_hits()["HITs"]) == 1
    assert h.local.ledger()["tokens_with_several_hits"] == []
    # MTurk forgets the token after 24 hours: a repeat then creates a duplicate, which the ledger reports
    clock.advance(24 * 3600 + 1)
    second = c.create_hit(**hit_kwargs(UniqueRequestToken="camp-r0-b0"))["HIT"]["HITId"]
    assert second != first
    assert h.local.ledger()["tokens_with_several_hits"] == ["camp-r0-b0"]


def test_list_hits_pagination(endpoint):
    _, c = endpoint(simulate=False)
    created = [c.create_hit(**hit_kwargs(RequesterAnnotation=f"batch-{i}"))["HIT"]["HITId"] for i in range(25)]
    assert len(set(created)) == 25
    listed = [h for page in c.get_paginator("list_hits").paginate() for h in page["HITs"]]
    assert [h["HITId"] for h in listed] == created
    assert [h["RequesterAnnotation"] for h in listed] == [f"batch-{i}" for i in range(25)]
    raw = c.list_hits()
    assert raw["NumResults"] == 10 and len(raw["HITs"]) == 10 and raw["NextToken"]
    second = c.list_hits(NextToken=raw["NextToken"])
    third = c.list_hits(NextToken=second["NextToken"])
    assert [h["HITId"] for h in raw["HITs"] + second["HITs"] + third["HITs"]] == created
    assert third["NumResults"] == 5 and "NextToken" not in third
    everything = c.list_hits(MaxResults=100)
    assert everything["NumResults"] == 25 and "NextToken" not in everything
    with pytest.raises(ClientError) as e:
        c.list_hits(MaxResults=101)
    assert _err(e)[0] == "RequestError"
    with pytest.raises(ClientError):
        c.list_hits(NextToken="bm90LWEtdG9rZW4=")


def test_list_hits_caps_a_page_at_100(endpoint):
    _, c = endpoint(simulate=False)
    for _ in range(105):
        c.create_hit(**hit_kwargs())
    page = c.list_hits(MaxResults=100)
    assert page["NumResults"] == 100 and page["NextToken"]
    assert c.list_hits(MaxResults=100, NextToken=page["NextToken"])["NumResults"] == 5


def test_assignment_pagination_and_status_filter(endpoint):
    _, c = endpoint(pool=make_pool(workers=30))
    hid = c.create_hit(**hit_kwargs(MaxAssignments=25))["HIT"]["HITId"]
    raw = c.list_assignments_for_hit(HITId=hid)
    assert raw["NumResults"] == 10 and raw["NextToken"]
    pages = c.get_paginator("list_assignments_for_hit").paginate(HITId=hid)
    asg = [a for p in pages for a in p["Assignments"]]
    assert len(asg) == 25 and len({a["WorkerId"] for a in asg}) == 25
    for a in asg[:3]:
        c.approve_assignment(AssignmentId=a["AssignmentId"])
    c.reject_assignment(AssignmentId=asg[3]["AssignmentId"], RequesterFeedback="wrong on known items")
    approved = c.list_assignments_for_hit(HITId=hid, AssignmentStatuses=["Approved"], MaxResults=100)
    assert {a["AssignmentId"] for a in approved["Assignments"]} == {a["AssignmentId"] for a in asg[:3]}
    both = c.list_assignments_for_hit(HITId=hid, AssignmentStatuses=["Approved", "Rejected"], MaxResults=100)
    assert both["NumResults"] == 4
    submitted = [a for p in c.get_paginator("list_assignments_for_hit").paginate(
        HITId=hid, AssignmentStatuses=["Submitted"]) for a in p["Assignments"]]
    assert len(submitted) == 21
    hit = c.get_hit(HITId=hid)["HIT"]
    assert hit["NumberOfAssignmentsCompleted"] == 4
    assert hit["NumberOfAssignmentsAvailable"] == 0 and hit["NumberOfAssignmentsPending"] == 0
    assert hit["HITStatus"] == "Reviewable"


def test_fee_ledger(endpoint):
    h, c = endpoint(pool=make_pool(workers=12))
    # 20 % of 0.20 = 0.04; 20 % of 0.02 is below the 0.01 minimum; 10 assignments: 40 % of 0.50 = 0.20
    plain = c.create_hit(**hit_kwargs(Reward="0.20"))["HIT"]["HITId"]
    tiny = c.create_hit(**hit_kwargs(Reward="0.02"))["HIT"]["HITId"]
    big = c.create_hit(**hit_kwargs(Reward="0.50", MaxAssignments=10))["HIT"]["HITId"]
    assert c.get_account_balance()["AvailableBalance"] == "10000.00"  # nothing is charged before approval
    for hid in (plain, tiny, big):
        for a in c.list_assignments_for_hit(HITId=hid, MaxResults=100)["Assignments"]:
            c.approve_assignment(AssignmentId=a["AssignmentId"])
    assert c.get_account_balance()["AvailableBalance"] == "9992.73"  # 0.24 + 0.03 + 10 * 0.70
    led = json.loads(urllib.request.urlopen(h.url + "/_ledger", timeout=10).read())
    assert led["rewards_usd"] == "5.22" and led["fees_usd"] == "2.05" and led["spent_usd"] == "7.27"
    fees = sorted(e["usd"] for e in led["entries"] if e["kind"] == "fee")
    assert fees == ["0.01", "0.04"] + ["0.20"] * 10
    assert led["approvals"] == 12 and led["approved_more_than_once"] == []


def test_approve_twice_is_refused_and_charged_once(endpoint):
    h, c = endpoint()
    hid = c.create_hit(**hit_kwargs())["HIT"]["HITId"]
    aid = c.list_assignments_for_hit(HITId=hid)["Assignments"][0]["AssignmentId"]
    c.approve_assignment(AssignmentId=aid, RequesterFeedback="thanks")
    with pytest.raises(ClientError) as e:
        c.approve_assignment(AssignmentId=aid)
    code, _, message = _err(e)
    assert code == "RequestError" and "status of: Submitted" in message
    assert c.get_account_balance()["AvailableBalance"] == "9999.76"
    assert h.local.approvals(aid) == 1
    led = h.local.ledger()
    assert led["approve_calls"] == 2 and led["approvals"] == 1
    got = c.get_assignment(AssignmentId=aid)
    assert got["Assignment"]["AssignmentStatus"] == "Approved"
    assert got["Assignment"]["RequesterFeedback"] == "thanks"
    assert got["HIT"]["HITId"] == hid


def test_rejected_work_is_not_charged_until_the_rejection_is_overridden(endpoint):
    h, c = endpoint()
    hid = c.create_hit(**hit_kwargs())["HIT"]["HITId"]
    aid = c.list_assignments_for_hit(HITId=hid)["Assignments"][0]["AssignmentId"]
    c.reject_assignment(AssignmentId=aid, RequesterFeedback="failed the known items")
    assert c.get_account_balance()["AvailableBalance"] == "10000.00"
    with pytest.raises(ClientError):
        c.reject_assignment(AssignmentId=aid, RequesterFeedback="again")
    with pytest.raises(ClientError):
        c.approve_assignment(AssignmentId=aid)  # a rejected assignment needs OverrideRejection
    c.approve_assignment(AssignmentId=aid, OverrideRejection=True)
    assert c.get_account_balance()["AvailableBalance"] == "9999.76"
    assert c.get_assignment(AssignmentId=aid)["Assignment"]["AssignmentStatus"] == "Approved"
    assert h.local.approvals(aid) == 1


def test_send_bonus_is_deduplicated_by_token(endpoint):
    h, c = endpoint()
    hid = c.create_hit(**hit_kwargs())["HIT"]["HITId"]
    a = c.list_assignments_for_hit(HITId=hid)["Assignments"][0]
    kw = dict(WorkerId=a["WorkerId"], BonusAmount="1.00", AssignmentId=a["AssignmentId"], Reason="accurate work",
              UniqueRequestToken="bonus-1")
    c.send_bonus(**kw)
    with pytest.raises(ClientError) as e:
        c.send_bonus(**kw)
    assert "already been processed" in _err(e)[2]
    c.send_bonus(**{**kw, "BonusAmount": "0.01", "UniqueRequestToken": "bonus-2"})
    assert c.get_account_balance()["AvailableBalance"] == "9998.78"  # 1.00 + 0.20, then 0.01 + 0.01 minimum
    paid = c.list_bonus_payments(AssignmentId=a["AssignmentId"])["BonusPayments"]
    assert sorted(p["BonusAmount"] for p in paid) == ["0.01", "1.00"]
    with pytest.raises(ClientError):
        c.send_bonus(**{**kw, "WorkerId": "ANOTHERWORKER", "UniqueRequestToken": "bonus-3"})
    assert h.local.ledger()["bonus_counts"] == {a["AssignmentId"]: 2}


def test_worker_block_and_blocked_qualification_exclude_workers(endpoint):
    pool = make_pool(workers=5)
    _, c = endpoint(pool=pool)
    blocked, tagged = pool.worker_ids[1], pool.worker_ids[3]
    c.create_worker_block(WorkerId=blocked, Reason="failed golds")
    assert [b["WorkerId"] for b in c.list_worker_blocks()["WorkerBlocks"]] == [blocked]
    qt = c.create_qualification_type(Name="campaign-blocked", Description="blocked in this campaign",
                                      QualificationTypeStatus="Active")["QualificationType"]["QualificationTypeId"]
    c.associate_qualification_with_worker(QualificationTypeId=qt, WorkerId=tagged, IntegerValue=1,
                                          SendNotification=False)
    listed = c.list_workers_with_qualification_type(QualificationTypeId=qt)["Qualifications"]
    assert [q["WorkerId"] for q in listed] == [tagged]
    req = [{"QualificationTypeId": qt, "Comparator": "DoesNotExist", "ActionsGuarded": "Accept"}]
    hid = c.create_hit(**hit_kwargs(MaxAssignments=5, QualificationRequirements=req))["HIT"]["HITId"]
    workers = {a["WorkerId"] for a in c.list_assignments_for_hit(HITId=hid)["Assignments"]}
    assert workers == set(pool.worker_ids) - {blocked, tagged}
    hit = c.get_hit(HITId=hid)["HIT"]
    assert hit["HITStatus"] == "Assignable" and hit["NumberOfAssignmentsAvailable"] == 2
    # lifting both lets them work on the next HIT
    c.delete_worker_block(WorkerId=blocked, Reason="appeal")
    c.disassociate_qualification_from_worker(QualificationTypeId=qt, WorkerId=tagged, Reason="appeal")
    hid2 = c.create_hit(**hit_kwargs(MaxAssignments=5, QualificationRequirements=req))["HIT"]["HITId"]
    assert {a["WorkerId"] for a in c.list_assignments_for_hit(HITId=hid2)["Assignments"]} == set(pool.worker_ids)
    with pytest.raises(ClientError):
        c.create_qualification_type(Name="campaign-blocked", Description="again", QualificationTypeStatus="Active")


def test_auto_approval_after_the_delay_on_the_server_clock(endpoint):
    clock = ManualClock(1_800_000_000.0)
    h, c = endpoint(clock=clock)
    hid = c.create_hit(**hit_kwargs(AutoApprovalDelayInSeconds=3600, MaxAssignments=2))["HIT"]["HITId"]
    asg = c.list_assignments_for_hit(HITId=hid)["Assignments"]
    assert [a["AssignmentStatus"] for a in asg] == ["Submitted", "Submitted"]
    for a in asg:
        assert a["AutoApprovalTime"].timestamp() == pytest.approx(a["SubmitTime"].timestamp() + 3600)
    clock.advance(3000)
    assert {a["AssignmentStatus"] for a in c.list_assignments_for_hit(HITId=hid)["Assignments"]} == {"Submitted"}
    assert c.get_account_balance()["AvailableBalance"] == "10000.00"
    clock.advance(3600)
    after = c.list_assignments_for_hit(HITId=hid)["Assignments"]
    assert [a["AssignmentStatus"] for a in after] == ["Approved", "Approved"]
    for a in after:
        assert a["ApprovalTime"] == a["AutoApprovalTime"]
    assert c.get_account_balance()["AvailableBalance"] == "9999.52"
    with pytest.raises(ClientError):
        c.approve_assignment(AssignmentId=after[0]["AssignmentId"])
    assert h.local.ledger()["approvals"] == 2


def test_expiry_leaves_previewed_work_undone_and_delete_hides_the_hit(endpoint):
    h, c = endpoint(work_delay=3600.0)
    hid = c.create_hit(**hit_kwargs(MaxAssignments=2))["HIT"]["HITId"]
    hit = c.get_hit(HITId=hid)["HIT"]
    assert (hit["HITStatus"], hit["NumberOfAssignmentsPending"]) == ("Unassignable", 2)
    with pytest.raises(ClientError):
        c.delete_hit(HITId=hid)  # not reviewable yet
    c.update_expiration_for_hit(HITId=hid, ExpireAt=datetime(2015, 1, 1, tzinfo=timezone.utc))
    hit = c.get_hit(HITId=hid)["HIT"]
    assert (hit["HITStatus"], hit["NumberOfAssignmentsPending"], hit["NumberOfAssignmentsAvailable"]) == \
        ("Reviewable", 0, 0)
    assert h.local.work() == 2  # due now, but the HIT expired before they accepted
    assert c.list_assignments_for_hit(HITId=hid)["NumResults"] == 0
    c.delete_hit(HITId=hid)
    assert c.list_hits()["NumResults"] == 0
    with pytest.raises(ClientError) as e:
        c.get_hit(HITId=hid)
    assert "does not exist" in _err(e)[2]


def test_unanswered_share_keeps_slots_open(endpoint):
    _, c = endpoint(unanswered_share=1.0)
    hid = c.create_hit(**hit_kwargs(MaxAssignments=3))["HIT"]["HITId"]
    hit = c.get_hit(HITId=hid)["HIT"]
    assert (hit["HITStatus"], hit["NumberOfAssignmentsAvailable"]) == ("Assignable", 3)


def test_work_delay_holds_answers_until_due(endpoint):
    h, c = endpoint(work_delay=3600.0)
    hid = c.create_hit(**hit_kwargs())["HIT"]["HITId"]
    assert c.list_assignments_for_hit(HITId=hid)["NumResults"] == 0
    assert h.local.work() == 1
    assert c.list_assignments_for_hit(HITId=hid)["NumResults"] == 1


@pytest.mark.parametrize("bad", [
    dict(Reward="0.001"),
    dict(Reward="$1"),
    dict(Reward="0.00"),
    dict(LifetimeInSeconds=10),
    dict(AssignmentDurationInSeconds=5),
    dict(AutoApprovalDelayInSeconds=31 * 86400),
    dict(MaxAssignments=0),
    dict(Question="<HTMLQuestion><HTMLContent>not closed"),
    dict(Question="<Nope/>"),
    dict(Question=question([("q", 100)]).replace("<FrameHeight>0</FrameHeight>", "")),
    dict(Question=question([(f"q{i}", 100) for i in range(600)])),  # over 64 KB
    dict(Title="x" * 129),
    dict(RequesterAnnotation="x" * 256),
])
def test_invalid_create_hit_is_a_request_error(endpoint, bad):
    h, c = endpoint()
    with pytest.raises(ClientError) as e:
        c.create_hit(**hit_kwargs(**bad))
    assert _err(e)[0] == "RequestError"
    assert h.local.ledger()["hits_created"] == 0


def test_unknown_and_unsupported_operations(endpoint):
    h, c = endpoint()
    req = urllib.request.Request(h.url + "/", data=b"{}", method="POST", headers={
        "X-Amz-Target": "MTurkRequesterServiceV20170117.MakeCoffee", "Content-Type": "application/x-amz-json-1.1"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400
    assert json.loads(e.value.read())["__type"] == "UnknownOperationException"
    with pytest.raises(ClientError) as e2:
        c.notify_workers(Subject="hi", MessageText="hello", WorkerIds=["AWORKER"])
    assert _err(e2)[0] == "RequestError"
