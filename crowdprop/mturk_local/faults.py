"""Seeded faults for the local MTurk endpoint: throttling, server errors, latency.

Faults apply to API calls only (never to the worker page, images or the ledger).
Each API request draws once from a seeded generator:

- with probability ``throttle_rate`` the request is refused with HTTP 400 and
  ``__type: ThrottlingException`` (an error code botocore's retry handlers treat
  as throttling, in both the ``legacy`` and ``standard`` retry modes);
- else with probability ``error_rate`` it fails with HTTP 500 or 503 and
  ``__type: ServiceFault``; a share ``lost_response_share`` of those failures
  happen *after* the operation took effect (the response was lost), which is the
  case ``UniqueRequestToken`` exists for;
- every request first sleeps ``latency_s`` seconds.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FaultConfig:
    throttle_rate: float = 0.0
    error_rate: float = 0.0
    latency_s: float = 0.0
    seed: int = 0
    lost_response_share: float = 0.0

    def __post_init__(self) -> None:
        for name in ("throttle_rate", "error_rate", "lost_response_share"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"FaultConfig.{name} must be in [0, 1], got {v}")
        if self.throttle_rate + self.error_rate > 1.0:
            raise ValueError("FaultConfig.throttle_rate + error_rate must be <= 1")
        if self.latency_s < 0:
            raise ValueError("FaultConfig.latency_s must be >= 0")


@dataclass(frozen=True)
class Fault:
    kind: str
    """``throttle`` or ``error``."""
    status: int = 400
    after: bool = False
    """The operation is applied before the error is returned (a lost response)."""


class FaultInjector:
    """Draws one :class:`Fault` (or ``None``) per API request from a seeded generator."""

    def __init__(self, config: FaultConfig):
        self.config = config
        self._rng = np.random.default_rng(config.seed)
        self._lock = threading.Lock()
        self.counts = {"requests": 0, "throttle": 0, "error": 0, "lost_response": 0}

    def draw(self) -> Fault | None:
        c = self.config
        with self._lock:
            self.counts["requests"] += 1
            u, v, w = self._rng.random(3)
            if u < c.throttle_rate:
                self.counts["throttle"] += 1
                return Fault("throttle", 400)
            if u < c.throttle_rate + c.error_rate:
                after = bool(w < c.lost_response_share)
                self.counts["error"] += 1
                self.counts["lost_response"] += int(after)
                return Fault("error", 500 if v < 0.5 else 503, after)
            return None
