"""The running committed total of publishing (CrowdWork._publish) is the books' figure.

Before each CreateHIT the loop checks that what is paid plus the most the live HITs can still
cost plus the new HIT fits under the cap. It used to sum every live HIT for that (quadratic in
a round's HITs); now it keeps a running total. ``CrowdWork.verify_committed`` makes it compare
that total with the full recomputation from the books (paid read again from the journal)
before every CreateHIT and after the last: equal there means every HIT is admitted or held
back exactly as the full sum decided, so the same HITs are published and the same cents spent.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import GT_JSON, REPO, RESULTS_JSON
from crowdprop.campaign.crowdwork import CrowdWork
from crowdprop.campaign.init import init_run
from crowdprop.campaign.loop import Campaign
from crowdprop.campaign.store import RunDir
from crowdprop.crowd.base import Fees
from crowdprop.crowd.factory import simulated_backend
from crowdprop.money import cap_cents


def _base(path, budget: float, bonus: int) -> RunDir:
    cfg = path.parent / f"{path.name}.toml"
    cfg.write_text("[policy]\nk_pa = 0.0\n"
                   f"[campaign]\nbudget_usd = {budget}\n"
                   "[crowd]\nquestions_per_hit = 12\ngolds_per_hit = 2\nassignments_per_hit = 3\n"
                   f"reward_usd = 0.03\nbonus_cents_per_gold_correct = {bonus}\n"
                   "[simulation]\nspammer_share = 0.3\n")
    return init_run(path, predictions=RESULTS_JSON, gt=GT_JSON, crowd={"kind": "simulated"}, seed=3, config_path=cfg)


def _run(base: RunDir, dest):
    rd = RunDir(shutil.copytree(base.path, dest))
    res = Campaign(rd, simulated_backend(rd), progress=False).run()
    return RunDir(rd.path), res


@pytest.mark.parametrize("bonus", [0, 2])
def test_running_total_is_the_books_figure_at_every_create_hit(tmp_path, monkeypatch, bonus):
    """A cap that binds after a few rounds, three assignments per HIT, spammers (rejected work
    frees its slot unpaid), with and without gold bonuses (each open slot may earn its whole
    bonus): checked before every CreateHIT."""
    budget = 3.0 if not bonus else 6.0
    base = _base(tmp_path / "base", budget, bonus)
    monkeypatch.setattr(CrowdWork, "verify_committed", True)
    monkeypatch.setattr(CrowdWork, "committed_checks", 0)
    rd, res = _run(base, tmp_path / "checked")
    hits = rd.read_rounds("hits")
    spend = rd.read_rounds("spend")
    asg = rd.read_rounds("assignments")
    # one check before each CreateHIT and one after each round's last
    assert CrowdWork.committed_checks >= len(hits) + len(rd.rounds()) and len(hits) > 20 and len(rd.rounds()) > 1
    assert (~asg["approved"]).any()
    assert res.stop_reason.startswith("budget reached")
    spent = int(spend["cents"].sum())
    assert spent <= cap_cents(budget)
    # the cap stopped it: one more full HIT (every slot approved, whole bonus) would not fit
    most = Fees().hit_cost_cents(3, 3) + (3 * (2 * bonus + Fees().bonus_fee_cents(2 * bonus)) if bonus else 0)
    assert cap_cents(budget) - spent < most
    if bonus:
        assert (spend["kind"] == "bonus").any()

    # the check changes nothing: the same run unchecked publishes and spends the same, to the cent
    monkeypatch.setattr(CrowdWork, "verify_committed", False)
    monkeypatch.setattr(CrowdWork, "committed_checks", 0)
    rd2, res2 = _run(base, tmp_path / "unchecked")
    assert CrowdWork.committed_checks == 0
    assert res2.stop_reason == res.stop_reason
    h2, s2 = rd2.read_rounds("hits"), rd2.read_rounds("spend")
    assert h2["token"].tolist() == hits["token"].tolist()
    assert s2["cents"].to_numpy(np.int64).tolist() == spend["cents"].to_numpy(np.int64).tolist()
    assert s2["kind"].tolist() == spend["kind"].tolist()


def test_running_total_checked_through_resumes_late_work_expiry_and_rejections():
    """The money and budget tests (resumed rounds with a lowered cap or reward, a HIT created but
    not recorded, late submissions, expiry, MTurk's own approvals, rejections overtaken by them,
    random caps through the local MTurk endpoint over boto3) run with the check on before every
    CreateHIT: all pass, and the check ran."""
    script = (
        "import sys, pytest\n"
        "from crowdprop.campaign.crowdwork import CrowdWork\n"
        "CrowdWork.verify_committed = True\n"
        "rc = pytest.main(['-x', '-q', '-p', 'no:cacheprovider', 'tests/reliability/test_money.py',"
        " 'tests/reliability/test_budget.py'])\n"
        "print('CHECKS', CrowdWork.committed_checks)\n"
        "sys.exit(int(rc))\n")
    p = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    checks = int(p.stdout.rsplit("CHECKS", 1)[1].split()[0])
    assert checks > 50
