"""Qualification types with a Test and an AnswerKey on the local endpoint, through a real boto3 client.

Expected grades are computed here from the documented contract (a simulated worker
answers test question ``mask-<id>`` with ``pool.answer(w, "qualification:mask-<id>",
TRUTH[id])``; one point per answer matching the key; value ``floor(100 * points / n)``),
not read back from the endpoint.
"""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from hypothesis import given, settings, strategies as st

from crowdprop.config import SimulationSection
from crowdprop.crowd.mturk_xml import answer_key_xml, qualification_question_id, question_form_xml
from crowdprop.mturk_local.qualification import QualificationXMLError, parse_answer_key, parse_test
from crowdprop.replay.workers import WorkerPool

from .conftest import TRUTH, hit_kwargs, make_pool

TEST_MASKS = [100, 101, 102, 103, 104, 105, 106, 107, 108, 109]


def form(mask_ids, url="http://127.0.0.1/images/x.jpg"):
    return question_form_xml([(qualification_question_id(m), "cat", url) for m in mask_ids], title="Test",
                              instructions="Answer yes or no.")


def key(mask_ids, labels=None):
    labels = labels if labels is not None else [TRUTH[m] for m in mask_ids]
    return answer_key_xml([(qualification_question_id(m), lab) for m, lab in zip(mask_ids, labels)])


def create_test_type(c, mask_ids=TEST_MASKS, labels=None, name="crowdprop c1 qualification test", **kw):
    args = dict(Name=name, Description="a test", QualificationTypeStatus="Active", Test=form(mask_ids),
                AnswerKey=key(mask_ids, labels), TestDurationInSeconds=600, AutoGranted=False)
    args.update(kw)
    return c.create_qualification_type(**args)["QualificationType"]["QualificationTypeId"]


def expected_values(pool: WorkerPool, mask_ids, labels=None) -> dict[str, int]:
    labels = labels if labels is not None else [TRUTH[m] for m in mask_ids]
    out = {}
    for w, wid in enumerate(pool.worker_ids):
        right = sum(pool.answer(w, f"qualification:mask-{m}", TRUTH[m]) == lab for m, lab in zip(mask_ids, labels))
        out[wid] = (100 * right) // len(mask_ids)
    return out


def workers_on(c, hit_id) -> set[str]:
    return {a["WorkerId"] for a in c.list_assignments_for_hit(HITId=hit_id, MaxResults=100)["Assignments"]}


def requiring(qt, value):
    return [{"QualificationTypeId": qt, "Comparator": "GreaterThanOrEqualTo", "IntegerValues": [value],
             "ActionsGuarded": "Accept"}]


def test_a_test_type_is_stored_and_returned_as_given(endpoint):
    _, c = endpoint()
    qt = create_test_type(c)
    got = c.get_qualification_type(QualificationTypeId=qt)["QualificationType"]
    assert got["Test"] == form(TEST_MASKS) and got["AnswerKey"] == key(TEST_MASKS)
    assert got["TestDurationInSeconds"] == 600 and got["IsRequestable"] is True and got["AutoGranted"] is False
    assert "RetryDelayInSeconds" not in got  # none given: one try


@pytest.mark.parametrize("change, message", [
    ({"Test": "<QuestionForm><Question>"}, "not well-formed"),
    ({"Test": "<HTMLQuestion/>"}, "expected <QuestionForm>"),
    ({"AnswerKey": key([100, 999], [True, False])}, "not a question of the Test"),
    ({"AnswerKey": "<AnswerKey><Question>"}, "not well-formed"),
    ({"TestDurationInSeconds": None}, "TestDurationInSeconds is required"),
    ({"AutoGranted": True}, "AutoGranted cannot be true"),
    ({"Test": None}, "An AnswerKey needs a Test"),
    ({"Test": form(TEST_MASKS * 1, url="http://127.0.0.1/" + "x" * 7000)}, "the limit is 65535"),
])
def test_malformed_tests_are_refused_and_nothing_is_created(endpoint, change, message):
    _, c = endpoint()
    args = dict(Name="t", Description="a test", QualificationTypeStatus="Active", Test=form(TEST_MASKS),
                AnswerKey=key(TEST_MASKS), TestDurationInSeconds=600)
    args.update(change)
    args = {k: v for k, v in args.items() if v is not None}
    with pytest.raises(ClientError) as e:
        c.create_qualification_type(**args)
    assert message in e.value.response["Error"]["Message"]
    assert c.list_qualification_types(MustBeRequestable=False)["QualificationTypes"] == []


def test_every_simulated_worker_is_graded_once_and_only_passing_workers_work(endpoint):
    pool = make_pool(workers=12)
    h, c = endpoint(pool=pool)
    qt = create_test_type(c)
    want = expected_values(pool, TEST_MASKS)
    assert len(set(want.values())) > 1  # spammers among the pool: not everyone gets the same grade
    hid = c.create_hit(**hit_kwargs(MaxAssignments=12, QualificationRequirements=requiring(qt, 70)))["HIT"]["HITId"]
    graded = c.list_workers_with_qualification_type(QualificationTypeId=qt, MaxResults=100)["Qualifications"]
    assert {q["WorkerId"]: q["IntegerValue"] for q in graded} == want
    passing = {w for w, v in want.items() if v >= 70}
    assert 0 < len(passing) < 12
    assert workers_on(c, hid) == passing
    for w, v in want.items():
        assert c.get_qualification_score(QualificationTypeId=qt, WorkerId=w)["Qualification"]["IntegerValue"] == v
    # no retake: a second HIT asks nobody again, and the grades stay
    first = {q["WorkerId"]: q["GrantTime"] for q in graded}
    hid2 = c.create_hit(**hit_kwargs(MaxAssignments=12, QualificationRequirements=requiring(qt, 70)))["HIT"]["HITId"]
    assert workers_on(c, hid2) == passing
    again = c.list_workers_with_qualification_type(QualificationTypeId=qt, MaxResults=100)["Qualifications"]
    assert {q["WorkerId"]: q["GrantTime"] for q in again} == first
    assert h.local.ledger(entries=False)["qualification_tests_taken"] == 12


def test_the_answer_key_decides_not_the_truth(endpoint):
    """Perfect workers answer the truth; a key wrong on 3 of 10 questions grades them all 70."""
    pool = WorkerPool.build(SimulationSection(workers=6, accuracy=1.0, accuracy_spread=0.0), 11)
    _, c = endpoint(pool=pool)
    labels = [TRUTH[m] for m in TEST_MASKS]
    for i in (0, 4, 7):
        labels[i] = not labels[i]
    qt = create_test_type(c, labels=labels)
    hid = c.create_hit(**hit_kwargs(MaxAssignments=6, QualificationRequirements=requiring(qt, 71)))["HIT"]["HITId"]
    graded = c.list_workers_with_qualification_type(QualificationTypeId=qt)["Qualifications"]
    assert sorted(q["IntegerValue"] for q in graded) == [70] * 6
    assert workers_on(c, hid) == set()


def test_blocked_workers_take_no_test_and_soft_blocked_ones_no_hit(endpoint):
    pool = make_pool(workers=8)
    _, c = endpoint(pool=pool)
    hard, soft = pool.worker_ids[0], pool.worker_ids[1]
    c.create_worker_block(WorkerId=hard, Reason="failed golds")
    qt = create_test_type(c)
    blocked = c.create_qualification_type(Name="crowdprop c1 blocked", Description="blocked",
                                          QualificationTypeStatus="Active")["QualificationType"]["QualificationTypeId"]
    c.associate_qualification_with_worker(QualificationTypeId=blocked, WorkerId=soft, IntegerValue=1,
                                          SendNotification=False)
    reqs = requiring(qt, 0) + [{"QualificationTypeId": blocked, "Comparator": "DoesNotExist",
                                "ActionsGuarded": "DiscoverPreviewAndAccept"}]
    hid = c.create_hit(**hit_kwargs(MaxAssignments=8, QualificationRequirements=reqs))["HIT"]["HITId"]
    graded = {q["WorkerId"] for q in c.list_workers_with_qualification_type(QualificationTypeId=qt)["Qualifications"]}
    assert graded == set(pool.worker_ids) - {hard}
    assert workers_on(c, hid) == set(pool.worker_ids) - {hard, soft}


def test_list_qualification_types_finds_by_name_and_filters_requestable(endpoint):
    _, c = endpoint()
    test_id = create_test_type(c, name="crowdprop abc qualification test")
    blocked = c.create_qualification_type(Name="crowdprop abc blocked", Description="blocked",
                                          QualificationTypeStatus="Active")["QualificationType"]["QualificationTypeId"]
    c.create_qualification_type(Name="other", Description="unrelated", QualificationTypeStatus="Active")

    def names(**kw):
        pages = c.get_paginator("list_qualification_types").paginate(PaginationConfig={"PageSize": 1}, **kw)
        return [q["QualificationTypeId"] for p in pages for q in p["QualificationTypes"]]

    assert names(Query="crowdprop abc", MustBeRequestable=False, MustBeOwnedByCaller=True) == [test_id, blocked]
    assert names(Query="CROWDPROP ABC", MustBeRequestable=True) == [test_id]
    assert len(names(MustBeRequestable=False)) == 3


def test_mappings_other_than_percentage():
    qs = parse_test(form([100, 101, 102]))
    assert [q.mask_id for q in qs] == [100, 101, 102] and qs[0].selections == ("yes", "no")
    base = key([100, 101, 102]).split("<QualificationValueMapping>")[0]
    scale = parse_answer_key(base + "<QualificationValueMapping><ScaleMapping><SummedScoreMultiplier>2.5"
                                    "</SummedScoreMultiplier></ScaleMapping></QualificationValueMapping>"
                                    "</AnswerKey>", qs)
    ranges = parse_answer_key(base + "<QualificationValueMapping><RangeMapping><SummedScoreRange><InclusiveLowerBound>2"
                                     "</InclusiveLowerBound><InclusiveUpperBound>3</InclusiveUpperBound>"
                                     "<QualificationValue>1</QualificationValue></SummedScoreRange>"
                                     "<OutOfRangeQualificationValue>0</OutOfRangeQualificationValue></RangeMapping>"
                                     "</QualificationValueMapping></AnswerKey>", qs)
    right = {f"mask-{m}": frozenset(["yes" if TRUTH[m] else "no"]) for m in (100, 101, 102)}
    wrong_one = dict(right, **{"mask-101": frozenset(["yes" if not TRUTH[101] else "no"])})
    assert scale.value(scale.score(right)) == 7 and scale.value(scale.score(wrong_one)) == 5
    assert ranges.value(ranges.score(wrong_one)) == 1 and ranges.value(ranges.score({})) == 0
    with pytest.raises(QualificationXMLError):
        parse_answer_key(base + "<QualificationValueMapping/></AnswerKey>", qs)


@settings(max_examples=60, deadline=None)
@given(labels=st.lists(st.booleans(), min_size=1, max_size=30), data=st.data())
def test_percentage_grade_is_the_floor_of_the_share_right(labels, data):
    ids = list(range(100, 100 + len(labels)))
    qs = parse_test(form(ids))
    k = parse_answer_key(key(ids, labels), qs)
    picks = data.draw(st.lists(st.sampled_from(["yes", "no", None]), min_size=len(ids), max_size=len(ids)))
    selected = {f"mask-{m}": frozenset([p]) for m, p in zip(ids, picks) if p is not None}
    right = sum(p == ("yes" if lab else "no") for p, lab in zip(picks, labels))
    assert k.value(k.score(selected)) == (100 * right) // len(ids)
