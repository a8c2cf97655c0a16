"""Paired comparison of two arms scored on the same test cases: patient-level bootstrap and Wilcoxon.

Two augmentation arms (or models, or checkpoints) scored on the same test images give one value
of a metric per image and arm. Their difference is judged **paired**, image by image, and with
the **patient** as the independent unit (slices of one patient are not independent):

1. per case (a test slice or volume, matched between the arms): ``d = b - a``;
2. per patient: the mean of ``d`` over the patient's cases (every seed's cases, when the cases
   carry a seed);
3. over patients: the mean difference, a percentile bootstrap interval (patients resampled with
   replacement, a seeded :class:`numpy.random.Generator`: reproducible) and the two-sided
   Wilcoxon signed-rank p-value of the patient differences (:func:`scipy.stats.wilcoxon`);
4. the verdict: ``"B better"`` / ``"B worse"`` only when the interval excludes 0, otherwise
   ``"no difference shown"``. Metrics are taken as higher-is-better (DICE, IoU, Precision, Recall).

* :func:`paired_comparison`: one metric, two arrays of per-case values (and patient ids);
* :func:`paired_arm_table`: a long results frame (one row per arm, seed and test case, as the
  experiment's ``all_slices`` / ``all_volumes``) -> every arm against a reference arm, per metric.

Conventions in ``docs/evaluation.md``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from metalung_monai.errors import InputError

__all__ = ["PairedComparison", "paired_comparison", "paired_arm_table", "oriented_pairs"]

#: verdict strings
BETTER, WORSE, NO_DIFFERENCE = "B better", "B worse", "no difference shown"
#: at most this many indices drawn at once by the bootstrap (bounds its memory, ~80 MB)
_CHUNK = 10_000_000


@dataclass(frozen=True)
class PairedComparison:
    """The result of :func:`paired_comparison` (differences are ``b - a``, in the metric's units).

    Attributes:
        n_patients: patients (bootstrap and test units) with at least one complete pair.
        n_cases: complete pairs (cases where both values are finite).
        n_dropped: pairs left out because a value is NaN (e.g. Precision of a missed slice).
        mean_a, mean_b: each arm's mean over the complete pairs.
        mean_case_diff: mean of the per-case differences (every case weighs the same).
        mean_diff: mean of the per-patient mean differences (every patient weighs the same).
        ci_low, ci_high: the ``1 - alpha`` percentile bootstrap interval of ``mean_diff``
            (NaN under 2 patients).
        p_value: two-sided Wilcoxon signed-rank p-value of the patient differences (NaN when
            undefined, ``note`` says why).
        verdict: ``"B better"``, ``"B worse"`` (the interval excludes 0) or
            ``"no difference shown"``.
        note: why the interval or ``p_value`` is NaN, else ``""``.
        alpha, n_boot, seed: the settings used.
    """

    n_patients: int
    n_cases: int
    n_dropped: int
    mean_a: float
    mean_b: float
    mean_case_diff: float
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: str
    note: str
    alpha: float
    n_boot: int
    seed: int

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (a table row)."""
        return asdict(self)


def _bootstrap_means(d: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` means of ``d`` resampled with replacement (drawn in bounded chunks)."""
    n = d.size
    out = np.empty(n_boot, dtype=float)
    step = max(1, _CHUNK // n)
    for start in range(0, n_boot, step):
        k = min(step, n_boot - start)
        out[start : start + k] = d[rng.integers(0, n, size=(k, n))].mean(axis=1)
    return out


def _wilcoxon(d: np.ndarray) -> tuple[float, str]:
    """Two-sided Wilcoxon signed-rank p-value of ``d`` (zeros dropped), or NaN and the reason."""
    if d.size < 2:
        return math.nan, f"{d.size} patient{'' if d.size == 1 else 's'}: needs 2 or more"
    if not np.any(d != 0):
        return math.nan, "every patient difference is 0: the signed-rank test is undefined"
    from scipy.stats import wilcoxon  # heavy (~0.6 s to import): only when a test is computed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            p = float(wilcoxon(d).pvalue)
        except ValueError as e:
            return math.nan, f"signed-rank test undefined ({e})"
    return (p, "") if math.isfinite(p) else (math.nan, "signed-rank test undefined")


def paired_comparison(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    groups: Sequence[Any] | np.ndarray | None = None,
    n_boot: int = 10_000,
    seed: int = 0,
    alpha: float = 0.05,
) -> PairedComparison:
    """Compare arm B with arm A on one metric, case by case, with the patient as the unit.

    Args:
        a, b: ``(N,)`` per-case values of one higher-is-better metric (e.g. DICE of each test
            slice, unitless in [0, 1]) for arm A and arm B; entry ``i`` of both is the same case
            (and seed). Pairs where either value is NaN (undefined, see ``docs/evaluation.md``) are
            left out and counted in ``n_dropped``.
        groups: ``(N,)`` patient id of each case. The case differences are averaged per patient
            and the patients are the bootstrap's and the test's units. None: every case is its own
            unit.
        n_boot: bootstrap resamples (>= 1).
        seed: seed of the :class:`numpy.random.Generator` drawing the resamples: the same inputs
            and seed give the same interval.
        alpha: the interval is the ``1 - alpha`` percentile interval (0.05: 95 %).

    Returns:
        :class:`PairedComparison`. Under 2 patients the interval and p-value are NaN and the
        verdict is ``"no difference shown"``; nothing raises on few or identical values.

    Raises:
        InputError: ``a``, ``b`` (and ``groups``) of different lengths or not one-dimensional,
            ``n_boot`` < 1, ``alpha`` outside (0, 1), or a patient id None / NaN.
    """
    av = np.asarray(a, dtype=float)
    bv = np.asarray(b, dtype=float)
    if av.ndim != 1 or bv.shape != av.shape:
        raise InputError("a, b", f"need two 1D arrays of one length, got {av.shape} and {bv.shape}")
    if groups is None:
        gv = np.arange(av.size)
    else:
        gv = np.asarray(groups, dtype=object)
        if gv.shape != av.shape:
            raise InputError("groups", f"needs one patient id per case: {gv.shape} for {av.shape}")
    if int(n_boot) < 1:
        raise InputError("n_boot", f"needs at least one resample, got {n_boot}")
    if not 0.0 < float(alpha) < 1.0:
        raise InputError("alpha", f"must lie in (0, 1), got {alpha}")
    ok = np.isfinite(av) & np.isfinite(bv)
    av, bv, gv = av[ok], bv[ok], gv[ok]
    d = bv - av
    if d.size:
        # per patient: mean of its case differences (patients in order of first appearance)
        codes, _ = pd.factorize(pd.Series(gv, dtype=object), sort=False)
        if (codes < 0).any():
            raise InputError("groups", "a case without a patient id (None or NaN)")
        d_pat = np.bincount(codes, weights=d) / np.bincount(codes)
    else:
        d_pat = np.empty(0)
    n_pat = int(d_pat.size)
    mean_diff = float(d_pat.mean()) if n_pat else math.nan
    lo = hi = math.nan
    if n_pat >= 2:
        boots = _bootstrap_means(d_pat, int(n_boot), np.random.default_rng(seed))
        lo, hi = (float(v) for v in np.quantile(boots, [alpha / 2, 1 - alpha / 2]))
    p, note = _wilcoxon(d_pat)
    verdict = BETTER if lo > 0 else WORSE if hi < 0 else NO_DIFFERENCE  # NaN compares False
    return PairedComparison(
        n_patients=n_pat,
        n_cases=int(d.size),
        n_dropped=int((~ok).sum()),
        mean_a=float(av.mean()) if av.size else math.nan,
        mean_b=float(bv.mean()) if bv.size else math.nan,
        mean_case_diff=float(d.mean()) if d.size else math.nan,
        mean_diff=mean_diff,
        ci_low=lo,
        ci_high=hi,
        p_value=p,
        verdict=verdict,
        note=note,
        alpha=float(alpha),
        n_boot=int(n_boot),
        seed=int(seed),
    )


def paired_arm_table(
    df: pd.DataFrame,
    reference: str,
    metrics: Sequence[str] = ("dice", "precision", "recall"),
    arms: Sequence[str] | None = None,
    arm_col: str = "arm",
    seed_col: str = "seed",
    case_cols: Sequence[str] = ("case_id", "slice_index"),
    patient_col: str = "patient_id",
    n_boot: int = 10_000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Every arm against ``reference``, per metric: :func:`paired_comparison` on a long frame.

    Rows of an arm are paired with the reference's rows of the same seed and case
    (``seed_col`` + ``case_cols``; a column of these that ``df`` lacks is not used, so a frame
    without seeds pairs on the case only) and grouped by ``patient_col`` (the patient's cases of
    every seed are averaged). Rows without a partner are counted in ``n_unpaired``.

    Args:
        df: one row per arm, seed and test case (e.g. the experiment's ``all_slices.csv``, or
            ``all_volumes.csv`` with ``case_cols=("case_id",)``), with the metric columns.
        reference: the arm A every other arm (B) is compared with.
        metrics: metric columns (higher is better).
        arms: the arms B, in this order (default: every other arm, in order of appearance).
        arm_col, seed_col, case_cols, patient_col: column names.
        n_boot, seed, alpha: as in :func:`paired_comparison`.

    Returns:
        DataFrame, one row per (arm, metric): ``reference``, ``arm``, ``metric``,
        ``n_unpaired`` and the fields of :class:`PairedComparison` (``mean_a`` is the reference's,
        ``mean_b`` the arm's mean over the complete pairs).

    Raises:
        InputError: a missing column, ``reference`` not in the frame, or a (seed, case) that
            occurs twice in one arm (the pairing would be ambiguous).
    """
    for c in (arm_col, patient_col, *metrics):
        if c not in df.columns:
            raise InputError(c, "column missing from the results frame (paired_arm_table needs it)")
    keys = [c for c in (seed_col, *case_cols) if c in df.columns]
    if not keys:
        raise InputError(
            ", ".join(case_cols), "no case column in the results frame to pair the arms on"
        )
    present = list(dict.fromkeys(df[arm_col].tolist()))
    if reference not in present:
        raise InputError(arm_col, f"reference arm {reference!r} not in the frame ({present})")
    others = [a for a in present if a != reference] if arms is None else list(arms)

    def rows(arm: str) -> pd.DataFrame:
        sub = df[df[arm_col] == arm]
        if sub.duplicated(keys).any():
            raise InputError(
                arm_col,
                f"arm {arm!r} has several rows of one ({', '.join(keys)}): cannot pair them",
            )
        return sub[[*keys, patient_col, *metrics]]

    ref = rows(reference)
    records = []
    for arm in others:
        if arm not in present:
            raise InputError(arm_col, f"arm {arm!r} not in the frame ({present})")
        both = ref.merge(
            rows(arm), on=keys, how="outer", suffixes=("_a", "_b"), indicator=True, sort=False
        )
        unpaired = int((both["_merge"] != "both").sum())
        both = both[both["_merge"] == "both"]
        for m in metrics:
            res = paired_comparison(
                both[f"{m}_a"].to_numpy(dtype=float),
                both[f"{m}_b"].to_numpy(dtype=float),
                groups=both[f"{patient_col}_a"].to_numpy(dtype=object),
                n_boot=n_boot,
                seed=seed,
                alpha=alpha,
            )
            records.append(
                {"reference": reference, "arm": arm, "metric": m, "n_unpaired": unpaired}
                | res.as_dict()
            )
    return pd.DataFrame.from_records(records)


def oriented_pairs(paired: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """Both readings of each comparison of ``paired`` on ``metric``: B against A and A against B.

    A comparison judged as ``arm`` (B) against ``reference`` (A) also answers how A did against
    B: the difference and its interval with the sign turned, the verdict swapped (``B better``
    <-> ``B worse``). Tables and figures that ask "how did arm X do against reference R" read
    this instead of looking the pair up both ways.

    Args:
        paired: :func:`paired_arm_table`'s rows (``reference``, ``arm``, ``metric``,
            ``mean_diff``, ``ci_low``, ``ci_high``, ``verdict``, ``p_value``, ``n_patients``),
            several references concatenated.
        metric: the metric kept.

    Returns:
        DataFrame with ``arm``, ``reference``, ``mean_diff`` (arm - reference), ``ci_low``,
        ``ci_high``, ``verdict`` (of the arm), ``p_value``, ``n_patients``: two rows per
        comparison (empty when ``paired`` has none for ``metric``).

    Raises:
        InputError: a column missing from ``paired``.
    """
    cols = ("reference", "arm", "metric", "mean_diff", "ci_low", "ci_high", "verdict")
    for c in cols:
        if c not in paired.columns:
            raise InputError(c, "column missing from the paired comparisons (oriented_pairs)")
    keep = [
        "arm",
        "reference",
        "mean_diff",
        "ci_low",
        "ci_high",
        "verdict",
        "p_value",
        "n_patients",
    ]
    t = paired[paired["metric"] == metric].reindex(columns=keep)  # absent p / n: NaN
    flip = {BETTER: WORSE, WORSE: BETTER}
    back = t.rename(columns={"arm": "reference", "reference": "arm"}).assign(
        mean_diff=-t["mean_diff"],
        ci_low=-t["ci_high"],
        ci_high=-t["ci_low"],
        verdict=t["verdict"].map(lambda v: flip.get(v, v)),
    )
    return pd.concat([t, back[keep]], ignore_index=True)
