"""Feature drift between runs: a binned profile of each feature and the population stability index (PSI).

Why it is this small: PSI is a dozen lines of numpy once the bins are fixed, and the bins are the point.
Each run stores its own profile (quantile cut points and counts, see docs/monitoring.md); the next run
bins its values on the *reference* run's cut points and compares the two shares bin by bin. So drift is
measured on bins the reference chose, the stored profile is all the reference needs (its Parquet can be
pruned), and nothing heavier (evidently, with its own report stack) is needed for one statistic.
"""

from __future__ import annotations

import numpy as np

# A bin that holds nothing on one side gets this share instead of zero, so the log stays finite; the
# usual floor in PSI practice, small enough that a bin emptied or newly filled still counts heavily.
SHARE_FLOOR = 1e-4


def bin_counts(values: np.ndarray, cuts: list[float]) -> list[int]:
    """Counts per bin: value bins split at `cuts` (a value equal to a cut goes above it), then nulls.

    The outer bins are open (below the first cut, from the last cut up), so a value outside the range the
    cut points came from still lands in a bin; nulls get their own last bin, so a change in the null rate
    is drift too.
    """
    x = np.asarray(values, dtype=float)
    missing = np.isnan(x)
    index = np.searchsorted(np.asarray(cuts, dtype=float), x[~missing], side="right")
    counts = np.bincount(index, minlength=len(cuts) + 1)
    return [*(int(c) for c in counts), int(missing.sum())]


def profile(values: np.ndarray, bins: int) -> dict:
    """A feature's profile: interior quantile cut points (ties merged), the counts per bin, and a summary.

    `bins` quantile bins at most; a feature with few distinct values gets fewer (duplicate cut points
    are merged), and a constant one a single value bin.
    """
    x = np.asarray(values, dtype=float)
    present = x[~np.isnan(x)]
    cuts = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])) if present.size else []
    cut_list = [float(f"{c:.10g}") for c in cuts]  # 10 digits: readable, and the counts use them
    return {
        "cuts": cut_list,
        "counts": bin_counts(x, cut_list),
        "rows": int(x.size),
        "null_share": round(float(np.isnan(x).mean()), 6) if x.size else 0.0,
        "mean": round(float(present.mean()), 6) if present.size else None,
        "median": round(float(np.median(present)), 6) if present.size else None,
    }


def psi(expected: list[int], actual: list[int]) -> float:
    """Population stability index of two count vectors over the same bins: sum of (a - e) * ln(a / e)
    over the bins' shares, each share floored at SHARE_FLOOR. 0 when the shares are equal."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.shape != a.shape:
        raise ValueError(f"PSI needs the same bins on both sides ({e.size} and {a.size} given)")
    if e.sum() == 0 or a.sum() == 0:
        raise ValueError("PSI needs at least one row on each side")
    p = np.clip(e / e.sum(), SHARE_FLOOR, None)
    q = np.clip(a / a.sum(), SHARE_FLOOR, None)
    return float(np.sum((q - p) * np.log(q / p)))


def compare(reference: dict[str, dict], values: dict[str, np.ndarray], alert_psi: float) -> dict[str, dict]:
    """PSI of each feature's values against the reference run's profile, on the reference's bins.

    A feature the reference lacks (new in this run), or one without rows on a side, has no PSI and says
    why; a feature only the reference has is reported as gone.
    """
    out: dict[str, dict] = {}
    for name, x in values.items():
        ref = reference.get(name)
        if ref is None:
            out[name] = {"psi": None, "alert": False, "note": "not in the reference run"}
            continue
        actual = bin_counts(x, ref["cuts"])
        if sum(actual) == 0 or sum(ref["counts"]) == 0:
            out[name] = {"psi": None, "alert": False, "note": "no rows on one side"}
            continue
        value = psi(ref["counts"], actual)
        out[name] = {"psi": round(value, 6), "alert": value >= alert_psi}
    for name in sorted(set(reference) - set(values)):
        out[name] = {"psi": None, "alert": True, "note": "in the reference run, gone from this one"}
    return out
