"""Balancing a training set: left / right lung and Lung-RADS class shares of its tumours.

The MetaLung thesis claims that mirror and relocation balance the left and right lungs; this
module makes that a planned choice. It is shared by ``metalung augment --balance`` (which
operations, and how many variants, each training case gets) and ``metalung synthesize
--balance`` (which lung side and Lung-RADS class the lesion inserted into each healthy case gets).

* **Categories.** ``"lung"``: the side of a case's tumour, ``"right"`` or ``"left"`` (the lung
  holding most of its tumour voxels, :func:`tumor_side`); ``"lung-rads"``: its Lung-RADS class
  ``"LR2"`` ... ``"LR4B"`` from the tumour's size (:func:`~.lung_rads.lung_rads_from_mask`). A case
  without tumour (``LR1``) belongs to no category: it counts in neither share.
* **The unit is a case** (a training entry: a slice or a volume), the unit a data loader samples;
  the tumour-voxel shares of ``heatmap.png`` weigh a 4B mass hundreds of times more than a 5 mm
  nodule.
* **Targets.** ``"lung"``: equal shares (``{"right": 0.5, "left": 0.5}``). ``"lung-rads"``:
  uniform over the tumour classes present in the input (:func:`default_target`): the evaluation
  reports DICE per class (the thesis' Table 8) and the default cohort's test split holds the same
  number of patients per class, so each class gets the same weight in training as in the test;
  a class absent from the input cannot be reached by operations that keep the size. Any mix can
  be given (:class:`BalancePlanner`'s ``target``).
* :class:`BalancePlanner` holds the counts per category: :meth:`~BalancePlanner.want` names the
  category furthest below its target share now, :meth:`~BalancePlanner.add` counts one more
  case, :meth:`~BalancePlanner.shares` the shares. :func:`plan_expansion` runs it over the
  variants MetaLung can make of each case (mirror and relocation move a tumour to the other lung,
  the other operations keep its side; all keep its size).
* :func:`balance_table` (pandas) and :func:`balance_figure` (tumour-centroid density on a thorax
  grid normalised to the lungs' box, before / after, and the shares beside the target) show the
  result.

All arrays are canonical (2D ``(y, x)`` or 3D ``(z, y, x)``, ``x`` towards the patient's left;
:mod:`metalung_monai.utils.orientation`); lung labels are 1 right, 2 left
(:data:`~.settings.RIGHT_LUNG`, :data:`~.settings.LEFT_LUNG`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ..errors import InputError
from ..utils.orientation import sitk_to_canonical
from ._checks import to_numpy
from .lung_rads import lung_rads_from_mask
from .settings import LEFT_LUNG, RIGHT_LUNG

__all__ = [
    "BALANCE_MODES",
    "SIDES",
    "TUMOR_CLASSES",
    "SIDE_CHANGING_OPS",
    "BalancePlanner",
    "ExpansionPlan",
    "CaseFacts",
    "check_mode",
    "default_target",
    "tumor_side",
    "tumor_position",
    "case_facts",
    "entry_facts",
    "category_of",
    "op_effect",
    "plan_expansion",
    "balance_table",
    "balance_figure",
]

#: the ``--balance`` values
BALANCE_MODES = ("lung", "lung-rads")
#: the categories of ``"lung"``: the patient's right and left lung
SIDES = ("right", "left")
#: the categories of ``"lung-rads"``: the Lung-RADS classes of a tumour (``LR1`` = no tumour)
TUMOR_CLASSES = ("LR2", "LR3", "LR4A", "LR4B")
#: MetaLung operations that move the tumour to the other lung (relocation: the opposite lung
#: first, the same lung when the opposite has no room; mirror: always)
SIDE_CHANGING_OPS = ("mirror", "relocate")
#: MetaLung operations in the order the planner prefers them (the default ``--ops`` order; mirror,
#: which always applies, before relocation, which may find no room)
_OP_ORDER = ("mirror", "relocate", "rotate_image", "rotate_tumor", "noise_image", "noise_tumor")
#: cells per axis of the centroid density map in :func:`balance_figure`
_GRID = 24


def check_mode(mode: str, source: str = "--balance") -> str:
    """``mode`` if it is one of :data:`BALANCE_MODES`, else :class:`InputError` naming ``source``."""
    if mode not in BALANCE_MODES:
        raise InputError(
            source, f"unknown balance {mode!r}; choose from {', '.join(BALANCE_MODES)}"
        )
    return mode


def default_target(mode: str, counts: Mapping[str, int] | None = None) -> dict[str, float]:
    """The default target shares of ``mode`` (see the module docstring).

    Args:
        mode: ``"lung"`` or ``"lung-rads"``.
        counts: cases per category of the input; for ``"lung-rads"`` the target is uniform over
            the classes of :data:`TUMOR_CLASSES` with at least one case (all four when none has).

    Returns:
        Category -> share (summing to 1), in the categories' order.
    """
    check_mode(mode, "mode")
    if mode == "lung":
        return {s: 0.5 for s in SIDES}
    present = [c for c in TUMOR_CLASSES if (counts or {}).get(c, 0) > 0] or list(TUMOR_CLASSES)
    return {c: 1.0 / len(present) for c in present}


class BalancePlanner:
    """Counts per category and the category to add next, towards target shares.

    Example (the side of the next lesion to insert into a healthy case)::

        planner = BalancePlanner({"right": 13, "left": 7})        # target: equal shares
        side = planner.want()                                      # "left"
        planner.add(side)
        planner.shares()                                           # {"right": 0.619, "left": 0.381}

    Args:
        counts: cases per category now (non-negative integers).
        target: category -> target share (non-negative, not all zero; normalised to sum 1). Default:
            equal shares over the categories of ``counts``. Categories of ``counts`` missing from
            ``target`` have target 0 (they count in the total, and are never wanted).

    Raises:
        InputError: a negative or non-integer count, a negative / non-finite share, all shares zero.
    """

    def __init__(
        self, counts: Mapping[str, int], target: Mapping[str, float] | None = None
    ) -> None:
        self._counts: dict[str, int] = {}
        for cat, n in dict(counts).items():
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
                raise InputError("counts", f"{cat!r}: must be a whole number >= 0, got {n!r}")
            self._counts[str(cat)] = int(n)
        if target is None:
            if not self._counts:
                raise InputError("counts", "no categories given (and no target)")
            target = {c: 1.0 for c in self._counts}
        raw = {}
        for cat, share in dict(target).items():
            try:
                s = float(share)
            except (TypeError, ValueError):
                s = float("nan")
            if not math.isfinite(s) or s < 0:
                raise InputError(
                    "target", f"{cat!r}: share must be a finite number >= 0, got {share!r}"
                )
            raw[str(cat)] = s
        total = sum(raw.values())
        if total <= 0:
            raise InputError("target", f"needs at least one share > 0, got {dict(target)}")
        self.target: dict[str, float] = {c: s / total for c, s in raw.items()}
        for c in self.target:
            self._counts.setdefault(c, 0)

    @property
    def counts(self) -> dict[str, int]:
        """Cases per category (a copy)."""
        return dict(self._counts)

    @property
    def total(self) -> int:
        """Cases in all categories together."""
        return sum(self._counts.values())

    def shares(self) -> dict[str, float]:
        """Category -> its share of the cases now (all 0.0 while there are none)."""
        n = self.total
        return {c: (k / n if n else 0.0) for c, k in self._counts.items()}

    def deficit(self, category: str) -> float:
        """Cases ``category`` lacks for its target share now: ``target * total - count``."""
        return self.target.get(category, 0.0) * self.total - self._counts.get(category, 0)

    def want(self, among: Iterable[str] | None = None) -> str | None:
        """The category furthest below its target share now (the largest :meth:`deficit`).

        Args:
            among: only these categories (e.g. those that can still be made); default all with a
                target share > 0.

        Returns:
            The category; ties go to the larger target share, then the earlier category of
            ``target``. ``None`` when no category is eligible.
        """
        allowed = None if among is None else set(among)
        best, key = None, None
        for i, (cat, share) in enumerate(self.target.items()):
            if share <= 0 or (allowed is not None and cat not in allowed):
                continue
            k = (self.deficit(cat), share, -i)
            if key is None or k > key:
                best, key = cat, k
        return best

    def add(self, category: str, n: int = 1) -> None:
        """Count ``n`` more cases of ``category`` (a category not seen before is added)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise InputError("n", f"must be a whole number >= 0, got {n!r}")
        self._counts[str(category)] = self._counts.get(str(category), 0) + int(n)

    def distance(self) -> float:
        """Largest ``|share - target|`` over the categories (0 = on target)."""
        shares = self.shares()
        cats = set(shares) | set(self.target)
        return max(abs(shares.get(c, 0.0) - self.target.get(c, 0.0)) for c in cats)

    def __repr__(self) -> str:
        return f"BalancePlanner(counts={self._counts}, target={self.target})"


# --------------------------------------------------------------------------- one tumour
def _mask_and_lungs(mask, lungs, source: str) -> tuple[np.ndarray, np.ndarray | None]:
    m = to_numpy(mask)
    if m.ndim not in (2, 3):
        raise InputError(
            source, f"expected a canonical 2D (y, x) or 3D (z, y, x) mask, got shape {m.shape}"
        )
    if lungs is None:
        return m > 0, None
    lab = to_numpy(lungs)
    if lab.shape != m.shape:
        raise InputError(
            source, f"lung labels of shape {lab.shape} do not match the mask's {m.shape}"
        )
    return m > 0, lab


def tumor_side(mask, lungs=None, *, mirrored: bool = False) -> str | None:
    """Side of a case's tumour: ``"right"``, ``"left"``, or ``None`` without tumour.

    Args:
        mask: canonical tumour mask (> 0 is tumour), 2D ``(y, x)`` or 3D ``(z, y, x)``.
        lungs: lung labels of the same shape (1 right, 2 left), or None.
        mirrored: the labels were mirrored with the image by MetaLung's ``mirror`` (which keeps the
            label values: label 1 then lies in the patient's left), so the sides are swapped.
            Ignored without ``lungs``.

    Returns:
        With ``lungs``: the lung holding most tumour voxels; a tie, or a tumour wholly outside the
        lungs (on the mediastinal pleura), goes to the lung whose centre is nearer the tumour's
        centroid along ``x``. Without ``lungs`` (or with empty labels): the image half holding the
        centroid (``x`` at or beyond the middle = left), the convention of ``heatmap.png``.
    """
    m, lab = _mask_and_lungs(mask, lungs, "tumor_side(mask)")
    if not m.any():
        return None
    x_c = float(np.argwhere(m)[:, -1].mean())
    side = None
    if lab is not None and (lab > 0).any():
        right = int(np.count_nonzero(m & (lab == RIGHT_LUNG)))
        left = int(np.count_nonzero(m & (lab == LEFT_LUNG)))
        if right != left:
            side = "right" if right > left else "left"
        else:
            centres = {}
            for name, value in (("right", RIGHT_LUNG), ("left", LEFT_LUNG)):
                xs = np.flatnonzero((lab == value).any(axis=tuple(range(lab.ndim - 1))))
                if len(xs):
                    centres[name] = 0.5 * (xs[0] + xs[-1])
            if centres:
                side = min(centres, key=lambda s: abs(centres[s] - x_c))
        if side is not None and mirrored:
            side = "left" if side == "right" else "right"
    if side is None:
        side = "left" if x_c + 0.5 >= m.shape[-1] / 2.0 else "right"
    return side


def tumor_position(mask, lungs=None) -> tuple[float, float] | None:
    """Centroid of the tumour on the axial thorax grid: ``(y, x)`` in ``[0, 1]``, or None.

    The grid is the axial bounding box of both lungs (``lungs`` > 0, all slices), so that chests of
    any size and field of view line up: ``x`` 0 = the right lung's outer edge, 1 = the left's;
    ``y`` 0 = anterior, 1 = posterior. Without lung labels (or empty ones): the image extent.
    Positions are clipped to ``[0, 1]``.
    """
    m, lab = _mask_and_lungs(mask, lungs, "tumor_position(mask)")
    pts = np.argwhere(m)
    if len(pts) == 0:
        return None
    c = pts[:, -2:].mean(axis=0) + 0.5
    lo, hi = np.zeros(2), np.asarray(m.shape[-2:], float)
    if lab is not None and (lab > 0).any():
        box = ndi.find_objects((lab > 0).astype(np.uint8))[0][-2:]
        lo = np.array([box[0].start, box[1].start], float)
        hi = np.array([box[0].stop, box[1].stop], float)
    pos = np.clip((c - lo) / np.maximum(hi - lo, 1.0), 0.0, 1.0)
    return float(pos[0]), float(pos[1])


@dataclass(frozen=True)
class CaseFacts:
    """What the balancing needs of one case: its tumour's side, class and place.

    ``side`` and ``position`` are None and ``lung_rads`` is ``"LR1"`` for a case without tumour.
    """

    side: str | None
    lung_rads: str
    position: tuple[float, float] | None

    def category(self, mode: str) -> str | None:
        """The case's category under ``mode`` (None: no tumour, in no category)."""
        check_mode(mode, "mode")
        if mode == "lung":
            return self.side
        return None if self.lung_rads == "LR1" else self.lung_rads


def case_facts(mask, spacing, lungs=None, *, mirrored: bool = False) -> CaseFacts:
    """:class:`CaseFacts` of canonical arrays (``spacing`` in mm, the mask's axis order)."""
    return CaseFacts(
        side=tumor_side(mask, lungs, mirrored=mirrored),
        lung_rads=lung_rads_from_mask(mask, spacing),
        position=tumor_position(mask, lungs),
    )


def entry_facts(entry: Mapping) -> CaseFacts:
    """:class:`CaseFacts` of a datalist entry (absolute paths, as ``datalist_entries`` gives them).

    Reads the ``mask`` (none: no tumour) and the ``lung_mask`` when listed. The Lung-RADS class is
    measured from the mask (the rule ``metalung augment`` applies to its variants), not taken from
    the entry's ``lung_rads``, so that inputs and variants are classed alike.
    """
    import SimpleITK as sitk

    if not entry.get("mask"):
        return CaseFacts(None, "LR1", None)

    def read(key: str):
        try:
            return sitk_to_canonical(sitk.ReadImage(str(entry[key])))
        except RuntimeError as e:
            raise InputError(entry[key], f"{key} cannot be read ({str(e).strip()[:200]})") from e

    mask, spacing = read("mask")
    lungs = read("lung_mask")[0] if entry.get("lung_mask") else None
    if lungs is not None and lungs.shape != mask.shape:
        raise InputError(
            entry["lung_mask"],
            f"lung_mask shape {lungs.shape} does not match the mask's {mask.shape}",
        )
    return case_facts(mask, spacing, lungs)


def category_of(entry_or_facts: Mapping | CaseFacts, mode: str) -> str | None:
    """Category under ``mode`` of a datalist entry (read from its files) or of :class:`CaseFacts`."""
    facts = entry_or_facts if isinstance(entry_or_facts, CaseFacts) else entry_facts(entry_or_facts)
    return facts.category(mode)


# --------------------------------------------------------------------------- planning
def op_effect(mode: str, op: str, category: str) -> str:
    """Category of a variant that MetaLung operation ``op`` makes of a case of ``category``.

    ``"lung"``: :data:`SIDE_CHANGING_OPS` give the other side (relocation tries the opposite lung
    first), the others keep it; ``"lung-rads"``: every operation keeps the tumour's size.
    """
    check_mode(mode, "mode")
    if mode == "lung" and op in SIDE_CHANGING_OPS:
        return "left" if category == "right" else "right"
    return category


@dataclass
class ExpansionPlan:
    """The result of :func:`plan_expansion`.

    Attributes:
        mode: ``"lung"`` or ``"lung-rads"``.
        target: category -> target share.
        plans: per case (input order): operation -> number of variants, or None for a case in no
            category (no tumour), which is expanded as without balancing.
        before: cases per category of the input.
        planned: cases per category after the planned variants (if each is applied).
    """

    mode: str
    target: dict[str, float]
    plans: list[dict[str, int] | None]
    before: dict[str, int]
    planned: dict[str, int] = field(default_factory=dict)


def plan_expansion(
    categories: Sequence[str | None],
    mode: str,
    ops: Sequence[str],
    copies: int = 1,
    target: Mapping[str, float] | None = None,
) -> ExpansionPlan:
    """Choose the variants of each case so that the expanded set approaches ``target``.

    Every case may get up to ``copies`` variants of each operation of ``ops`` (mirror: one), as
    without balancing; the plan takes a subset of them. Greedy: the :class:`BalancePlanner`, started
    from the input's counts, names the category furthest below its target share; the case with the
    fewest planned variants (then the earliest) that can still make a variant of that category
    gets one (its first such operation not yet used up, mirror before relocation); this repeats
    until the wanted category cannot be made any more. So the plan stops at the largest set that
    stays at the target; ``--copies`` raises that bound. On cases all in one lung, mirror and
    relocation of half of the variants' worth give the other lung its share.

    Args:
        categories: per case its category (None: no tumour; such a case gets plan None).
        mode: ``"lung"`` or ``"lung-rads"``.
        ops: the MetaLung operations allowed (names of ``METALUNG_OPS``).
        copies: most variants per operation and case (mirror: 1).
        target: target shares (default :func:`default_target` of the input's counts).

    Returns:
        An :class:`ExpansionPlan`.
    """
    check_mode(mode, "mode")
    if isinstance(copies, bool) or int(copies) != copies or copies < 1:
        raise InputError("copies", f"must be a whole number >= 1, got {copies!r}")
    unknown = [o for o in ops if o not in _OP_ORDER]
    if unknown:
        raise InputError(
            "ops", f"unknown operation(s) {unknown}; choose from {', '.join(_OP_ORDER)}"
        )
    order = [o for o in _OP_ORDER if o in set(ops)]
    cats = [None if c is None else str(c) for c in categories]
    before: dict[str, int] = {}
    for c in cats:
        if c is not None:
            before[c] = before.get(c, 0) + 1
    if target is None:
        target = default_target(mode, before)
    planner = BalancePlanner(dict(before), target)
    # slots: (case, op) -> variants still free; per category, the cases that can make it
    free = [
        {op: (1 if op == "mirror" else int(copies)) for op in order} if c is not None else {}
        for c in cats
    ]
    plans: list[dict[str, int] | None] = [
        ({op: 0 for op in order} if c is not None else None) for c in cats
    ]
    used = [0] * len(cats)
    reachable = {op_effect(mode, op, c) for c in cats if c is not None for op in order}
    missing = [c for c, s in planner.target.items() if s > 0 and c not in reachable]
    if missing and order and before:
        why = "no input case can give them a variant: " + (
            "add mirror or relocate to --ops" if mode == "lung" else "MetaLung keeps the size"
        )
        raise InputError(
            "--balance", f"the target wants {', '.join(missing)} but {why} (input: {before})"
        )
    while True:
        want = planner.want(among=reachable)
        if want is None:
            break
        pick = None
        for i, c in enumerate(cats):
            if c is None or (pick is not None and used[i] >= used[pick[0]]):
                continue
            op = next((o for o in order if free[i][o] > 0 and op_effect(mode, o, c) == want), None)
            if op is not None:
                pick = (i, op)
        if pick is None:
            break
        i, op = pick
        free[i][op] -= 1
        plans[i][op] += 1
        used[i] += 1
        planner.add(want)
    return ExpansionPlan(mode, dict(planner.target), plans, before, planner.counts)


# --------------------------------------------------------------------------- reporting
def balance_table(
    before: Mapping[str, int],
    after: Mapping[str, int],
    target: Mapping[str, float],
    mode: str = "lung",
) -> pd.DataFrame:
    """Before / after table: one row per category (the mode's categories in order, then others).

    Columns: ``category``, ``target`` (share), ``before`` (cases), ``before_share``, ``after``
    (cases), ``after_share``; shares in ``[0, 1]`` over the cases of all categories.
    """
    check_mode(mode, "mode")
    known = SIDES if mode == "lung" else TUMOR_CLASSES
    seen = set(before) | set(after) | {c for c, s in target.items() if s > 0}
    cats = [c for c in known if c in seen] + sorted(seen - set(known))
    n_b = sum(before.values()) or 1
    n_a = sum(after.values()) or 1
    rows = [
        {
            "category": c,
            "target": float(target.get(c, 0.0)),
            "before": int(before.get(c, 0)),
            "before_share": before.get(c, 0) / n_b,
            "after": int(after.get(c, 0)),
            "after_share": after.get(c, 0) / n_a,
        }
        for c in cats
    ]
    return pd.DataFrame(
        rows, columns=["category", "target", "before", "before_share", "after", "after_share"]
    )


def _density(positions: Iterable[tuple[float, float] | None]) -> np.ndarray:
    pts = np.array([p for p in positions if p is not None], float).reshape(-1, 2)
    heat, _, _ = np.histogram2d(pts[:, 0], pts[:, 1], bins=_GRID, range=((0, 1), (0, 1)))
    return ndi.gaussian_filter(heat, 1.0)


def balance_figure(
    path: str | os.PathLike,
    before_positions: Sequence[tuple[float, float] | None],
    after_positions: Sequence[tuple[float, float] | None],
    table: pd.DataFrame,
    mode: str = "lung",
) -> Path:
    """Write the before / after picture (PNG) of a balancing and return its path.

    Left and middle: density of the tumour centroids (:func:`tumor_position`, one point per case,
    a Gaussian of one cell over a 24 x 24 thorax grid) before and after, radiological display
    (patient right on the left), the midline dashed, the left / right shares in the titles.
    Right: the shares per category before and after beside the target (``table`` of
    :func:`balance_table`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils.atomic import save_figure_atomic

    fig, axes = plt.subplots(1, 3, figsize=(15, 5), gridspec_kw={"width_ratios": [1, 1, 1.1]})
    for ax, pos, title in (
        (axes[0], before_positions, "before"),
        (axes[1], after_positions, "after"),
    ):
        pts = [p for p in pos if p is not None]
        left = sum(1 for p in pts if p[1] >= 0.5)
        n = max(len(pts), 1)
        im = ax.imshow(_density(pts), cmap="inferno", extent=(0, 1, 1, 0), vmin=0)
        ax.axvline(0.5, color="w", lw=0.6, ls="--")
        ax.set_title(
            f"{title}: {len(pts)} tumour cases\nright half {(len(pts) - left) / n:.0%} | "
            f"left half {left / n:.0%} of centroids"
        )
        ax.set_xlabel("patient right  <-  x (lungs' box)  ->  patient left")
        ax.set_ylabel("anterior  <-  y  ->  posterior")
        fig.colorbar(im, ax=ax, fraction=0.046, label="tumour centroids (smoothed)")
    ax = axes[2]
    x = np.arange(len(table))
    ax.bar(x - 0.2, table["before_share"], 0.4, label="before", color="#8da0cb")
    ax.bar(x + 0.2, table["after_share"], 0.4, label="after", color="#fc8d62")
    for i, t in enumerate(table["target"]):
        ax.plot([i - 0.45, i + 0.45], [t, t], color="k", lw=1.5, label="target" if i == 0 else None)
    ax.set_xticks(
        x,
        [f"{c}\n{b} -> {a}" for c, b, a in zip(table["category"], table["before"], table["after"])],
    )
    ax.set_ylabel("share of tumour cases")
    ax.set_ylim(0, 1)
    ax.set_title(f"--balance {mode}: shares (cases before -> after)")
    ax.legend()
    fig.tight_layout()
    out = save_figure_atomic(fig, path, dpi=100)
    plt.close(fig)
    return out
