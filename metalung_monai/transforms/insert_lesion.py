"""Insert a lesion from a bank into free lung: MONAI dictionary transforms (issue 13, 2D and 3D).

:class:`InsertLesiond` inserts one given lesion of a bank (deterministic: the lesion's row, its
scale and the seed of its placement are arguments); :class:`RandInsertLesiond` draws them
(``prob``, a random lesion of the bank, a scale in ``scale_range``, a placement seed) and
delegates, so ``randomize=False`` replays the last draw. With a bank of real lesions
(``metalung lesion-bank``) this is online copy-paste (TumorCP's peer); with a bank-like folder
of generated lesions (the generator bundles' ``sample.json``) it inserts generated ones.

Data: ``image`` channel-first in integer HU (MetaTensor, tensor or array), either a 2D slice
``(1, H, W)`` or a 3D volume ``(1, H, W, D)`` (MONAI's layout, e.g. after ``Orientationd``
``"PLS"``); ``mask`` the tumour mask of the same shape, ``lung_key`` its lung labels (0 / 1 / 2).
A slice receives a 2D lesion of the bank (``kind == "2d"``), a volume a 3D lesion
(``kind == "3d"``: the bank's ``image3d`` / ``mask3d`` cubes, ``(D, S3, S3)`` = ``(z, y, x)``)
across its slices; a volume with a bank of no 3D lesions (a 2D lesion is never put into 3D
data), or a slice with a bank of no 2D ones, raises :class:`~metalung_monai.errors.InputError`.

* 2D: ``(H, W)`` is taken as ``(y, x)`` as it is; the spacing ``(y, x)`` comes from the first
  two columns of the MetaTensor's affine or from ``spacing``.
* 3D: the volume is seen in the canonical layout ``(z, y, x)``
  (:mod:`metalung_monai.utils.orientation`: a transpose and flips given by the affine, no
  resampling; a plain tensor with ``spacing`` is read as MONAI's RAS axes), its spacing
  ``(z, y, x)`` from the affine, or ``spacing`` given in the array's own axis order
  ``(H, W, D)``. The lesion is resampled to that (anisotropic) spacing; the outputs keep the
  input's layout.

The lesion goes where :func:`~metalung_monai.anatomy.free_space_mask` says parenchyma is free
(``margin_mm`` from vessels, airways, calcifications and the pleura; in 3D across slices too) and
at least ``tumor_margin_px`` voxels from the tumours already in ``mask``;
:mod:`~metalung_monai.synthesis.insertion` resamples, places and blends it (integer HU, the
target's noise texture, nothing outside the footprint changes). The output mask is
``mask | inserted lesion``. Each call appends a record to ``meta["metalung"]`` of the image and
the mask (``op`` ``insert_lesion``, ``applied``, the ``reason`` when not: ``prob`` or
``no room``, the lesion id, generator, scale, centre, box); ``centre`` and ``box`` are indices
of the array as given (``[y, x]`` of a slice; ``[h, w, d]`` of a volume, whatever its
orientation).

Size: by default (``scale_range=(1, 1)``) a lesion keeps its real size in mm (the bank's pixel
size times its pixels), so the Lung-RADS mix of the bank is the mix inserted (the class is a
diameter); ``scale_range`` enlarges it as the thesis' random scale 1-4 did.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform
from scipy import ndimage as ndi

from metalung_monai.anatomy import free_space_mask
from metalung_monai.errors import InputError, LesionTooSmallError
from metalung_monai.synthesis.bank import LesionBank, read_bank
from metalung_monai.synthesis.generative import bank_pixel_mm
from metalung_monai.synthesis.insertion import blend_lesion, find_lesion_place, resample_lesion
from metalung_monai.transforms.metalung.array import (
    _append_record,
    _Canonical,
    _contiguous,
    _like,
    _np,
    _stamp,
)
from metalung_monai.transforms.metalung.functional import _bbox
from metalung_monai.utils.orientation import array_spacing

__all__ = ["FreeSpaced", "InsertLesiond", "RandInsertLesiond", "lesion_choices"]

_KINDS = {2: "2d", 3: "3d"}


def _is_generated(bank: LesionBank) -> bool:
    t = bank.table
    return "source" in t.columns and bool((t["source"] == "generated").all())


def _select(bank: LesionBank, subset: str | None, kind: str) -> LesionBank:
    """The rows of ``kind`` a transform draws from (possibly none): a real bank's ``subset``
    rows, every row of a generated bank."""
    return bank.select(kind=kind, subset=None if _is_generated(bank) else subset)


def lesion_choices(bank: LesionBank, subset: str | None = "train", kind: str = "2d") -> LesionBank:
    """The lesions of ``kind`` (``"2d"`` / ``"3d"``) a transform draws from: a real bank's
    ``subset`` rows (never ``hold``, the realism baseline), or every row of a generated bank."""
    sel = _select(bank, subset, kind)
    if len(sel) == 0:
        raise InputError(
            str(bank.meta.get("path", "bank")),
            f"no {kind.upper()} lesions to insert (subset {subset!r})",
        )
    return sel


def _voxel_mm_3d(bank: LesionBank) -> float:
    """Voxel size (mm) of a bank's 3D cubes: ``context_mm / model_size`` (isotropic, one value)."""
    t = bank.table[bank.table["kind"] == "3d"]
    where = str(bank.meta.get("path", "bank"))
    if len(t) == 0 or "context_mm" not in t.columns:
        raise InputError(where, "needs 3D lesions with a 'context_mm' column for the voxel size")
    px = np.unique(np.round(t["context_mm"].to_numpy(float) / t["model_size"].to_numpy(float), 6))
    if px.size != 1 or not np.isfinite(px[0]) or px[0] <= 0:
        raise InputError(where, f"3D lesions of several or invalid voxel sizes: {px.tolist()}")
    return float(px[0])


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


def _spatial_ndim(x: Any, key: Hashable) -> int:
    shape = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
    if len(shape) not in (3, 4) or shape[0] != 1:
        raise InputError(
            str(key),
            f"expected a channel-first 2D slice (1, H, W) or 3D volume (1, H, W, D), got {shape}",
        )
    return len(shape) - 1


class _Grid:
    """How a sample is seen by the insertion: a 2D slice ``(1, H, W)`` as ``(y, x)`` itself,
    a 3D volume ``(1, H, W, D)`` through its canonical ``(z, y, x)`` view (numpy views, no
    copy); ``spacing`` in mm in the seen order."""

    def __init__(self, img: Any, key: Hashable, spacing: tuple[float, ...] | None) -> None:
        self.key = key
        self.nd = _spatial_ndim(img, key)
        self.kind = _KINDS[self.nd]
        self.shape = tuple(img.shape)
        if self.nd == 2:
            self.cv = None
            self.spacing = _spacing_of(img, spacing, key)
            return
        if spacing is None and not isinstance(img, MetaTensor):
            raise InputError(
                str(key), "no spacing: give spacing=(h, w, d) mm (array order) or a MetaTensor"
            )
        if spacing is not None and len(spacing) != 3:
            raise InputError("spacing", f"a volume needs 3 sizes (array order), got {spacing}")
        self.cv = _Canonical(img, spacing=spacing, name=str(key))
        self.spacing = tuple(float(s) for s in self.cv.spacing)

    def view(self, x: Any, key: Hashable, contiguous: bool = False) -> np.ndarray:
        """The seen (spatial) view of another channel-first array of the image's shape;
        ``contiguous``: a C-contiguous copy of a volume's view (OpenCV's blocked transpose for
        MONAI's layout: a whole-volume pass over the strided view is many times slower)."""
        if self.cv is None:
            return _plane(x, key)
        if tuple(x.shape) != self.shape:
            raise InputError(str(key), f"shape {tuple(x.shape)} vs image {self.shape}")
        v = self.cv.view(x)[0]
        return _contiguous(v) if contiguous else v

    def array_index(self, centre: Sequence[int], box: Sequence[slice]) -> tuple[list, list]:
        """``centre`` and ``box`` of the seen view as indices of the array as given."""
        if self.cv is None:
            return list(centre), [[b.start, b.stop] for b in box]
        n_sp = self.shape[1:]
        c_out: list[int] = [0] * self.nd
        b_out: list[list[int]] = [[0, 0]] * self.nd
        for k, (c, b) in enumerate(zip(centre, box)):
            ax, n = self.cv.axes.perm[k], n_sp[self.cv.axes.perm[k]]
            if self.cv.axes.flip[k]:
                c_out[ax], b_out[ax] = n - 1 - int(c), [n - int(b.stop), n - int(b.start)]
            else:
                c_out[ax], b_out[ax] = int(c), [int(b.start), int(b.stop)]
        return c_out, b_out


def _recorded_skip(d: dict, keys: Sequence[Hashable], record: dict) -> dict:
    """``d`` unchanged but for ``record`` appended to copies of its MetaTensors at ``keys``
    (the caller's tensors keep their metadata)."""
    for k in keys:
        if isinstance(d.get(k), MetaTensor):
            d[k] = _stamp(d[k].clone())
            _append_record(d[k], record)
    return d


class FreeSpaced(MapTransform):
    """Free lung parenchyma of a 2D slice ``(1, H, W)`` or a 3D volume ``(1, H, W, D)``, uint8 of
    the image's shape under ``out_key`` (:func:`~metalung_monai.anatomy.free_space_mask`,
    ``margin_mm`` from dense structures and the pleura, in 3D across slices): deterministic, so
    placed before the random transforms of a MONAI pipeline it is computed once per case by
    ``CacheDataset`` and :class:`InsertLesiond` only places and blends.

    Args:
        keys: the image key (HU).
        lung_key: key of the lung labels; out_key: where the mask goes.
        margin_mm: as :class:`InsertLesiond` (use the same value).
        spacing: ``(y, x)`` mm of a slice, ``(h, w, d)`` mm (array order) of a volume; ``None``
            takes it from the image's affine (MetaTensor).
        cache_mb: size of an in-process cache of maps keyed by the content of the image, the
            lungs and the geometry (a BLAKE2b digest; least recently used first out), for
            pipelines on a plain ``Dataset`` where the same case comes back every epoch: a hit
            returns the same map the computation would (0 turns it off). Per process: each
            ``DataLoader`` worker keeps its own, so use ``persistent_workers``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        lung_key: Hashable = "lung_mask",
        out_key: Hashable = "free_space",
        margin_mm: float = 1.0,
        spacing: Sequence[float] | None = None,
        cache_mb: float = 256.0,
    ) -> None:
        super().__init__(keys)
        self.lung_key, self.out_key = lung_key, out_key
        self.margin_mm = float(margin_mm)
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        if not cache_mb >= 0:
            raise InputError("cache_mb", f"expected a size >= 0 in MB, got {cache_mb}")
        self.cache_bytes = int(cache_mb * 2**20)
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        #: cache hits and misses since construction (a miss computes the map)
        self.hits = self.misses = 0

    def _key(self, img: np.ndarray, lungs: np.ndarray, spacing: Sequence[float]) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        for a in (img, lungs):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(memoryview(a).cast("B"))
        h.update(repr((tuple(float(s) for s in spacing), self.margin_mm)).encode())
        return h.digest()

    def _free(self, img: np.ndarray, lungs: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        if self.cache_bytes <= 0:
            return free_space_mask(img, lungs, spacing, min_distance_mm=self.margin_mm)
        key = self._key(img, lungs, spacing)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return hit
        self.misses += 1
        free = free_space_mask(img, lungs, spacing, min_distance_mm=self.margin_mm)
        free.setflags(write=False)  # shared by later hits: nobody may change it
        if free.nbytes <= self.cache_bytes:
            self._cache[key] = free
            self._cached_bytes += free.nbytes
            while self._cached_bytes > self.cache_bytes:
                self._cached_bytes -= self._cache.popitem(last=False)[1].nbytes
        return free

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            for k in (key, self.lung_key):
                if k not in d:
                    raise InputError(str(k), "missing from the data dictionary")
            grid = _Grid(d[key], key, self.spacing)
            img = grid.view(d[key], key, contiguous=True)
            lungs = grid.view(d[self.lung_key], self.lung_key, contiguous=True)
            free = self._free(img, lungs, grid.spacing)
            if grid.nd == 2:
                out = free[None].astype(np.uint8)
            else:  # back into the image's own layout
                out = np.zeros(grid.shape, np.uint8)
                grid.view(out, self.out_key)[...] = free
            d[self.out_key] = torch.from_numpy(out)
        return d


def _spacing_of(img: Any, spacing: tuple[float, ...] | None, key: Hashable) -> tuple[float, float]:
    if spacing is not None:
        return spacing  # type: ignore[return-value]
    if isinstance(img, MetaTensor):
        return array_spacing(img.affine, 2)  # type: ignore[return-value]
    raise InputError(str(key), "no spacing: give spacing=(y, x) or a MetaTensor")


def _near(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``ndi.binary_dilation(mask, iterations=iterations)``, computed in the mask's box only."""
    out = np.zeros(mask.shape, bool)
    box = _bbox(mask, iterations)
    if box is not None:
        out[box] = ndi.binary_dilation(mask[box], iterations=iterations)
    return out


class InsertLesiond(MapTransform):
    """Insert lesion ``index`` (a row of :func:`lesion_choices` of the data's kind: 2D lesions
    for a slice, 3D ones for a volume) at ``scale``, placed with the generator seeded by
    ``seed`` (see the module docstring).

    Args:
        keys: ``(image_key, mask_key)``.
        bank: a :class:`~metalung_monai.synthesis.bank.LesionBank` or its folder.
        lung_key: key of the lung labels.
        index, scale, seed: which lesion, its size factor, the placement seed.
        subset: rows of a real bank to draw from (``"train"``).
        edge_px: width of the blending band outside the lesion mask (pixels of the target; in
            3D voxels of the finest axis, the band isotropic in mm).
        sigma_px: low-pass of the lesion / high-pass of the target's noise (pixels, as
            ``edge_px``).
        margin_mm: free-space distance required from dense structures and the pleura.
        tumor_margin_px: distance kept from the tumours already in the mask (voxels).
        spacing: ``(y, x)`` mm of a slice, ``(h, w, d)`` mm (array order) of a volume; ``None``
            takes it from the image's affine (MetaTensor).
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
        b = _bank(bank)
        self.bank_name = str(b.meta.get("path", "bank"))
        self.subset = subset
        #: the 2D lesions (slices) and the 3D lesions (volumes) drawn from; either may be empty
        self.choices = _select(b, subset, "2d")
        self.choices3d = _select(b, subset, "3d")
        if len(self.choices) == 0 and len(self.choices3d) == 0:
            raise InputError(
                self.bank_name, f"no 2D lesions (nor 3D ones) to insert (subset {subset!r})"
            )
        self.pixel_mm = bank_pixel_mm(self.choices) if len(self.choices) else None
        self.voxel_mm3d = _voxel_mm_3d(self.choices3d) if len(self.choices3d) else None
        # the model-size patches, once (not per call); empty arrays for a kind with no rows
        self._image2d, self._mask2d, _ = self.choices.patches("2d")
        self._image3d, self._mask3d, _ = self.choices3d.patches("3d")
        self.index, self.scale, self.seed = int(index), float(scale), int(seed)
        self.edge_px, self.sigma_px = float(edge_px), float(sigma_px)
        self.margin_mm, self.tumor_margin_px = float(margin_mm), int(tumor_margin_px)
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)

    def choices_for_kind(self, kind: str) -> LesionBank:
        """The lesions drawn for data of ``kind`` (``"2d"`` / ``"3d"``), possibly none."""
        return self.choices if kind == "2d" else self.choices3d

    def choices_for(self, kind: str, key: Hashable | None = None, shape: Any = None) -> LesionBank:
        """The lesions drawn for data of ``kind`` (``"2d"`` slices, ``"3d"`` volumes); raises
        :class:`InputError` naming the bank (and ``key`` / ``shape`` of the data) when the bank
        has none of that kind."""
        sel = self.choices_for_kind(kind)
        if len(sel) == 0:
            where = "" if key is None else f" for {key!r}"
            where += "" if shape is None else f" {tuple(shape)}"
            why = (
                "a 3D volume takes 3D lesions only (a 2D lesion goes only into 2D data)"
                if kind == "3d"
                else "a 2D slice takes 2D lesions only (a 3D lesion goes only into a volume)"
            )
            raise InputError(
                self.bank_name,
                f"no {kind.upper()} lesions to insert{where} (subset {self.subset!r}): {why}",
            )
        return sel

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for k in (self.image_key, self.mask_key, self.lung_key):
            if k not in d:
                raise InputError(str(k), "missing from the data dictionary")
        img_in, mask_in = d[self.image_key], d[self.mask_key]
        grid = _Grid(img_in, self.image_key, self.spacing)
        img = grid.view(img_in, self.image_key)
        mask = grid.view(mask_in, self.mask_key, contiguous=True) > 0
        lungs = grid.view(d[self.lung_key], self.lung_key)
        integer = np.issubdtype(img.dtype, np.integer)
        if not integer and not np.array_equal(img, np.rint(img)):
            raise InputError(str(self.image_key), "HU must be integers (no fractional values)")
        if mask.shape != img.shape or lungs.shape != img.shape:
            raise InputError(
                str(self.mask_key),
                f"mask / lungs {mask.shape} / {lungs.shape} vs image {img.shape}",
            )
        choices = self.choices_for(grid.kind, self.image_key, grid.shape)
        if not 0 <= self.index < len(choices):
            raise InputError("index", f"must be in [0, {len(choices)}), got {self.index}")
        sp = grid.spacing
        row = choices.table.iloc[self.index]
        if grid.nd == 2:
            patch, patch_mask, px = self._image2d, self._mask2d, self.pixel_mm
        else:
            patch, patch_mask, px = self._image3d, self._mask3d, self.voxel_mm3d
        try:
            hu, m = resample_lesion(patch[self.index], patch_mask[self.index], px, sp, self.scale)
        except LesionTooSmallError:  # smaller than a voxel of this image: a recorded skip
            hu = m = None
        if self.free_key is not None and self.free_key in d:
            free = grid.view(d[self.free_key], self.free_key, contiguous=True) > 0
            if free.shape != img.shape:
                raise InputError(str(self.free_key), f"shape {free.shape} vs image {img.shape}")
        else:
            src = img if grid.nd == 2 else grid.view(img_in, self.image_key, contiguous=True)
            free = free_space_mask(
                src if integer else src.astype(np.int16),
                grid.view(d[self.lung_key], self.lung_key, contiguous=True),
                sp,
                min_distance_mm=self.margin_mm,
            )
        if mask.any():
            free &= ~_near(mask, max(self.tumor_margin_px, 1))
        rng = np.random.default_rng(self.seed)
        place = None if m is None else find_lesion_place(free, m, sp, rng, edge_px=self.edge_px)
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
            record.update(applied=False, reason="too small" if m is None else "no room")
            return _recorded_skip(d, (self.image_key, self.mask_key), record)
        # blend in a window around the box (the blend reads no further: the same voxels as on
        # the whole image), then write it into a copy of the input in its own layout
        pad = max(int(math.ceil(3 * self.sigma_px)), 0)
        win = tuple(
            slice(max(b.start - pad, 0), min(b.stop + pad, n)) for b, n in zip(place.box, img.shape)
        )
        local = tuple(slice(b.start - w.start, b.stop - w.start) for b, w in zip(place.box, win))
        sub = img[win] if integer else img[win].astype(np.int16)
        out_sub, inserted_sub, foot_sub = blend_lesion(
            sub, hu, m, local, edge_px=self.edge_px, sigma_px=self.sigma_px, spacing=sp
        )
        out = _np(img_in).copy()
        grid.view(out, self.image_key)[win] = out_sub
        new_mask = (_np(mask_in) > 0).astype(np.uint8)
        grid.view(new_mask, self.mask_key)[place.box] |= m
        d[self.image_key] = _like(out, img_in)
        d[self.mask_key] = _like(new_mask, mask_in)
        centre, box = grid.array_index(place.centre, place.box)
        record.update(
            applied=True,
            centre=centre,
            box=box,
            inserted_voxels=int(inserted_sub.sum()),
            footprint_voxels=int(foot_sub.sum()),
        )
        # new tensors with a copy of the inputs' metadata: the caller's keep theirs
        for k in (self.image_key, self.mask_key):
            _append_record(_stamp(d[k]), record)
        return d


def _kind_of(data: Any, key: Hashable) -> str:
    """``"3d"`` for a channel-first volume under ``key``, ``"2d"`` otherwise (or no data)."""
    x = data.get(key) if isinstance(data, Mapping) else None
    return "3d" if x is not None and len(getattr(x, "shape", ())) == 4 else "2d"


class RandInsertLesiond(RandomizableTransform, MapTransform):
    """With probability ``prob``, insert a random lesion (uniform over the bank's lesions of the
    data's kind: 2D for a slice, 3D for a volume) at a scale uniform in ``scale_range``; other
    arguments as :class:`InsertLesiond`.

    ``bank`` may be several banks, ``{name: bank}``: each call first draws a bank with
    probabilities proportional to ``weights`` (``{name: weight}``, default equal), e.g.
    ``{"real": real_bank, "dcgan": generated}`` with ``weights={"real": 1, "dcgan": 3}`` for a
    real : synthetic ratio of 1 : 3; the record's ``bank`` names the one drawn. Banks with no
    lesion of the data's kind are left out of the draw (the others' weights renormalised); none
    with any raises :class:`InputError`. ``__call__(data, randomize=False)`` replays the last
    draw.
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

    def _bank_probabilities(self, kind: str) -> np.ndarray:
        """``self.p`` over the banks with lesions of ``kind`` (renormalised when some have none)."""
        has = np.array([len(self.inners[k].choices_for_kind(kind)) > 0 for k in self.names])
        if has.all():
            return self.p
        if not has.any():
            self.inners[self.names[0]].choices_for(kind, self.keys[0])  # raises: none of kind
        p = self.p * has
        if p.sum() <= 0:
            raise InputError(
                "weights",
                f"the banks with {kind.upper()} lesions "
                f"{[k for k, h in zip(self.names, has) if h]} all have weight 0",
            )
        return p / p.sum()

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        kind = _kind_of(data, self.keys[0])
        p = self._bank_probabilities(kind)
        self.inner = self.inners[self.names[int(self.R.choice(len(self.names), p=p))]]
        self.inner.index = int(self.R.randint(len(self.inner.choices_for(kind, self.keys[0]))))
        self.inner.scale = float(self.R.uniform(*self.scale_range))
        self.inner.seed = int(self.R.randint(2**31 - 1))

    def __call__(self, data: Mapping[Hashable, Any], randomize: bool = True) -> dict[Hashable, Any]:
        if randomize:
            self.randomize(data)
        if not self._do_transform:
            record = {"op": "insert_lesion", "applied": False, "reason": "prob"}
            return _recorded_skip(dict(data), self.inner.keys, record)
        return self.inner(data)
