"""Managing live HITs through boto3 as on MTurk: UpdateExpirationForHIT, CreateAdditionalAssignmentsForHIT
(idempotent on its token, never across 10 assignments) and DeleteHIT (Reviewing or Reviewable, every
submitted assignment settled), with work accepted before expiry submitted after it."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from botocore.exceptions import ClientError

from crowdprop.mturk_local import ManualClock

from .conftest import hit_kwargs


def test_expire_extend_and_delete_as_mturk_does(endpoint):
    clock = ManualClock(1_800_000_000.0)
    h, c = endpoint(clock=clock, simulate=False)
    hid = c.create_hit(**hit_kwargs(MaxAssignments=2))["HIT"]["HITId"]
    aid = h.local.accept(hid, "APERSON1")  # accepted before the expiry, submitted after it

    with pytest.raises(ClientError) as e:  # on the market: not deletable
        c.delete_hit(HITId=hid)
    assert "InvalidHITState" in str(e.value.response) and "state 'Assignable'" in str(e.value)

    c.update_expiration_for_hit(HITId=hid, ExpireAt=datetime.fromtimestamp(clock(), tz=timezone.utc))
    hit = c.get_hit(HITId=hid)["HIT"]
    assert (hit["HITStatus"], hit["NumberOfAssignmentsPending"], hit["NumberOfAssignmentsAvailable"]) == (
        "Unassignable", 1, 0)
    clock.advance(60)
    h.local.external_submit([("assignmentId", aid), ("q0", "yes"), ("q1", "no")], worker_id="APERSON1")
    (a,) = c.list_assignments_for_hit(HITId=hid, AssignmentStatuses=["Submitted"])["Assignments"]
    assert a["AssignmentId"] == aid and c.get_hit(HITId=hid)["HIT"]["HITStatus"] == "Reviewable"
    with pytest.raises(ClientError) as e:  # reviewable, but submitted work not settled
        c.delete_hit(HITId=hid)
    assert "Reviewing, Reviewable" in str(e.value)

    # more time brings it back on the market; more assignments once per token; never across 10
    c.update_expiration_for_hit(HITId=hid, ExpireAt=datetime.fromtimestamp(clock() + 3600, tz=timezone.utc))
    assert c.get_hit(HITId=hid)["HIT"]["HITStatus"] == "Assignable"
    c.create_additional_assignments_for_hit(HITId=hid, NumberOfAdditionalAssignments=3, UniqueRequestToken="x-1")
    with pytest.raises(ClientError) as e:
        c.create_additional_assignments_for_hit(HITId=hid, NumberOfAdditionalAssignments=3, UniqueRequestToken="x-1")
    assert "DuplicateRequest" in str(e.value.response)
    hit = c.get_hit(HITId=hid)["HIT"]
    assert (hit["MaxAssignments"], hit["NumberOfAssignmentsAvailable"]) == (5, 4)
    with pytest.raises(ClientError) as e:
        c.create_additional_assignments_for_hit(HITId=hid, NumberOfAdditionalAssignments=5)
    assert "InvalidMaximumAssignmentsIncrease" in str(e.value.response)

    c.update_expiration_for_hit(HITId=hid, ExpireAt=datetime.fromtimestamp(clock(), tz=timezone.utc))
    c.approve_assignment(AssignmentId=aid)
    c.update_hit_review_status(HITId=hid)  # Reviewing may be deleted too
    assert c.get_hit(HITId=hid)["HIT"]["HITStatus"] == "Reviewing"
    c.delete_hit(HITId=hid)
    assert c.list_hits()["HITs"] == []
    with pytest.raises(ClientError) as e:
        c.get_hit(HITId=hid)
    assert "HITDoesNotExist" in str(e.value.response)
