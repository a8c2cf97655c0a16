"""MetaLung array transforms: the six HU-preserving operations on channel-first images.

Inputs are channel-first arrays ``(C, *spatial)`` with 2 or 3 spatial axes: ``MetaTensor``,
``torch.Tensor`` or ``numpy.ndarray``; the output has the input's type, dtype and device, and a
``MetaTensor`` keeps its metadata. Units are Hounsfield units (air -1024, water 0).

Orientation: the patient's left-right axis and the axial plane are read from the ``affine`` of a
``MetaTensor`` (RAS by default, ``meta["space"]``), so a mirror is always a left-right mirror
whatever the file's storage order. Arrays without orientation (plain tensors, identity affine)
can say how they are stored with ``axcodes`` (nibabel convention: the direction each axis points
to, e.g. ``"PL"`` for a 2D slice in radiological display, rows to posterior, columns to the
patient's left; ``"LPS"`` for an ITK/DICOM-ordered volume).

New anatomy, same affine: MetaLung's geometric operations create a new case (a mirrored patient
has the tumour in the other lung), so the affine is *not* changed; the operation is recorded in
``applied_operations`` (mirror, image rotation) so that ``inverse`` / ``Invertd`` can undo it, and
every operation appends a JSON record to ``meta["metalung"]`` (see :func:`metalung_records`),
including ``"applied": false`` when it could not be carried out.

Masks: a tumour mask must have the image's spatial shape (refused otherwise, naming the array).
Nonzero is tumour; the mask an operation returns is always ``{0, 1}`` in the input mask's own
dtype (:func:`binary_mask`: ``{0, 255}`` or ``{0, 2}`` in, ``{0, 1}`` out; a ``{0, 1}`` mask keeps
its values). :class:`MirrorLR` and :class:`RandRotateImage` act on one array of any kind (image,
mask or lung labels 1/2), so they only move values; their dictionary twins take ``mask_keys`` to
apply the convention, and :class:`~.dictionary.MetaLungd` applies it to its mask key for every
operation.

None of these transforms is lazy: they always execute eagerly and exactly, also inside
``Compose(..., lazy=True)`` (MONAI 1.6.1's lazy resampling ignores ``mode="nearest"``).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import InvertibleTransform, RandomizableTransform
from monai.utils import TraceKeys, TransformBackends, convert_to_dst_type

from ...errors import InputError
from ...utils.orientation import CanonicalAxes, canonical_axes, canonical_spacing
from . import functional as F

__all__ = [
    "METALUNG_META_KEY",
    "metalung_records",
    "binary_mask",
    "axcodes_affine",
    "MirrorLR",
    "RandMirrorLR",
    "RandRotateImage",
    "RandRelocateTumor",
    "RandRotateTumor",
    "RandIntegerNoise",
    "RandTumorNoise",
]

#: key of ``MetaTensor.meta`` holding the JSON list of MetaLung operation records
METALUNG_META_KEY = "metalung"
_MAX_SEED = 2**32 - 1

_AXCODE_VECTORS = {
    "R": (1, 0, 0),
    "L": (-1, 0, 0),
    "A": (0, 1, 0),
    "P": (0, -1, 0),
    "S": (0, 0, 1),
    "I": (0, 0, -1),
}


# --------------------------------------------------------------------------- helpers
def axcodes_affine(axcodes: str, spacing: Sequence[float] | None = None) -> np.ndarray:
    """A 4x4 RAS affine for an array whose axes point towards ``axcodes`` (e.g. ``"PL"``, ``"LPS"``)."""
    codes = axcodes.upper()
    world = [{"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}.get(c) for c in codes]
    if not codes or None in world or len(set(world)) != len(codes):
        raise ValueError(f"axcodes must name distinct axes from R/L, A/P, S/I, got '{axcodes}'")
    sp = [1.0] * len(codes) if spacing is None else [float(s) for s in spacing]
    aff = np.eye(4)
    aff[:3, : len(codes)] = 0.0
    for i, c in enumerate(codes):
        aff[:3, i] = np.asarray(_AXCODE_VECTORS[c], dtype=float) * sp[i]
    return aff


def metalung_records(img: Any) -> list[dict]:
    """The MetaLung operation records of a ``MetaTensor`` (oldest first; ``[]`` if none)."""
    meta = getattr(img, "meta", None)
    if not meta or METALUNG_META_KEY not in meta:
        return []
    raw = meta[METALUNG_META_KEY]
    if isinstance(raw, (list, tuple)):  # a collated batch: one JSON string per item
        return [json.loads(r) for r in raw]  # type: ignore[return-value]
    return json.loads(raw)


def _stamp(*imgs: Any):
    """Give every MetaTensor a ``meta["metalung"]`` entry (``"[]"`` if it has none yet).

    MONAI collates a batch's metadata key by key, so samples that skipped an operation must carry
    the same keys as those that went through it. Returns its argument(s).
    """
    for img in imgs:
        if isinstance(img, MetaTensor) and METALUNG_META_KEY not in img.meta:
            img.meta[METALUNG_META_KEY] = "[]"
    return imgs[0] if len(imgs) == 1 else imgs


def _append_record(img: Any, record: dict) -> None:
    if isinstance(img, MetaTensor):
        records = metalung_records(img)
        records.append(record)
        img.meta[METALUNG_META_KEY] = json.dumps(records)


def _spatial_ndim(img: NdarrayOrTensor, name: str) -> int:
    nd = len(img.shape) - 1
    if nd not in (2, 3):
        raise InputError(
            name,
            f"expected a channel-first 2D or 3D array (C, H, W[, D]), got shape {tuple(img.shape)}",
        )
    return nd


def _affine_of(
    img: NdarrayOrTensor, nd: int, axcodes: str | None, spacing: Sequence[float] | None
) -> tuple[np.ndarray, str]:
    if axcodes is not None:
        sp = (
            spacing
            if spacing is not None
            else (
                np.linalg.norm(np.asarray(img.affine, dtype=float)[:nd, :nd], axis=0)
                if isinstance(img, MetaTensor)
                else None
            )
        )
        return axcodes_affine(axcodes, sp), "RAS"
    if isinstance(img, MetaTensor):
        aff = np.asarray(img.affine, dtype=float)
        space = str(img.meta.get("space", "RAS"))
        if spacing is not None:
            aff = aff.copy()
            n = min(nd, aff.shape[0] - 1)
            aff[:n, :n] = (
                aff[:n, :n]
                / np.linalg.norm(aff[:n, :n], axis=0)
                * np.asarray(spacing[:n], dtype=float)
            )
        return aff, space
    aff = np.eye(4)
    if spacing is not None:
        aff[np.arange(nd), np.arange(nd)] = np.asarray(spacing, dtype=float)
    return aff, "RAS"


@functools.lru_cache(maxsize=64)
def _axes_and_spacing(
    affine_bytes: bytes, shape: tuple, nd: int, space: str
) -> tuple[CanonicalAxes, tuple[float, ...]]:
    """Canonical axes and spacing of an affine (cached: every key of a sample shares one)."""
    affine = np.frombuffer(affine_bytes, dtype=float).reshape(shape)
    axes = canonical_axes(affine, nd, space)
    return axes, tuple(float(v) for v in canonical_spacing(affine, axes))


class _Canonical:
    """A channel-first array seen in the canonical layout ``(C, [z,] y, x)`` (numpy, CPU)."""

    def __init__(
        self,
        img: NdarrayOrTensor,
        axcodes: str | None = None,
        spacing: Sequence[float] | None = None,
        name: str = "image",
    ):
        self.nd = _spatial_ndim(img, name)
        affine, space = _affine_of(img, self.nd, axcodes, spacing)
        self.axes, self.spacing = _axes_and_spacing(
            np.ascontiguousarray(affine, dtype=float).tobytes(), affine.shape, self.nd, space
        )
        arr = _np(img)
        self.perm = (0,) + tuple(p + 1 for p in self.axes.perm)
        self.flips = tuple(k + 1 for k, f in enumerate(self.axes.flip) if f)
        view = np.transpose(arr, self.perm)
        self.array = np.flip(view, self.flips) if self.flips else view

    def view(self, other: NdarrayOrTensor) -> np.ndarray:
        """Another array of the same shape seen through the same canonical mapping."""
        arr = _np(other)
        view = np.transpose(arr, self.perm)
        return np.flip(view, self.flips) if self.flips else view

    @property
    def lr_axis(self) -> int:
        """Axis of the original array (channel included) along the patient's left-right."""
        return self.perm[-1]

    def axial_plane(self) -> tuple[int, int, int]:
        """The original array's axes of the axial plane, in increasing order, and orientation.

        Returns ``(a, b, sign)``: axes (channel included) that hold canonical ``y`` and ``x``
        (in array order), and ``sign`` = +1 when turning the ``(a, b)`` plane counter-clockwise
        is a counter-clockwise turn in radiological display, -1 when it is clockwise (the axes are
        swapped or one of them is reversed). Lets rotations run in the array's own layout, with
        no transposed copy of a large volume.
        """
        ya, xa = self.perm[-2], self.perm[-1]
        fy, fx = (len(self.perm) - 2) in self.flips, (len(self.perm) - 1) in self.flips
        sign = (-1 if ya > xa else 1) * (-1 if fy else 1) * (-1 if fx else 1)
        return min(ya, xa), max(ya, xa), sign


def _np(x: NdarrayOrTensor) -> np.ndarray:
    """A numpy view of ``x`` (CPU tensors and MetaTensors without a metadata round trip)."""
    if isinstance(x, MetaTensor):
        x = x.as_tensor()
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _like(out: np.ndarray, ref: NdarrayOrTensor) -> NdarrayOrTensor:
    """``out`` with the type, dtype, device and metadata of ``ref``."""
    if isinstance(ref, torch.Tensor):
        res = torch.as_tensor(np.ascontiguousarray(out), device=ref.device).to(ref.dtype)
        if isinstance(ref, MetaTensor):
            if not get_track_meta():
                return res
            mt = MetaTensor(res)
            mt.copy_meta_from(ref, copy_attr=True)
            return mt
        return res
    return convert_to_dst_type(np.ascontiguousarray(out), ref, dtype=np.asarray(ref).dtype)[0]


@functools.lru_cache(maxsize=16)
def _rotation_map(shape_ab: tuple[int, int], angle: float) -> np.ndarray:
    rot = F.rotation_map(shape_ab, angle)
    rot.setflags(write=False)
    return rot


def _rotate_native(
    img: NdarrayOrTensor, angle: float, fill: float, axcodes: str | None, undo: bool = False
) -> np.ndarray:
    """Rotate ``img`` (channel first) by ``angle`` degrees in the axial plane, in its own layout.

    The angle is the turn seen in radiological display; the map is built once per (shape, angle)
    and shared by every key of a sample. With ``undo``, :func:`.functional.unrotate_axial`.
    """
    view = _Canonical(img, axcodes)
    a, b, sign = view.axial_plane()
    arr = _np(img)
    moved = np.moveaxis(arr, (a, b), (-2, -1))  # (..., A, B) views
    angle_ab = float(angle) * sign
    if undo:
        out = F.unrotate_axial(np.ascontiguousarray(moved), angle_ab, fill=fill)
    else:
        out = F.rotate_axial(
            moved, angle_ab, fill=fill, rotation=_rotation_map(moved.shape[-2:], angle_ab)
        )
    return np.moveaxis(out, (-2, -1), (a, b))


def _seeded_rng(R: np.random.RandomState) -> np.random.Generator:
    """A fast numpy ``Generator`` seeded from MONAI's ``self.R`` (so ``set_random_state`` rules)."""
    return np.random.default_rng(int(R.randint(0, _MAX_SEED, dtype=np.int64)))


def _check_pair(
    img: NdarrayOrTensor, mask: NdarrayOrTensor, name: str = "mask", image_name: str = "image"
) -> None:
    """Refuse a companion array (``mask``, ``lungs``) whose spatial shape is not the image's."""
    if tuple(img.shape[1:]) != tuple(mask.shape[1:]):
        raise InputError(
            name,
            f"spatial shape {tuple(mask.shape[1:])} does not match the {image_name}'s "
            f"{tuple(img.shape[1:])} (channel-first arrays on the same grid are expected)",
        )


_BINARY_CHUNK = 1 << 18  # elements per step of the float check (fits in the CPU cache)


def _is_binary(arr: np.ndarray) -> bool:
    """Whether every value of ``arr`` is 0 or 1, in about one pass over memory.

    Integer arrays: their maximum (and minimum). Float arrays, chunk by chunk: the nonzero count,
    and only where there are nonzeros whether they all equal 1 (NaN, negative and fractional
    values do not), so a mostly empty tumour mask costs little more than reading it.
    """
    if arr.dtype == np.bool_ or arr.size == 0:
        return True
    if np.issubdtype(arr.dtype, np.integer):
        return int(arr.max()) <= 1 and (
            np.issubdtype(arr.dtype, np.unsignedinteger) or int(arr.min()) >= 0
        )
    flat = arr.reshape(-1)
    for start in range(0, flat.size, _BINARY_CHUNK):
        chunk = flat[start : start + _BINARY_CHUNK]
        nz = np.count_nonzero(chunk)
        if nz and np.count_nonzero(chunk == 1) != nz:
            return False
    return True


def binary_mask(mask: NdarrayOrTensor) -> NdarrayOrTensor:
    """The MetaLung mask convention: ``mask`` itself when its values are all 0 or 1, otherwise
    ``mask != 0`` as 0/1 in the mask's own type, dtype, device and metadata.

    Every MetaLung operation returns its tumour mask in this form ({0, 255} or {0, 2} in, {0, 1}
    out; a {0, 1} mask comes back as it went in).
    """
    arr = _np(mask)
    if _is_binary(arr):
        return mask
    return _like((arr != 0).astype(arr.dtype), mask)


def _angle(R: np.random.RandomState, angle_range: tuple[float, float], random_sign: bool) -> float:
    lo, hi = float(angle_range[0]), float(angle_range[1])
    if not 0 <= lo <= hi:
        raise ValueError(
            f"angle_range must be (min, max) degrees with 0 <= min <= max, got {angle_range}"
        )
    angle = float(R.uniform(lo, hi))
    return -angle if random_sign and R.rand() < 0.5 else angle


# --------------------------------------------------------------------------- 1. mirror
class MirrorLR(InvertibleTransform):
    """Mirror along the patient's left-right axis (MetaLung op 1). Exact, invertible.

    The axis is found from the image's affine (or ``axcodes``), not guessed from the array
    layout, so a tumour in the left lung ends up in the right lung for any storage order.

    Args:
        axcodes: orientation of arrays without a meaningful affine (see the module docstring).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, axcodes: str | None = None) -> None:
        self.axcodes = axcodes

    def lr_axis(self, img: NdarrayOrTensor) -> int:
        """Axis of ``img`` (channel first, so >= 1) along the patient's left-right direction."""
        nd = _spatial_ndim(img, "image")
        affine, space = _affine_of(img, nd, self.axcodes, None)
        ax = canonical_axes(affine, nd, space)
        return ax.perm[-1] + 1

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Args: img: channel-first ``(C, H, W[, D])`` array. Returns the mirrored array."""
        axis = self.lr_axis(img)
        if isinstance(img, torch.Tensor):
            out = torch.flip(img, (axis,))
            if isinstance(img, MetaTensor) and not isinstance(out, MetaTensor) and get_track_meta():
                out = _like(out.numpy(), img)
        else:
            out = np.ascontiguousarray(np.flip(img, axis))
        if isinstance(out, MetaTensor):
            _append_record(out, {"op": "mirror", "applied": True, "axis": int(axis)})
        return (
            self.push_transform(out, extra_info={"axis": int(axis)})
            if isinstance(out, MetaTensor)
            else out
        )

    def inverse(self, data: NdarrayOrTensor) -> NdarrayOrTensor:
        xform = self.pop_transform(data)
        axis = int(xform[TraceKeys.EXTRA_INFO]["axis"])
        return (
            torch.flip(data, (axis,))
            if isinstance(data, torch.Tensor)
            else np.flip(data, axis).copy()
        )


class RandMirrorLR(RandomizableTransform, InvertibleTransform):
    """With probability ``prob``, mirror along the patient's left-right axis (see :class:`MirrorLR`)."""

    backend = MirrorLR.backend

    def __init__(self, prob: float = 0.5, axcodes: str | None = None) -> None:
        RandomizableTransform.__init__(self, prob)
        self.mirror = MirrorLR(axcodes)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize(None)
        out = self.mirror(img) if self._do_transform else img
        if isinstance(out, MetaTensor):
            if self._do_transform:
                out.applied_operations.pop()  # re-pushed below under this transform's id
            self.push_transform(out, extra_info={"axis": self.mirror.lr_axis(img)})
        return _stamp(out)

    def inverse(self, data: NdarrayOrTensor) -> NdarrayOrTensor:
        xform = self.pop_transform(data)
        if not xform[TraceKeys.DO_TRANSFORM]:
            return data
        axis = int(xform[TraceKeys.EXTRA_INFO]["axis"])
        return (
            torch.flip(data, (axis,))
            if isinstance(data, torch.Tensor)
            else np.flip(data, axis).copy()
        )


# --------------------------------------------------------------------------- 3. rotate image
class RandRotateImage(RandomizableTransform, InvertibleTransform):
    """Rotate the whole image in the axial plane by a random angle (MetaLung op 3).

    Nearest neighbour, so every output voxel is an input value or the padding ``fill``; padding
    is air (``-1024`` HU) for images and ``0`` for masks (0 HU would be soft tissue). In 3D every
    axial slice turns by the same angle about the same axis.

    Args:
        prob: probability of rotating.
        angle_range: ``(min, max)`` absolute angle in degrees (1-90 as in the thesis).
        random_sign: turn clockwise or counter-clockwise with equal probability.
        fill: padding value (HU for images; use 0 for masks).
        axcodes: orientation of arrays without a meaningful affine.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(
        self,
        prob: float = 1.0,
        angle_range: tuple[float, float] = (1.0, 90.0),
        random_sign: bool = True,
        fill: float = F.AIR_HU,
        axcodes: str | None = None,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.angle_range = angle_range
        self.random_sign = random_sign
        self.fill = fill
        self.axcodes = axcodes
        self.angle = 0.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.angle = _angle(self.R, self.angle_range, self.random_sign)

    def rotate(self, img: NdarrayOrTensor, angle: float, fill: float) -> NdarrayOrTensor:
        """Deterministic rotation of ``img`` by ``angle`` degrees (no trace, no record)."""
        return _like(_rotate_native(img, angle, fill, self.axcodes), img)

    def __call__(
        self, img: NdarrayOrTensor, randomize: bool = True, fill: float | None = None
    ) -> NdarrayOrTensor:
        if randomize:
            self.randomize()
        fill = self.fill if fill is None else fill
        out = self.rotate(img, self.angle, fill) if self._do_transform else img
        if isinstance(out, MetaTensor):
            if self._do_transform:
                _append_record(
                    out, {"op": "rotate_image", "applied": True, "angle_deg": round(self.angle, 4)}
                )
            self.push_transform(out, extra_info={"angle": self.angle, "fill": fill})
        return _stamp(out)

    def inverse(self, data: NdarrayOrTensor) -> NdarrayOrTensor:
        """Undo the recorded rotation: exact on every voxel the rotation kept (see
        :func:`.functional.unrotate_axial`); corners that left the grid come back as ``fill``."""
        xform = self.pop_transform(data)
        if not xform[TraceKeys.DO_TRANSFORM]:
            return data
        info = xform[TraceKeys.EXTRA_INFO]
        return _like(
            _rotate_native(
                data, float(info["angle"]), float(info["fill"]), self.axcodes, undo=True
            ),
            data,
        )


# --------------------------------------------------------------------------- tumour operations
class _TumourOp(RandomizableTransform):
    """Shared machinery of the operations that need the tumour mask and the lung anatomy."""

    backend = [TransformBackends.NUMPY]
    op_name = ""

    def __init__(self, prob: float, axcodes: str | None, spacing: Sequence[float] | None) -> None:
        RandomizableTransform.__init__(self, prob)
        self.axcodes = axcodes
        self.spacing = spacing

    def __call__(self, img, mask, lungs=None, randomize: bool = True):
        """Args: img, mask: channel-first image and one-channel tumour mask (nonzero = tumour) of the
        image's spatial shape; lungs: optional lung labels (1 right, 2 left) on the same grid.
        Returns ``(image, mask)``, the mask ``{0, 1}`` in its input dtype."""
        if randomize:
            self.randomize(None)
        if not self._do_transform:
            return _stamp(img, mask)
        return self.run(img, mask, lungs)

    def _roi(
        self, tumour: np.ndarray, lungs: np.ndarray, spacing: tuple[float, ...]
    ) -> tuple[slice, ...]:
        """The part of the image the operation needs (subclasses: lungs, or around the tumour)."""
        raise NotImplementedError

    def _operate(self, hu, mask, lungs, dense, spacing, rng, out_image, out_mask) -> list:
        raise NotImplementedError

    def run(self, img, mask, lungs=None):
        """Apply the operation: canonical views, region of interest, written into output copies.

        The output arrays are copies of the inputs in their own layout; the operation writes into
        canonical *views* of them, inside the region of interest only, so a large volume is never
        transposed or copied more than once.
        """
        from ...anatomy import lung_mask, vessel_mask

        _check_pair(img, mask)
        if mask.shape[0] != 1:
            raise InputError(
                "mask", f"expected a one-channel tumour mask, got {mask.shape[0]} channels"
            )
        if lungs is not None:
            _check_pair(img, lungs, "lungs")
        view = _Canonical(img, self.axcodes, self.spacing)
        sp = view.spacing
        arr = _np(img)
        marr = _np(mask)
        hu = view.array[0]
        m = view.view(marr != 0)[0]  # compared in the array's own (contiguous) layout, then viewed
        rng = _seeded_rng(self.R)
        if not m.any():
            return self._done(
                img,
                mask,
                arr.copy(),
                np.zeros_like(marr),
                {"op": self.op_name, "applied": False, "reason": "empty tumour mask"},
            )
        if lungs is None:
            lung = lung_mask(hu, sp, progress=False)
        else:
            lung = view.view(lungs)[0]
        roi = self._roi(m, lung, sp)
        lung_r = np.asarray(lung[roi]).astype(np.uint8)
        hu_r = np.ascontiguousarray(hu[roi])
        dense_r = vessel_mask(hu_r, lung_r, sp)
        out_arr, out_marr = (
            arr.copy(),
            (marr != 0).astype(marr.dtype),
        )  # the mask convention: {0, 1}
        results = self._operate(
            hu_r,
            m[roi],
            lung_r,
            dense_r,
            sp,
            rng,
            view.view(out_arr)[0][roi],
            view.view(out_marr)[0][roi],
        )
        record = {
            "op": self.op_name,
            "applied": any(r.applied for r in results),
            "components": [r.as_dict() for r in results],
        }
        return self._done(img, mask, out_arr, out_marr, record)

    def _done(self, img, mask, out_arr, out_marr, record):
        out_img, out_mask = _like(out_arr, img), _like(out_marr, mask)
        for o in (out_img, out_mask):
            _append_record(o, record)
        return _stamp(out_img, out_mask)


def _union_box(*boxes) -> tuple[slice, ...]:
    boxes = [b for b in boxes if b is not None]
    return tuple(
        slice(min(b[i].start for b in boxes), max(b[i].stop for b in boxes))
        for i in range(len(boxes[0]))
    )


class RandRelocateTumor(_TumourOp):
    """Move the tumour into free lung space, opposite lung first (MetaLung op 2).

    Each tumour component is cut out with its HU values, rotated 180 degrees and pasted into free
    parenchyma (at least ``margin_mm`` from vessels, pleura, calcifications) of the opposite
    lung, else of the same lung; the vacated place is filled with parenchyma voxels copied from
    the same lung. With no room anywhere the sample is returned unchanged and the record says
    ``"applied": false``. See :func:`.functional.relocate_tumours`.

    Args:
        prob: probability of trying.
        margin_mm: clearance kept around the pasted tumour.
        ring: halo voxels (partial-volume boundary) moved with the tumour.
        rotate_180: rotate the tumour by 180 degrees before pasting (the thesis' choice).
        opposite_first: try the opposite lung first.
        axcodes, spacing: orientation and voxel size (mm) for arrays without a meaningful affine.

    Call with ``(image, mask, lungs=None)``: ``image`` and ``mask`` channel-first; ``lungs``
    optional precomputed lung labels (1 right, 2 left) on the same grid, computed by HU
    thresholds (:func:`metalung_monai.anatomy.lung_mask`) when absent.
    """

    op_name = "relocate"

    def __init__(
        self,
        prob: float = 1.0,
        margin_mm: float = 2.0,
        ring: int = 1,
        rotate_180: bool = True,
        opposite_first: bool = True,
        axcodes: str | None = None,
        spacing: Sequence[float] | None = None,
    ) -> None:
        super().__init__(prob, axcodes, spacing)
        self.margin_mm, self.ring, self.rotate_180, self.opposite_first = (
            margin_mm,
            ring,
            rotate_180,
            opposite_first,
        )

    def _roi(self, tumour, lungs, spacing):
        return _union_box(F._bbox(lungs > 0, 2), F._bbox(tumour, 2))

    def _operate(self, hu, mask, lungs, dense, spacing, rng, out_image, out_mask):
        return F.relocate_tumours(
            hu,
            mask,
            lungs,
            dense,
            spacing,
            rng,
            margin_mm=self.margin_mm,
            ring=self.ring,
            rotate_180=self.rotate_180,
            opposite_first=self.opposite_first,
            out_image=out_image,
            out_mask=out_mask,
        )[2]


class RandRotateTumor(_TumourOp):
    """Rotate only the tumour about its own centre by a random angle (MetaLung op 4).

    The rest of the image is unchanged apart from the voxels the tumour leaves, which are filled
    with parenchyma from the same lung; the mask follows the tumour. See
    :func:`.functional.rotate_tumours`.

    Args:
        prob: probability of rotating.
        angle_range: ``(min, max)`` absolute angle in degrees (1-90).
        random_sign: both directions.
        ring: halo voxels rotated with the tumour.
        axcodes, spacing: as :class:`RandRelocateTumor`.
    """

    op_name = "rotate_tumor"

    def __init__(
        self,
        prob: float = 1.0,
        angle_range: tuple[float, float] = (1.0, 90.0),
        random_sign: bool = True,
        ring: int = 0,
        axcodes: str | None = None,
        spacing: Sequence[float] | None = None,
    ) -> None:
        super().__init__(prob, axcodes, spacing)
        self.angle_range, self.random_sign, self.ring = angle_range, random_sign, ring

    #: the region kept around the tumour (mm): room for a donor patch of parenchyma nearby
    roi_margin_mm = (12.0, 48.0, 48.0)

    def _roi(self, tumour, lungs, spacing):
        margins = self.roi_margin_mm[-tumour.ndim :]
        pad = tuple(int(math.ceil(mm / sp)) for mm, sp in zip(margins, spacing))
        return F._bbox(tumour, pad)

    def _operate(self, hu, mask, lungs, dense, spacing, rng, out_image, out_mask):
        n = len(F.tumour_components(mask))
        angles = [_angle(self.R, self.angle_range, self.random_sign) for _ in range(n)]
        return F.rotate_tumours(
            hu,
            mask,
            lungs,
            dense,
            spacing,
            rng,
            angles,
            ring=self.ring,
            angle_range=self.angle_range,
            out_image=out_image,
            out_mask=out_mask,
        )[2]


# --------------------------------------------------------------------------- 5./6. integer noise
class RandIntegerNoise(RandomizableTransform):
    """Add integer noise in HU, uniform in ``noise_range`` (default 0-20), to every voxel (op 5).

    Each voxel changes by an integer in the closed range; nothing is rescaled or clipped (integer
    dtypes saturate instead of wrapping). The thesis' "noise on image".

    Args:
        prob: probability of adding noise.
        noise_range: closed integer range in HU.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, prob: float = 1.0, noise_range: tuple[int, int] = (0, 20)) -> None:
        RandomizableTransform.__init__(self, prob)
        self.noise_range = (int(noise_range[0]), int(noise_range[1]))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize(None)
        if not self._do_transform:
            return _stamp(img)
        seed = int(self.R.randint(0, _MAX_SEED, dtype=np.int64))
        arr = _np(img)
        out = _like(F.add_integer_noise(arr, self.noise_range, np.random.default_rng(seed)), img)
        _append_record(
            out,
            {
                "op": "noise_image",
                "applied": True,
                "noise_range": list(self.noise_range),
                "seed": seed,
            },
        )
        return out


class RandTumorNoise(RandomizableTransform):
    """Add integer noise in HU (default 0-20) inside the tumour mask only (MetaLung op 6).

    Call with ``(image, mask)`` (the mask of the image's spatial shape, nonzero = tumour); voxels
    outside the mask keep their exact values. The mask is returned ``{0, 1}`` in its own dtype.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, prob: float = 1.0, noise_range: tuple[int, int] = (0, 20)) -> None:
        RandomizableTransform.__init__(self, prob)
        self.noise_range = (int(noise_range[0]), int(noise_range[1]))

    def __call__(self, img: NdarrayOrTensor, mask: NdarrayOrTensor, randomize: bool = True):
        if randomize:
            self.randomize(None)
        if not self._do_transform:
            return _stamp(img, mask)
        _check_pair(img, mask)
        seed = int(self.R.randint(0, _MAX_SEED, dtype=np.int64))
        arr = _np(img)
        m = _np(mask)
        where = np.broadcast_to(np.any(m != 0, axis=0, keepdims=True), arr.shape)
        out = _like(
            F.add_integer_noise(arr, self.noise_range, np.random.default_rng(seed), where=where),
            img,
        )
        record = {
            "op": "noise_tumor",
            "applied": bool(where.any()),
            "noise_range": list(self.noise_range),
            "seed": seed,
        }
        if not where.any():
            record["reason"] = "empty tumour mask"
        _append_record(out, record)
        mask = _like(
            (m != 0).astype(m.dtype), mask
        )  # the mask convention: {0, 1} in the mask's dtype
        if isinstance(mask, MetaTensor):
            _append_record(mask, record)
        return _stamp(out, mask)
