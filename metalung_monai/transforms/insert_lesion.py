"""Insert a lesion from a bank into free lung: MONAI dictionary transforms (issue 13, 2D).

:class:`InsertLesiond` inserts one given lesion of a bank (deterministic: the lesion's row, its
scale and the seed of its placement are arguments); :class:`RandInsertLesiond` draws them
(``prob``, a random lesion of the bank, a scale in ``scale_range``, a placement seed) and
delegates, so ``randomize=False`` replays the last draw. With a bank of real lesions
(``metalung lesion-bank``) this is online copy-paste (TumorCP's peer); with a bank-like folder
of generated lesions (the generator bundles' ``sample.json``) it inserts generated ones.

Data: ``image`` a channel-first 2D slice ``(1, H, W)`` in integer HU (MetaTensor, tensor or
array; the spacing comes from the MetaTensor's affine or ``spacing``), ``mask`` the tumour mask
of the same shape, ``lung_key`` its lung labels (0 / 1 / 2). The lesion goes where
:func:`~metalung_monai.anatomy.free_space_mask` says parenchyma is free (``margin_mm`` from
vessels, airways, calcifications and the pleura) and at least ``tumor_margin_px`` pixels from
the tumours already in ``mask``; :mod:`~metalung_monai.synthesis.insertion` resamples, places
and blends it (integer HU, the target's noise texture, nothing outside the footprint changes).
The output mask is ``mask | inserted lesion``. Each call appends a record to
``meta["metalung"]`` of the image and the mask (``op`` ``insert_lesion``, ``applied``, the
``reason`` when not: ``prob`` or ``no room``, the lesion id, generator, scale, centre, box).

Size: by default (``scale_range=(1, 1)``) a lesion keeps its real size in mm (the bank's pixel
size times its pixels), so the Lung-RADS mix of the bank is the mix inserted (the class is a
diameter); ``scale_range`` enlarges it as the thesis' random scale 1-4 did.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform
from scipy import ndimage as ndi

from metalung_monai.anatomy import free_space_mask
from metalung_monai.errors import InputError
from metalung_monai.synthesis.bank import LesionBank, read_bank
from metalung_monai.synthesis.generative import bank_pixel_mm
from metalung_monai.synthesis.insertion import blend_lesion, find_lesion_place, resample_lesion
from metalung_monai.transforms.metalung.array import _append_record, _like, _stamp

__all__ = ["FreeSpaced", "InsertLesiond", "RandInsertLesiond", "lesion_choices"]


def lesion_choices(bank: LesionBank, subset: str | None = "train") -> LesionBank:
    """The 2D lesions a transform draws from: a real bank's ``subset`` rows (never ``hold``,
    the realism baseline), or every row of a generated bank."""
    t = bank.table
    generated = "source" in t.columns and (t["source"] == "generated").all()
    sel = bank.select(kind="2d", subset=None if generated else subset)
    if len(sel) == 0:
        raise InputError(
            str(bank.meta.get("path", "bank")), f"no 2D lesions to insert (subset {subset!r})"
        )
    return sel


def _bank(bank: LesionBank | str | os.PathLike) -> LesionBank:
    if isinstance(bank, LesionBank):
        return bank
    b = read_bank(bank)
    b.meta.setdefault("path", os.fspath(bank))
    return b


def _plane(x: Any, key: Hashable) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != 3 or a.shape[0] != 1:
        raise InputError(str(key), f"expected a channel-first 2D slice (1, H, W), got {a.shape}")
    return a[0]


def _recorded_skip(d: dict, keys: Sequence[Hashable], record: dict) -> dict:
    """``d`` unchanged but for ``record`` appended to copies of its MetaTensors at ``keys``
    (the caller's tensors keep their metadata)."""
    for k in keys:
        if isinstance(d.get(k), MetaTensor):
            d[k] = _stamp(d[k].clone())
            _append_record(d[k], record)
    return d


class FreeSpaced(MapTransform):
    """Free lung parenchyma of a 2D slice, ``(1, H, W)`` uint8 under ``out_key``
    (:func:`~metalung_monai.anatomy.free_space_mask`, ``margin_mm`` from dense structures and
    the pleura): deterministic, so placed before the random transforms of a MONAI pipeline it is
    computed once per case by ``CacheDataset`` and :class:`InsertLesiond` only places and blends.

    Args:
        keys: the image key (HU).
        lung_key: key of the lung labels; out_key: where the mask goes.
        margin_mm: as :class:`InsertLesiond` (use the same value).
        spacing: ``(y, x)`` mm; ``None`` takes it from the image's affine (MetaTensor).
    """

    def __init__(
        self,
        keys: KeysCollection,
        lung_key: Hashable = "lung_mask",
        out_key: Hashable = "free_space",
        margin_mm: float = 1.0,
        spacing: Sequence[float] | None = None,
    ) -> None:
        super().__init__(keys)
        self.lung_key, self.out_key = lung_key, out_key
        self.margin_mm = float(margin_mm)
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            for k in (key, self.lung_key):
                if k not in d:
                    raise InputError(str(k), "missing from the data dictionary")
            img = _plane(d[key], key)
            sp = _spacing_of(d[key], self.spacing, key)
            lungs = _plane(d[self.lung_key], self.lung_key)
            free = free_space_mask(img, lungs, sp, min_distance_mm=self.margin_mm)
            d[self.out_key] = torch.from_numpy(free[None].astype(np.uint8))
        return d


def _spacing_of(img: Any, spacing: tuple[float, ...] | None, key: Hashable) -> tuple[float, float]:
    if spacing is not None:
        return spacing  # type: ignore[return-value]
    if isinstance(img, MetaTensor):
        aff = np.asarray(img.affine, dtype=float)
        return tuple(float(v) for v in np.linalg.norm(aff[:2, :2], axis=0))  # type: ignore[return-value]
    raise InputError(str(key), "no spacing: give spacing=(y, x) or a MetaTensor")


class InsertLesiond(MapTransform):
    """Insert lesion ``index`` (a row of :func:`lesion_choices`) at ``scale``, placed with the
    generator seeded by ``seed`` (see the module docstring).

    Args:
        keys: ``(image_key, mask_key)``.
        bank: a :class:`~metalung_monai.synthesis.bank.LesionBank` or its folder.
        lung_key: key of the lung labels.
        index, scale, seed: which lesion, its size factor, the placement seed.
        subset: rows of a real bank to draw from (``"train"``).
        edge_px: width of the blending band outside the lesion mask (pixels of the target).
        sigma_px: low-pass of the lesion / high-pass of the target's noise (pixels).
        margin_mm: free-space distance required from dense structures and the pleura.
        tumor_margin_px: distance kept from the tumours already in the mask.
        spacing: ``(y, x)`` mm; ``None`` takes it from the image's affine (MetaTensor).
        name: the bank's name in the records (``bank``), e.g. ``"real"`` or ``"dcgan"``.
        free_key: key of a precomputed free-space mask (:class:`FreeSpaced`, deterministic, so
            MONAI's ``CacheDataset`` keeps it): used when present, computed per call otherwise
            (the map is most of the cost of a call: 22 of 22.2 ms on a 512 x 512 slice).
    """

    def __init__(
        self,
        keys: KeysCollection,
        bank: LesionBank | str | os.PathLike,
        lung_key: Hashable = "lung_mask",
        index: int = 0,
        scale: float = 1.0,
        seed: int = 0,
        subset: str | None = "train",
        edge_px: float = 2.0,
        sigma_px: float = 1.0,
        margin_mm: float = 1.0,
        tumor_margin_px: int = 3,
        spacing: Sequence[float] | None = None,
        name: str = "",
        free_key: Hashable | None = "free_space",
    ) -> None:
        super().__init__(keys)
        self.name = str(name)
        self.free_key = free_key
        if len(self.keys) != 2:
            raise InputError("keys", f"expected (image_key, mask_key), got {self.keys}")
        self.image_key, self.mask_key = self.keys
        self.lung_key = lung_key
        self.choices = lesion_choices(_bank(bank), subset)
        self.pixel_mm = bank_pixel_mm(self.choices)
        self._image2d, self._mask2d, _ = self.choices.patches("2d")  # once, not per call
        self.index, self.scale, self.seed = int(index), float(scale), int(seed)
        self.edge_px, self.sigma_px = float(edge_px), float(sigma_px)
        self.margin_mm, self.tumor_margin_px = float(margin_mm), int(tumor_margin_px)
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for k in (self.image_key, self.mask_key, self.lung_key):
            if k not in d:
                raise InputError(str(k), "missing from the data dictionary")
        img_in, mask_in = d[self.image_key], d[self.mask_key]
        img = _plane(img_in, self.image_key)
        mask = _plane(mask_in, self.mask_key) > 0
        lungs = _plane(d[self.lung_key], self.lung_key)
        if not np.issubdtype(img.dtype, np.integer):
            if not np.array_equal(img, np.rint(img)):
                raise InputError(str(self.image_key), "HU must be integers (no fractional values)")
            img = img.astype(np.int16)
        if mask.shape != img.shape or lungs.shape != img.shape:
            raise InputError(
                str(self.mask_key),
                f"mask / lungs {mask.shape} / {lungs.shape} vs image {img.shape}",
            )
        if not 0 <= self.index < len(self.choices):
            raise InputError("index", f"must be in [0, {len(self.choices)}), got {self.index}")
        sp = _spacing_of(img_in, self.spacing, self.image_key)
        row = self.choices.table.iloc[self.index]
        hu, m = resample_lesion(
            self._image2d[self.index], self._mask2d[self.index], self.pixel_mm, sp, self.scale
        )
        if self.free_key is not None and self.free_key in d:
            free = _plane(d[self.free_key], self.free_key) > 0
            if free.shape != img.shape:
                raise InputError(str(self.free_key), f"shape {free.shape} vs image {img.shape}")
        else:
            free = free_space_mask(img, lungs, sp, min_distance_mm=self.margin_mm)
        if mask.any():
            free &= ~ndi.binary_dilation(mask, iterations=max(self.tumor_margin_px, 1))
        rng = np.random.default_rng(self.seed)
        place = find_lesion_place(free, m, sp, rng, edge_px=self.edge_px)
        record: dict[str, Any] = {
            "op": "insert_lesion",
            "bank": self.name,
            "lesion_id": str(row["lesion_id"]),
            "generator": str(row.get("generator", "") or ""),
            "lung_rads": str(row["lung_rads"]),
            "scale": self.scale,
            "seed": self.seed,
            "index": self.index,
        }
        if place is None:
            record.update(applied=False, reason="no room")
            return _recorded_skip(d, (self.image_key, self.mask_key), record)
        out, inserted, foot = blend_lesion(
            img, hu, m, place.box, edge_px=self.edge_px, sigma_px=self.sigma_px
        )
        d[self.image_key] = _like(out[None].astype(img.dtype), img_in)
        d[self.mask_key] = _like((mask | inserted)[None].astype(np.uint8), mask_in)
        record.update(
            applied=True,
            centre=list(place.centre),
            box=[
                [place.box[0].start, place.box[0].stop],
                [place.box[1].start, place.box[1].stop],
            ],
            inserted_voxels=int(inserted.sum()),
            footprint_voxels=int(foot.sum()),
        )
        # new tensors with a copy of the inputs' metadata: the caller's keep theirs
        for k in (self.image_key, self.mask_key):
            _append_record(_stamp(d[k]), record)
        return d


class RandInsertLesiond(RandomizableTransform, MapTransform):
    """With probability ``prob``, insert a random lesion (uniform over :func:`lesion_choices`)
    at a scale uniform in ``scale_range``; other arguments as :class:`InsertLesiond`.

    ``bank`` may be several banks, ``{name: bank}``: each call first draws a bank with
    probabilities proportional to ``weights`` (``{name: weight}``, default equal), e.g.
    ``{"real": real_bank, "dcgan": generated}`` with ``weights={"real": 1, "dcgan": 3}`` for a
    real : synthetic ratio of 1 : 3; the record's ``bank`` names the one drawn.
    ``__call__(data, randomize=False)`` replays the last draw.
    """

    def __init__(
        self,
        keys: KeysCollection,
        bank: LesionBank | str | os.PathLike | Mapping[str, LesionBank | str | os.PathLike],
        lung_key: Hashable = "lung_mask",
        prob: float = 1.0,
        scale_range: Sequence[float] = (1.0, 1.0),
        weights: Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo <= hi:
            raise InputError("scale_range", f"must be 0 < low <= high, got {scale_range}")
        self.scale_range = (lo, hi)
        banks = dict(bank) if isinstance(bank, Mapping) else {"": bank}
        if not banks:
            raise InputError("bank", "no lesion bank given")
        w = (
            {k: 1.0 for k in banks}
            if weights is None
            else {k: float(v) for k, v in weights.items()}
        )
        if set(w) != set(banks) or min(w.values()) < 0 or sum(w.values()) <= 0:
            raise InputError(
                "weights",
                f"need one weight >= 0 per bank {sorted(banks)} with a positive sum, got {weights}",
            )
        self.names = list(banks)
        self.p = np.array([w[k] for k in self.names]) / sum(w.values())
        self.inners = {
            k: InsertLesiond(keys, b, lung_key, name=k, **kwargs) for k, b in banks.items()
        }
        self.inner = self.inners[self.names[0]]

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self.inner = self.inners[self.names[int(self.R.choice(len(self.names), p=self.p))]]
        self.inner.index = int(self.R.randint(len(self.inner.choices)))
        self.inner.scale = float(self.R.uniform(*self.scale_range))
        self.inner.seed = int(self.R.randint(2**31 - 1))

    def __call__(self, data: Mapping[Hashable, Any], randomize: bool = True) -> dict[Hashable, Any]:
        if randomize:
            self.randomize()
        if not self._do_transform:
            record = {"op": "insert_lesion", "applied": False, "reason": "prob"}
            return _recorded_skip(dict(data), self.inner.keys, record)
        return self.inner(data)
