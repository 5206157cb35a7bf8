"""A frozen plan's JSON (plan.json) is what it was before encode and _hit_record took their short cuts."""
import dataclasses
import json

import numpy as np
import pandas as pd

from crowdprop.campaign import roundplan as rp
from crowdprop.config import CrowdSection
from crowdprop.hits.batching import make_hits
from crowdprop.policy.controller import RoundPlan


def _encode_before(obj):
    """roundplan.encode as it was (commit 40e32ea): every list item encoded one by one."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        cls = type(obj)
        return {"__dataclass__": f"{cls.__module__}:{cls.__qualname__}",
                "fields": {f.name: _encode_before(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {"__dict__": [[_encode_before(k), _encode_before(v)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_encode_before(x) for x in obj], "tuple": isinstance(obj, tuple)}
    return obj


def _hit_record_before(hit):
    rec = {f.name: getattr(hit, f.name) for f in dataclasses.fields(hit) if f.name != "questions"}
    rec["questions"] = [dataclasses.asdict(q) for q in hit.questions]
    return rec


def test_plan_and_hits_encode_to_the_same_json_as_before():
    rng = np.random.default_rng(0)
    asks = {int(k): np.sort(rng.choice(5000, int(rng.integers(0, 30)), replace=False)).astype(np.int64)
            for k in rng.choice(10_000, 40, replace=False)}
    asks[-1] = np.arange(7, dtype=np.int64)
    plan = RoundPlan(free_splits=[int(x) for x in rng.integers(0, 10_000, 500)], nodes=sorted(asks), asks=asks)
    odd = RoundPlan(free_splits=[np.int64(3), 4, True, None, 2.5, "x", (1, np.int32(2)), [np.float64(0.5)]],
                    nodes=[], asks={})
    for p in (plan, odd, RoundPlan()):
        assert json.dumps(rp.encode(p), sort_keys=True) == json.dumps(_encode_before(p), sort_keys=True)
        assert rp.decode(rp.encode(p)).free_splits == rp.decode(_encode_before(p)).free_splits
    pool = pd.DataFrame({"mask_row": np.arange(9000, 9040), "label": np.arange(40) % 2})
    _, hits = make_hits(asks, round_=3, campaign_id="c", campaign_name="n", cfg=CrowdSection(), gold_pool=pool,
                        gold_used={}, rng=np.random.default_rng(1))
    assert len(hits) > 3 and any(q.is_gold for h in hits for q in h.questions)
    for h in hits:
        got, want = rp._hit_record(h), _hit_record_before(h)
        assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)
        assert rp._hit_from(json.loads(json.dumps(got))) == h
