"""Compare two runs' numbers, and print the gap so that it reads the same on every machine.

How far float rounding moves a number depends on the CPU's kernels, the thread count and the
library versions, so a rounding-level difference is never printed as its own size: it is shown
against a named tolerance; a real gap (1e-3 or more) is printed to two significant digits,
far above rounding; and a difference that is zero by construction is "bit-identical".

>>> max_relative_difference({"loss": [1.0, 2.0]}, {"loss": [1.0, 2.0000002]})
1.0000000005838672e-07
>>> describe_difference(1e-07), describe_difference(0.0288), describe_difference(0.0)
('below 1e-05 (float32 rounding)', '0.029', 'below 1e-05 (float32 rounding)')
>>> describe_difference(0.0, exact=True)  # the same computation twice, or a file read back
'bit-identical'
>>> describe_difference(3e-16, tolerance=1e-12, reason="float64 rounding")
'below 1e-12 (float64 rounding)'
"""

from __future__ import annotations

import numpy as np

from companion import _validation as check

__all__ = ["max_relative_difference", "describe_difference", "FLOAT32_ROUNDING", "REAL_GAP"]

# A float32 keeps about seven significant digits; two computations of the same float32 number
# that sum in another order (other kernels, threads or versions) agree to about 1e-7 relative,
# and to 1e-6 after a few hundred steps of training. 1e-5 bounds that with room to spare.
FLOAT32_ROUNDING = 1e-5
# From here on a difference is a real gap, not rounding, and its first two digits are stable.
REAL_GAP = 1e-3


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


def describe_difference(difference: float, *, tolerance: float = FLOAT32_ROUNDING,
                        reason: str = "float32 rounding", exact: bool = False) -> str:
    """A description of ``difference`` that is the same on every machine.

    - below ``tolerance``: "below 1e-05 (float32 rounding)", the bound and what it bounds;
    - ``0`` with ``exact=True``: "bit-identical";
    - from ``tolerance`` to :data:`REAL_GAP`: "below 1e-03", a bound again;
    - from :data:`REAL_GAP` on: the gap itself to two significant digits ("0.029").

    ``tolerance`` (one significant digit, at most 1e-3, e.g. 1e-12 for float64 sums) and
    ``reason`` (what rounding it bounds) name the bound a caller expects the difference to be
    under. Pass ``exact=True`` only where the two numbers are equal by construction (the same
    operations on the same inputs, a file read back): elsewhere a 0 is rounding that happened
    to cancel on this machine, and another machine prints the bound, so the bound is printed.
    """
    difference = check.non_negative_number("difference", difference)
    exact = check.boolean("exact", exact)
    tolerance = check.positive_number("tolerance", tolerance)
    if tolerance > REAL_GAP or float(f"{tolerance:.0e}") != tolerance:
        raise ValueError(f"tolerance must have one significant digit and be at most {REAL_GAP:.0e} "
                         f"(such as 1e-05 or 5e-04), got {tolerance!r}")
    if not isinstance(reason, str) or not reason.strip():
        raise TypeError(f"reason must be a non-empty str such as 'float32 rounding', got "
                        f"{type(reason).__name__}: {reason!r}")
    if difference == 0 and exact:
        return "bit-identical"
    if difference < tolerance:
        return f"below {tolerance:.0e} ({reason})"
    if difference < REAL_GAP:
        return f"below {REAL_GAP:.0e}"
    return f"{difference:.2g}"
