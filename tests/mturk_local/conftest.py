"""Fixtures: a local MTurk endpoint on a free loopback port and a real boto3 client for it."""
from __future__ import annotations

import boto3
import pytest
from botocore.config import Config

from crowdprop.config import SimulationSection
from crowdprop.mturk_local import LocalMTurk, html_question, question_page, serve
from crowdprop.replay.workers import WorkerPool

TRUTH = {mid: (mid * 7) % 3 != 0 for mid in range(100, 160)}
"""mask_id -> correct; 2 of 3 masks are correct."""


def make_pool(workers: int = 12, seed: int = 5) -> WorkerPool:
    return WorkerPool.build(SimulationSection(workers=workers, accuracy=0.8, spammer_share=0.25), seed)


def client_for(url: str, **retries) -> "boto3.client":
    cfg = Config(retries=retries or {"mode": "standard", "total_max_attempts": 1}, connect_timeout=5, read_timeout=30)
    return boto3.client("mturk", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing", config=cfg)


def question(qs: list[tuple[str, int]]) -> str:
    return html_question(question_page(qs))


def hit_kwargs(qs: list[tuple[str, int]] | None = None, **kw) -> dict:
    out = dict(MaxAssignments=1, LifetimeInSeconds=3600, AssignmentDurationInSeconds=600, Reward="0.20",
               Title="Is this mask correct?", Description="yes/no questions about masks",
               Question=question(qs or [("q0", 100), ("q1", 101)]))
    out.update(kw)
    return out


@pytest.fixture
def endpoint():
    """``make(**LocalMTurk options) -> (handle, client)``; every server stops at teardown."""
    handles = []

    def make(truth=TRUTH, pool=None, **kw):
        local = LocalMTurk(truth, pool if pool is not None else make_pool(), **kw)
        h = serve(local)
        handles.append(h)
        return h, client_for(h.url)

    yield make
    for h in handles:
        h.stop()
