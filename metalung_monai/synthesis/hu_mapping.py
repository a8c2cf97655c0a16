"""Generated lesion values back to integer HU: quantile mapping onto the real training lesions.

A generator (VQ-VAE, DCGAN, diffusion) outputs values in its own range (``[-1, 1]``, ``[0, 1]``,
or HU from a linear inverse window: fractional in every case). The thesis used such values as
they came, so every generated lesion held fractional HU that no scanner produces. This module maps
them onto the HU distribution of the **real training lesions** (a :class:`~metalung_monai.
synthesis.bank.LesionBank`, rows with ``subset == "train"``) by quantile mapping, then rounds:
**every output voxel is an integer HU value** (``int16``).

Two regions of a generated patch are mapped separately:

* inside the generated lesion mask: onto the distribution of the real lesion voxels
  (``image2d`` where ``mask2d == 1``), per group (Lung-RADS class or type, ``by``);
* outside it (the patch's context): onto the distribution of the real context voxels (the window
  voxels that are not lesion, ``mask2d == 0``), per group too, so the background is never drawn
  from the lesion's HU.

A group with fewer than ``min_group_size`` real lesions (default :data:`MIN_GROUP_SIZE` = 20)
has no table of its own and falls back to the table of all lesions (``"all"``); so does a group
the bank does not hold. The fall-backs are listed in :attr:`HUQuantileMap.fallback`.

Quantile mapping (monotone: a brighter generated voxel never becomes darker HU):

* ``mode="per_image"`` (default): the voxels of one region of one image are matched to the
  target table by their own ranks (:func:`skimage.exposure.match_histograms` on the masked
  voxels). Each lesion gets exactly the target distribution; between-lesion differences of mean
  HU within a group are lost.
* ``mode="pooled"``: a fixed monotone map from generator values to HU, fitted once on a batch of
  generated outputs (:meth:`HUQuantileMap.fit_source`): the pooled generated distribution of each
  region and group is matched to the real one (``np.interp`` on the two quantile tables). Each
  lesion keeps its relative brightness; preferred when N generated lesions are mapped together
  (a bundle's ``sample.json``).

Values outside the range of the source table are clamped to the target's minimum / maximum HU;
the output is rounded half to even (``np.rint``) and clipped to int16 HU ``[-1024, 3071]``.

The fitted tables serialise to JSON (:meth:`HUQuantileMap.to_dict` / :meth:`save` /
:meth:`load`) so that a bundle's ``sample.json`` can load them. MONAI-style transforms:
:class:`MapToLesionHU` (array) and :class:`MapToLesionHUd` (dictionary).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy
from skimage.exposure import match_histograms

from metalung_monai.errors import InputError
from metalung_monai.utils.atomic import write_json_atomic

__all__ = [
    "MIN_GROUP_SIZE",
    "N_QUANTILES",
    "GROUPINGS",
    "ALL",
    "HU_MIN",
    "HU_MAX",
    "HUQuantileMap",
    "MapToLesionHU",
    "MapToLesionHUd",
    "quantile_map",
]

logger = logging.getLogger(__name__)

#: a group (Lung-RADS class, type) needs at least this many real lesions for its own table
MIN_GROUP_SIZE = 20
#: quantiles per table (probabilities 0, 1/(n-1), ..., 1)
N_QUANTILES = 1001
#: manifest columns a map can be grouped by (``None``: one table for all lesions)
GROUPINGS = ("lung_rads", "type")
#: name of the table of all lesions (the fall-back)
ALL = "all"
#: int16 HU range of the output (air -1024 HU to the top of 12-bit CT)
HU_MIN, HU_MAX = -1024, 3071
_REGIONS = ("lesion", "context")
_FORMAT = "metalung-hu-quantile-map"


def _table(values: np.ndarray, n: int) -> np.ndarray:
    """``n`` quantiles (linear interpolation) of ``values`` at probabilities ``linspace(0, 1, n)``."""
    return np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0.0, 1.0, n))


def quantile_map(
    values: np.ndarray, source_table: np.ndarray, target_table: np.ndarray
) -> np.ndarray:
    """Monotone quantile mapping of ``values`` from the ``source_table`` to the ``target_table``.

    Both tables are quantiles at the same equally spaced probabilities (``linspace(0, 1, n)``,
    non-decreasing). A value's probability is interpolated in the source table (ties in the
    table, i.e. a point mass of the source, take the mean probability of their run) and read back
    in the target table. Values below / above the source range map to the target's first / last
    quantile. Returns float64 (not rounded).
    """
    src = np.asarray(source_table, dtype=np.float64)
    tgt = np.asarray(target_table, dtype=np.float64)
    if src.ndim != 1 or src.shape != tgt.shape or src.size < 2:
        raise ValueError(
            f"quantile_map: tables must be 1D of one length >= 2, got {src.shape} and {tgt.shape}"
        )
    probs = np.linspace(0.0, 1.0, src.size)
    uniq, inverse = np.unique(src, return_inverse=True)
    p_uniq = np.bincount(inverse, weights=probs) / np.bincount(inverse)
    if uniq.size == 1:  # a constant source: everything at the median of the target
        return np.full(np.shape(values), np.interp(0.5, probs, tgt))
    p = np.interp(np.asarray(values, dtype=np.float64), uniq, p_uniq)
    return np.interp(p, probs, tgt)


def _to_hu(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), HU_MIN, HU_MAX).astype(np.int16)


@dataclass
class HUQuantileMap:
    """Quantile tables (real HU per region and group; optionally the generator's values) and the
    mapping they define.

    Attributes:
        target: ``{"lesion": {group: table}, "context": {group: table}}``, tables of
            :data:`N_QUANTILES` HU quantiles of the real training voxels; group ``"all"`` always.
        by: manifest column the groups come from (``"lung_rads"``, ``"type"``) or ``None``.
        min_group_size: real lesions a group needs for its own table.
        counts: real lesions per group (``"all"`` included), as fitted.
        fallback: groups of the bank with too few lesions (they use ``"all"``).
        source: the generator's pooled value tables, same layout as ``target`` (``mode="pooled"``,
            from :meth:`fit_source`), or ``None``.
        provenance: what the tables were fitted from (bank path, subset, kind), free-form.
    """

    target: dict[str, dict[str, np.ndarray]]
    by: str | None = "lung_rads"
    min_group_size: int = MIN_GROUP_SIZE
    counts: dict[str, int] = field(default_factory=dict)
    fallback: list[str] = field(default_factory=list)
    source: dict[str, dict[str, np.ndarray]] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        images: np.ndarray,
        masks: np.ndarray,
        groups: Sequence[str] | None = None,
        by: str | None = "lung_rads",
        min_group_size: int = MIN_GROUP_SIZE,
        n_quantiles: int = N_QUANTILES,
        source_name: str = "images",
    ) -> HUQuantileMap:
        """Fit the target tables from real patches.

        Args:
            images: ``(N, ...)`` integer HU patches (e.g. the bank's ``image2d``, ``(N, S, S)``).
            masks: ``(N, ...)`` lesion masks of the same shape, ``{0, 1}``.
            groups: the group label of each patch (``N`` strings) or ``None`` (all in ``"all"``).
            by: what the labels are (recorded; ``None`` when ``groups`` is ``None``).
            min_group_size: a group with fewer patches falls back to ``"all"``.
            n_quantiles: quantiles per table (>= 2).
            source_name: named in errors.

        Raises:
            InputError: no patches, shapes that disagree, non-finite or non-integer HU, a
                lesion-less or context-less set, or bad ``groups``.
        """
        images = np.asarray(images)
        masks = np.asarray(masks)
        if images.ndim < 2 or images.shape[0] == 0:
            raise InputError(source_name, f"no patches to fit HU tables on (shape {images.shape})")
        if masks.shape != images.shape:
            raise InputError(
                source_name, f"masks {masks.shape} do not match the images {images.shape}"
            )
        if not np.all(np.isfinite(images)) or not np.array_equal(images, np.rint(images)):
            raise InputError(source_name, "real HU must be finite integers")
        if int(n_quantiles) < 2 or int(min_group_size) < 1:
            raise InputError(
                source_name,
                f"n_quantiles must be >= 2 and min_group_size >= 1, got {n_quantiles}, {min_group_size}",
            )
        n = images.shape[0]
        if groups is None:
            labels = np.array([ALL] * n, dtype=object)
            by = None
        else:
            labels = np.array([str(g) for g in groups], dtype=object)
            if labels.shape != (n,):
                raise InputError(source_name, f"{len(labels)} group labels for {n} patches")
        lesion = masks > 0
        tables: dict[str, dict[str, np.ndarray]] = {r: {} for r in _REGIONS}
        counts: dict[str, int] = {}
        fallback: list[str] = []
        names = [ALL] + sorted({g for g in labels if g != ALL})
        for g in names:
            sel = np.ones(n, bool) if g == ALL else labels == g
            counts[g] = int(sel.sum())
            if g != ALL and counts[g] < min_group_size:
                fallback.append(g)
                continue
            for region, m in (("lesion", lesion[sel]), ("context", ~lesion[sel])):
                vox = images[sel][m]
                if vox.size == 0:
                    if g == ALL:
                        raise InputError(source_name, f"no {region} voxels to fit HU tables on")
                    fallback.append(g)
                    break
                tables[region][g] = _table(vox, int(n_quantiles))
        for g in fallback:  # a group is either complete or absent
            for region in _REGIONS:
                tables[region].pop(g, None)
        return cls(
            target=tables,
            by=by,
            min_group_size=int(min_group_size),
            counts=counts,
            fallback=sorted(set(fallback)),
            provenance={"fitted_on": source_name, "n_patches": n},
        )

    @classmethod
    def fit_from_bank(
        cls,
        bank,
        by: str | None = "lung_rads",
        subset: str | None = "train",
        kind: str = "2d",
        min_group_size: int = MIN_GROUP_SIZE,
        n_quantiles: int = N_QUANTILES,
    ) -> HUQuantileMap:
        """Fit the target tables on a real :class:`~metalung_monai.synthesis.bank.LesionBank`.

        Uses the model-size patches (``image2d`` / ``mask2d`` for ``kind="2d"``): the HU a
        generator of that size should reproduce. Only rows with ``subset`` (``"train"``: the
        generators' training lesions; ``hold`` is the realism report's baseline and must not
        leak) and ``source == "real"`` when the column says so.

        Raises:
            InputError: an unknown ``by`` or ``kind``, or no rows left.
        """
        if by is not None and by not in GROUPINGS:
            raise InputError("by", f"unknown grouping {by!r}; choose from {GROUPINGS} or None")
        if kind not in ("2d", "3d"):
            raise InputError("kind", f"unknown lesion kind {kind!r}; choose '2d' or '3d'")
        has_source = "source" in bank.table.columns
        sel = bank.select(kind=kind, subset=subset, source="real" if has_source else None)
        where = str(bank.meta.get("path", "bank"))
        if len(sel) == 0:
            raise InputError(where, f"no real {kind} lesions with subset {subset!r}")
        image, mask, _ = sel.patches(kind)
        groups = None
        if by is not None:
            if by not in sel.table.columns:
                raise InputError(where, f"the manifest has no column {by!r}")
            groups = sel.table[by].fillna("").astype(str).tolist()
        out = cls.fit(image, mask, groups, by, min_group_size, n_quantiles, source_name=where)
        out.provenance.update({"bank": where, "subset": subset, "kind": kind})
        return out

    def fit_source(
        self,
        values: np.ndarray,
        masks: np.ndarray,
        groups: Sequence[str] | None = None,
        mask_threshold: float = 0.5,
    ) -> HUQuantileMap:
        """Fit the generator's pooled value tables (``mode="pooled"``) on a batch of outputs.

        Args:
            values: ``(N, ...)`` generated values in the generator's range (float).
            masks: ``(N, ...)`` generated lesion masks (binarised at ``mask_threshold``).
            groups: each output's group label (the class it was conditioned on) or ``None``.

        Returns ``self`` (fitted in place). A group with a target table but fewer than
        ``min_group_size`` generated lesions uses the pooled ``"all"`` source table.
        """
        values = np.asarray(values, dtype=np.float64)
        masks = np.asarray(masks)
        if values.ndim < 2 or values.shape[0] == 0 or masks.shape != values.shape:
            raise InputError(
                "values", f"generated values {values.shape} and masks {masks.shape} must agree"
            )
        if not np.all(np.isfinite(values)):
            raise InputError("values", "generated values hold NaN or infinity")
        n = values.shape[0]
        labels = np.array([ALL] * n if groups is None else [str(g) for g in groups], dtype=object)
        if labels.shape != (n,):
            raise InputError("groups", f"{len(labels)} group labels for {n} generated patches")
        lesion = masks > mask_threshold
        n_q = next(iter(self.target["lesion"].values())).size
        src: dict[str, dict[str, np.ndarray]] = {r: {} for r in _REGIONS}
        for g in self.target["lesion"]:
            sel = np.ones(n, bool) if g == ALL else labels == g
            if g != ALL and sel.sum() < self.min_group_size:
                continue
            for region, m in (("lesion", lesion[sel]), ("context", ~lesion[sel])):
                vox = values[sel][m]
                if vox.size:
                    src[region][g] = _table(vox, n_q)
                elif g == ALL:
                    raise InputError("masks", f"no generated {region} voxels to fit on")
        self.source = src
        return self

    # ------------------------------------------------------------------ mapping
    def group_of(self, group: str | None) -> str:
        """The table used for ``group``: itself when fitted, else ``"all"``."""
        g = ALL if group is None else str(group)
        return g if g in self.target["lesion"] else ALL

    def map(
        self,
        values: np.ndarray,
        mask: np.ndarray,
        group: str | None = None,
        mode: str = "per_image",
        mask_threshold: float = 0.5,
    ) -> np.ndarray:
        """Map one generated patch to integer HU (``int16``, same shape as ``values``).

        ``mask`` (same shape, or broadcastable over a channel axis of length 1) selects the
        lesion voxels (``> mask_threshold``); the rest is context. See the module docstring for
        ``mode``.
        """
        v = np.asarray(values, dtype=np.float64)
        m = np.broadcast_to(np.asarray(mask) > mask_threshold, v.shape)
        if not np.all(np.isfinite(v)):
            raise InputError("image", "generated values hold NaN or infinity")
        if mode not in ("per_image", "pooled"):
            raise InputError("mode", f"unknown mode {mode!r}; choose 'per_image' or 'pooled'")
        if mode == "pooled" and self.source is None:
            raise InputError("mode", "mode 'pooled' needs fit_source() on generated outputs first")
        g = self.group_of(group)
        out = np.empty(v.shape, dtype=np.float64)
        for region, sel in (("lesion", m), ("context", ~m)):
            if not sel.any():
                continue
            tgt = self.target[region][g]
            if mode == "per_image":
                out[sel] = match_histograms(v[sel], tgt)
            else:
                src = self.source[region]
                out[sel] = quantile_map(v[sel], src.get(g, src[ALL]), tgt)
        return _to_hu(out)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tables as lists of HU rounded to 0.01)."""

        def tables(t):
            return {r: {g: np.round(a, 2).tolist() for g, a in t[r].items()} for r in _REGIONS}

        return {
            "format": _FORMAT,
            "version": 1,
            "by": self.by,
            "min_group_size": self.min_group_size,
            "n_quantiles": int(next(iter(self.target["lesion"].values())).size),
            "counts": dict(self.counts),
            "fallback": list(self.fallback),
            "target": tables(self.target),
            "source": None if self.source is None else tables(self.source),
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source_name: str = "hu_map") -> HUQuantileMap:
        """Inverse of :meth:`to_dict`; checks the layout (typed :class:`InputError`)."""
        if not isinstance(d, Mapping) or d.get("format") != _FORMAT:
            raise InputError(source_name, f"not a HU quantile map (format must be {_FORMAT!r})")

        def tables(t, what, need_all):
            if not isinstance(t, Mapping) or set(t) != set(_REGIONS):
                raise InputError(source_name, f"{what} must have the regions {_REGIONS}")
            out = {}
            for r in _REGIONS:
                out[r] = {}
                for g, a in t[r].items():
                    arr = np.asarray(a, dtype=np.float64)
                    if arr.ndim != 1 or arr.size < 2 or not np.all(np.isfinite(arr)):
                        raise InputError(source_name, f"{what}.{r}.{g}: not a quantile table")
                    if np.any(np.diff(arr) < 0):
                        raise InputError(source_name, f"{what}.{r}.{g}: quantiles not sorted")
                    out[r][g] = arr
                if need_all and ALL not in out[r]:
                    raise InputError(source_name, f"{what}.{r} has no {ALL!r} table")
            return out

        target = tables(d.get("target"), "target", True)
        source = None if d.get("source") is None else tables(d["source"], "source", True)
        return cls(
            target=target,
            by=d.get("by"),
            min_group_size=int(d.get("min_group_size", MIN_GROUP_SIZE)),
            counts={str(k): int(v) for k, v in dict(d.get("counts", {})).items()},
            fallback=[str(g) for g in d.get("fallback", [])],
            source=source,
            provenance=dict(d.get("provenance", {})),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON, atomically."""
        return write_json_atomic(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> HUQuantileMap:
        """Read a map written by :meth:`save` (typed :class:`InputError` naming the file)."""
        p = Path(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(p, "HU quantile map not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(p, f"not JSON ({e})") from None
        return cls.from_dict(d, source_name=str(p))


def _as_map(hu_map: HUQuantileMap | Mapping | str | os.PathLike) -> HUQuantileMap:
    if isinstance(hu_map, HUQuantileMap):
        return hu_map
    if isinstance(hu_map, Mapping):
        return HUQuantileMap.from_dict(hu_map)
    return HUQuantileMap.load(hu_map)


class MapToLesionHU(Transform):
    """Map a generated patch to integer HU (int16) by quantile mapping onto real lesions.

    Input ``img``: channel-first ``(C, H, W)`` or ``(C, H, W, D)`` generated values in the
    generator's range (numpy, torch or ``MetaTensor``; float). ``mask``: the generated lesion
    mask, ``(1, ...)`` or ``(C, ...)`` of the same spatial shape, binarised at ``mask_threshold``.
    Output: the same shape and container type as ``img`` (a ``MetaTensor`` keeps its meta data
    and affine), dtype ``int16``, HU: lesion voxels follow the real lesion HU distribution of
    ``group``, the others the real context distribution (see :mod:`.hu_mapping`).

    Args:
        hu_map: a fitted :class:`HUQuantileMap`, its :meth:`~HUQuantileMap.to_dict`, or the path
            of its JSON file (a bundle's ``sample.json`` passes the path).
        mode: ``"per_image"`` or ``"pooled"`` (needs source tables).
        group: default group (Lung-RADS class / type) when the call gives none.
        mask_threshold: lesion where ``mask > mask_threshold``.

    Raises:
        InputError: NaN values, a mask of another spatial shape, an unknown mode.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        hu_map: HUQuantileMap | Mapping | str | os.PathLike,
        mode: str = "per_image",
        group: str | None = None,
        mask_threshold: float = 0.5,
    ) -> None:
        self.hu_map = _as_map(hu_map)
        if mode not in ("per_image", "pooled"):
            raise InputError("mode", f"unknown mode {mode!r}; choose 'per_image' or 'pooled'")
        if mode == "pooled" and self.hu_map.source is None:
            raise InputError("mode", "mode 'pooled' needs a map with source tables (fit_source)")
        self.mode = mode
        self.group = group
        self.mask_threshold = float(mask_threshold)

    @classmethod
    def from_bank(cls, bank, by: str | None = "lung_rads", **kwargs) -> MapToLesionHU:
        """Fit on a real bank (:meth:`HUQuantileMap.fit_from_bank`) and wrap it."""
        return cls(HUQuantileMap.fit_from_bank(bank, by=by), **kwargs)

    def __call__(
        self, img: NdarrayOrTensor, mask: NdarrayOrTensor, group: str | None = None
    ) -> NdarrayOrTensor:
        """Map ``img`` (channel-first) with its lesion ``mask``; returns int16 HU."""
        v = convert_to_numpy(img, wrap_sequence=True)
        m = convert_to_numpy(mask, wrap_sequence=True)
        if m.ndim == v.ndim - 1:  # a mask without its channel axis
            m = m[None]
        if m.ndim != v.ndim or m.shape[1:] != v.shape[1:] or m.shape[0] not in (1, v.shape[0]):
            raise InputError("mask", f"mask {m.shape} does not fit the image {v.shape}")
        out = self.hu_map.map(
            v, m, self.group if group is None else group, self.mode, self.mask_threshold
        )
        dtype = torch.int16 if isinstance(img, torch.Tensor) else np.int16
        res, *_ = convert_to_dst_type(out, img, dtype=dtype)
        return res


class MapToLesionHUd(MapTransform):
    """Dictionary twin of :class:`MapToLesionHU`.

    Args:
        keys: the generated image key(s) to map (``"image"``).
        hu_map, mode, mask_threshold: as :class:`MapToLesionHU`.
        mask_key: the key of the generated lesion mask (``"mask"``), left unchanged.
        group_key: the key holding each sample's group (e.g. ``"lung_rads"``: the class the
            generator was conditioned on); missing or ``None``: ``group``.
        group: default group.
    """

    backend = MapToLesionHU.backend

    def __init__(
        self,
        keys: KeysCollection,
        hu_map: HUQuantileMap | Mapping | str | os.PathLike,
        mask_key: str = "mask",
        group_key: str | None = "lung_rads",
        group: str | None = None,
        mode: str = "per_image",
        mask_threshold: float = 0.5,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mapper = MapToLesionHU(hu_map, mode=mode, group=group, mask_threshold=mask_threshold)
        self.mask_key = mask_key
        self.group_key = group_key

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        if self.mask_key not in d:
            raise InputError(self.mask_key, "no mask under this key")
        group = d.get(self.group_key) if self.group_key is not None else None
        if isinstance(group, (list, tuple)) and len(group) == 1:
            group = group[0]
        for key in self.key_iterator(d):
            d[key] = self.mapper(d[key], d[self.mask_key], None if group is None else str(group))
        return d
