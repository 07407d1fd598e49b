"""Compare two runs' numbers, and print the gap in a form that stays the same from run to run.

>>> max_relative_difference({"loss": [1.0, 2.0]}, {"loss": [1.0, 2.0000002]})
1.0000000005838672e-07
>>> describe_difference(1e-07), describe_difference(0.0)
('at most 1e-07', 'bit-identical')
"""

from __future__ import annotations

import math

import numpy as np

from companion import _validation as check

__all__ = ["max_relative_difference", "describe_difference"]


def max_relative_difference(a, b) -> float:
    """The largest ``|a - b| / |a|`` over all entries; dicts (histories) are compared key by key.

    Entries where ``a`` is 0 use the absolute difference instead.
    """
    if isinstance(a, dict) or isinstance(b, dict):
        if not (isinstance(a, dict) and isinstance(b, dict)):
            raise TypeError("a and b must both be dicts (histories) or both be arrays")
        if set(a) != set(b):
            raise ValueError(f"a and b must have the same keys, got {sorted(a)} and {sorted(b)}")
        return max((max_relative_difference(a[k], b[k]) for k in a), default=0.0)
    a = check.data_array("a", a).astype(np.float64)
    b = check.data_array("b", b).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    scale = np.where(a == 0, 1.0, np.abs(a))
    return float(np.max(np.abs(a - b) / scale))


def describe_difference(difference: float) -> str:
    """A run-stable description of a small difference: its power-of-ten upper bound.

    The exact value of a rounding-level difference (say 1.7e-07 or 2.3e-07) changes with the
    machine and thread count; the bound "at most 1e-06" does not, so it is what a notebook
    prints. Differences of 1e-3 and more are real gaps and are shown to three digits.
    """
    difference = check.non_negative_number("difference", difference)
    if difference == 0:
        return "bit-identical"
    if difference >= 1e-3:  # a real gap, not rounding: its leading digits are stable
        return f"{difference:.3g}"
    return f"at most 1e-{-math.ceil(math.log10(difference)):02d}"
