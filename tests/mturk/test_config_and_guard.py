"""[mturk] section, qualifications, budget guard, retry policy."""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from crowdprop import config as cfg
from crowdprop.crowd import mturk as mt
from crowdprop.crowd.base import Fees
from crowdprop.crowd.spend import BudgetGuard
from crowdprop.errors import BudgetExhausted, InputError

from .conftest import make_hit


def test_section_defaults_and_overrides_through_the_config_loader():
    c = cfg.from_dict({"mturk": {"lifetime_s": 7200, "locale": ["US", "CA"], "s3_bucket": "my-bucket"}})
    s = c.mturk
    assert (s.lifetime_s, s.locale, s.s3_bucket) == (7200, ["US", "CA"], "my-bucket")
    assert (s.assignment_duration_s, s.auto_approval_delay_s, s.region) == (1800, 3 * 86400, "us-east-1")
    assert cfg.Config().mturk == cfg.load(None).mturk == mt.MTurkSection()


@pytest.mark.parametrize("table,key", [
    ({"reward": 0.1}, "reward"),
    ({"lifetime_s": "3d"}, "lifetime_s"),
    ({"locale": ["usa"]}, "locale"),
    ({"qualifications": "maybe"}, "qualifications"),
    ({"s3_bucket": "b1x", "image_base_url": "https://x"}, "image_base_url"),
    ({"s3_bucket": "my-bucket", "lifetime_s": 8 * 86400}, "lifetime_s"),
    ({"image_base_url": "ftp://x"}, "image_base_url"),
])
def test_bad_keys_are_refused_naming_file_table_and_key(table, key):
    with pytest.raises(InputError) as e:
        cfg.from_dict({"mturk": table}, "campaign.toml")
    assert str(e.value).startswith(f"campaign.toml: [mturk]: field '{key}': ")


def test_qualifications_production_only_by_default():
    s = mt.MTurkSection(locale=["US"])
    assert mt.qualification_requirements(s, "sandbox") == []
    assert mt.qualification_requirements(s, None) == []
    prod = mt.qualification_requirements(s, "production")
    rows = [(q["QualificationTypeId"], q["Comparator"], q.get("IntegerValues"), q.get("LocaleValues")) for q in prod]
    assert rows == [
        ("000000000000000000L0", "GreaterThanOrEqualTo", [95], None),
        ("00000000000000000040", "GreaterThanOrEqualTo", [100], None),
        ("00000000000000000071", "In", None, [{"Country": "US"}]),
    ]
    always = mt.qualification_requirements(mt.MTurkSection(qualifications="always"), "sandbox")
    assert always[0]["IntegerValues"] == [95]
    assert mt.qualification_requirements(mt.MTurkSection(qualifications="none"), "production") == []


def test_budget_guard_refuses_the_hit_that_would_pass_the_cap(coco128):
    masks, _, _ = coco128
    # 3 assignments x ($0.20 + 20 % fee $0.04) = $0.72 per HIT
    guard = BudgetGuard(cap_cents=150, committed_cents=0, fees=Fees())
    hit = make_hit(masks, assignments=3, reward=0.20)
    assert guard.admit_hit(hit) == 72  # integer cents
    assert guard.admit_hit(hit) == 72
    with pytest.raises(BudgetExhausted, match=r"could cost \$0.72, and \$1.44 of the \$1.50 cap"):
        guard.admit_hit(hit)
    guard.update(70)  # the loop's ledger: what was really spent or committed
    assert guard.admit_hit(hit) == 72
    with pytest.raises(BudgetExhausted):
        guard.admit_bonus(10)  # 70 + 72 + 10 + 2 fee = 154 > 150
    assert guard.admit_bonus(7) == 8  # 7 + 1 fee: exactly at the cap is allowed
    with pytest.raises(BudgetExhausted):
        guard.admit_bonus(1)


def test_fees_are_integer_cents_rounded_half_up():
    f = Fees()
    # 20 %: 0.07 -> 1.4 c -> 1; 0.13 -> 2.6 c -> 3; 0.25 -> 5; at least 1 cent; 40 % from 10 assignments
    assert [f.assignment_fee_cents(c, 1) for c in (1, 7, 13, 25, 250)] == [1, 1, 3, 5, 50]
    assert f.assignment_fee_cents(25, 10) == 10 and f.assignment_fee_cents(25, 9) == 5
    assert f.hit_cost_cents(20, 3) == 72 and f.bonus_fee_cents(7) == 1
    assert f.assignment_fee(0.13, 1) == 0.03  # the dollar view goes through the cents function


def test_auto_approval_delay_too_short_to_review_is_refused(tmp_path):
    from crowdprop import config as config_mod
    from crowdprop.errors import InputError

    toml = tmp_path / "c.toml"
    toml.write_text("[mturk]\nauto_approval_delay_s = 0\n")
    with pytest.raises(InputError) as e:
        config_mod.load(toml)
    text = str(e.value)
    assert len(text.splitlines()) == 1 and str(toml) in text and "auto_approval_delay_s" in text and "3600" in text
    toml.write_text(f"[mturk]\nauto_approval_delay_s = {mt.MIN_AUTO_APPROVAL_S - 1}\n")
    with pytest.raises(InputError):
        config_mod.load(toml)
    toml.write_text(f"[mturk]\nauto_approval_delay_s = {mt.MIN_AUTO_APPROVAL_S}\n")
    assert config_mod.load(toml).mturk.auto_approval_delay_s == 3600


def _err(code: str, status: int, turk: str = "") -> ClientError:
    resp = {"Error": {"Code": code, "Message": f"{code} happened"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    if turk:
        resp["TurkErrorCode"] = turk
    return ClientError(resp, "GetAccountBalance")


@pytest.mark.parametrize("exc,retry", [
    (_err("ThrottlingException", 400), True),
    (_err("ServiceFault", 500), True),
    (_err("ServiceUnavailable", 503), True),
    (_err("RequestError", 400, "AWS.MechanicalTurk.HitAlreadyExists"), False),
    (_err("RequestError", 400), False),
    (ValueError("x"), False),
])
def test_retry_policy(exc, retry):
    assert mt.is_retryable(exc) is retry
