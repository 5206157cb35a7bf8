"""Money in integer cents.

Every amount crowdprop records or compares is an integer number of cents: the
configured dollars are converted once (:func:`cents`, :func:`cap_cents`), MTurk's
fee is computed on cents (:class:`crowdprop.crowd.base.Fees`), and dollars appear
only as a view (:func:`usd`, :func:`fmt`) in reports and messages.
"""
from __future__ import annotations

from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal


def cents(usd: float | str | int) -> int:
    """Dollars to the nearest cent (half up), read exactly from the decimal text (0.145 -> 15)."""
    return int((Decimal(str(usd)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def cap_cents(usd: float | str | int) -> int:
    """A dollar cap in whole cents, rounded down: spending up to it never passes the cap (0.509 -> 50)."""
    return int((Decimal(str(usd)) * 100).quantize(Decimal(1), rounding=ROUND_FLOOR))


def usd(amount_cents: int) -> float:
    """The dollar view of an amount in cents (for reports and JSON)."""
    return int(amount_cents) / 100


def fmt(amount_cents: int) -> str:
    """``$1.23`` (``-$0.05`` for a negative amount), exact."""
    c = int(amount_cents)
    return f"{'-' if c < 0 else ''}${abs(c) // 100}.{abs(c) % 100:02d}"
