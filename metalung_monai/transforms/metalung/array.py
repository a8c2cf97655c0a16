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
has the tumour in the other lung), so the affine is *not* changed.

Randomness (MONAI's contract): every ``Rand*`` transform draws *all* its random parameters in
``randomize()`` (from ``self.R``, so ``set_random_state`` rules), then applies its deterministic
twin with them: :class:`MirrorLR`, :class:`RotateImage` ``(angle=)``, :class:`RelocateTumor`
``(seed=)``, :class:`RotateTumor` ``(angles=, seed=)``, :class:`IntegerNoise` ``(seed=)``,
:class:`TumorNoise` ``(seed=)``. ``t(x, randomize=False)`` therefore replays the last draw bit for
bit, and ``Twin.from_record(record)`` replays a logged operation without any random state.

One operation log, two views of it. Every operation builds one record (a dict) and writes it:

* into ``meta["metalung"]``, the augmentation *history* (see :func:`metalung_records`): every
  operation, invertible or not, ``"applied": false`` included when it could not be carried out;
  a JSON string, so it collates in batches and survives ``inverse``. A record holds its twin's
  random arguments under the argument names (``angle``, ``seed``, ``angles``), so it can be
  replayed exactly;
* for the invertible operations (mirror, image rotation) also into MONAI's ``applied_operations``
  stack, as the trace's ``extra_info`` (the same record, plus the padding ``fill`` that only the
  inverse needs), pushed with ``push_transform`` and, by the ``Rand*`` versions, replaced with
  ``push_transform(..., replace=True)`` and delegated back on ``inverse`` as MONAI's ``RandFlip``
  does. This stack is popped by ``inverse`` / ``Invertd``; the history is not. The non-invertible
  operations (tumour operations, noise) are not traced (a trace without an inverse would block
  ``Compose.inverse``).

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
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import InvertibleTransform, RandomizableTransform, Transform
from monai.utils import TraceKeys, TransformBackends, convert_to_dst_type

from ...errors import InputError
from ...utils.orientation import CanonicalAxes, array_spacing, canonical_axes, canonical_spacing
from . import functional as F

__all__ = [
    "METALUNG_META_KEY",
    "metalung_records",
    "binary_mask",
    "axcodes_affine",
    "MirrorLR",
    "RandMirrorLR",
    "RotateImage",
    "RandRotateImage",
    "RelocateTumor",
    "RandRelocateTumor",
    "RotateTumor",
    "RandRotateTumor",
    "IntegerNoise",
    "RandIntegerNoise",
    "TumorNoise",
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
            else (array_spacing(img.affine, nd) if isinstance(img, MetaTensor) else None)
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


#: dtypes ``cv2.transpose`` copies as they are (one channel, 1 to 8 bytes an element)
_CV_TRANSPOSE_DTYPES = frozenset(
    np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32, np.float64)
)


def _contiguous(a: np.ndarray) -> np.ndarray:
    """``np.ascontiguousarray(a)``, the same values, fast for a canonical view of a MONAI volume.

    A ``(z, y, x)`` view of a ``(C, x, y, z)`` array has ``z`` innermost in memory: numpy's copy
    then reads one element per memory page (about 250 ms for a 125 x 257 x 350 lung box). Such a
    view is copied one ``(z, x)`` plane at a time with OpenCV's cache-blocked transpose (about
    30 ms); anything else (flipped, other layouts, other dtypes) goes to numpy.
    """
    if a.ndim != 3 or a.flags.c_contiguous or a.size == 0 or a.dtype not in _CV_TRANSPOSE_DTYPES:
        return np.ascontiguousarray(a)
    item = a.itemsize
    s0, s1, s2 = a.strides
    if s0 != item or s1 <= 0 or s2 < a.shape[0] * item or s2 % item:
        return np.ascontiguousarray(a)
    out = np.empty(a.shape, a.dtype)
    for j in range(a.shape[1]):
        out[:, j, :] = cv2.transpose(a[:, j, :].T)  # (x, z) rows of stride s2 -> (z, x)
    return out


def _meta_like(res: torch.Tensor, ref: MetaTensor) -> MetaTensor:
    """``res`` as a MetaTensor with a copy of ``ref``'s metadata and attributes (what
    ``MetaTensor(res)`` then ``copy_meta_from(ref, copy_attr=True)`` gives, without building
    the default metadata that the copy replaces: a few microseconds instead of ~70)."""
    mt = res.as_subclass(MetaTensor)
    mt.copy_meta_from(ref, copy_attr=True)
    return mt


def _like(out: np.ndarray, ref: NdarrayOrTensor) -> NdarrayOrTensor:
    """``out`` with the type, dtype, device and metadata of ``ref``."""
    if isinstance(ref, torch.Tensor):
        res = torch.as_tensor(np.ascontiguousarray(out), device=ref.device).to(ref.dtype)
        if isinstance(ref, MetaTensor):
            if not get_track_meta():
                return res
            return _meta_like(res, ref)
        return res
    return convert_to_dst_type(np.ascontiguousarray(out), ref, dtype=np.asarray(ref).dtype)[0]


@functools.lru_cache(maxsize=16)
def _rotation_map(shape_ab: tuple[int, int], angle: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`.functional.rotation_maps` (read-only), built once per (shape, angle): every key of
    a sample is rotated with the same maps."""
    maps = F.rotation_maps(shape_ab, angle)
    for m in maps:
        m.setflags(write=False)
    return maps


def _rotate_native(
    img: NdarrayOrTensor, angle: float, fill: float, axcodes: str | None, undo: bool = False
) -> np.ndarray:
    """Rotate ``img`` (channel first) by ``angle`` degrees in the axial plane, in its own layout.

    The angle is the turn seen in radiological display; the map is built once per (shape, angle)
    and shared by every key of a sample. With ``undo``, :func:`.functional.unrotate_axial`.
    The output has the input's memory layout: a MONAI ``(C, x, y, z)`` volume is rotated where it
    lies (OpenCV's interleaved planes), with no transposed copy on the way in or out.
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


def _draw_seed(R: np.random.RandomState) -> int:
    """A seed for a fast numpy ``Generator``, drawn from MONAI's ``self.R`` (so
    ``set_random_state`` rules); the deterministic twins run ``np.random.default_rng(seed)``."""
    return int(R.randint(0, _MAX_SEED, dtype=np.int64))


def _replay_arg(record: Mapping, name: str) -> Any:
    """Argument ``name`` of a record's deterministic twin; a clear error for records without it."""
    if name not in record:
        raise ValueError(
            f"MetaLung record {dict(record)} has no '{name}': it cannot be replayed (records made "
            "before the deterministic twins did not log it)"
        )
    return record[name]


def _not_drawn(owner: str) -> RuntimeError:
    return RuntimeError(
        f"{owner}: nothing drawn yet; call randomize() (or the transform with randomize=True) first"
    )


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
    # counting nonzero bit patterns is several times faster than counting nonzero floats; they
    # differ only for -0.0 (a nonzero pattern, a zero value), which the exact count then settles
    bits = {4: np.uint32, 8: np.uint64, 2: np.uint16}.get(flat.dtype.itemsize)
    floating = np.issubdtype(flat.dtype, np.floating) and bits is not None
    for start in range(0, flat.size, _BINARY_CHUNK):
        chunk = flat[start : start + _BINARY_CHUNK]
        ones = np.count_nonzero(chunk == 1)
        if floating and np.count_nonzero(chunk.view(bits)) == ones:
            continue
        nz = np.count_nonzero(chunk)
        if nz and ones != nz:
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

    An affine without anatomical meaning is taken at its word: a plain diagonal (the MSD lung
    patches, whose plane and left-right side were not recorded), an identity or no affine at all
    (plain tensors) reads as RAS, so the mirror flips the first spatial axis (``axis`` 1 of the
    channel-first array, logged in the record). On such data it is a flip of one in-plane axis
    that is not known to be left-right: still HU-exact and a valid augmentation (the mirrored
    patch is a plausible patch), but not a proven swap of the lungs; nothing is guessed from the
    image. Give ``axcodes`` when the storage order is known.

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
        ax, _ = _axes_and_spacing(
            np.ascontiguousarray(affine, dtype=float).tobytes(), affine.shape, nd, space
        )
        return ax.perm[-1] + 1

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Args: img: channel-first ``(C, H, W[, D])`` array. Returns the mirrored array."""
        axis = self.lr_axis(img)
        if isinstance(img, MetaTensor) and not img.is_batch:
            # flip the plain data, then copy the metadata as a MetaTensor's torch.flip would:
            # same result without __torch_function__; on the CPU a numpy copy (torch.flip's
            # threads spin for milliseconds on a loaded machine, even for one slice)
            plain = img.as_tensor()
            numpy_ok = plain.device.type == "cpu" and plain.dtype != torch.bfloat16
            if numpy_ok and not plain.requires_grad:
                out = torch.from_numpy(np.ascontiguousarray(np.flip(plain.numpy(), axis)))
            else:
                out = torch.flip(plain, (axis,))
            if get_track_meta():
                out = _meta_like(out, img)
        elif isinstance(img, torch.Tensor):
            out = torch.flip(img, (axis,))
            if isinstance(img, MetaTensor) and not isinstance(out, MetaTensor) and get_track_meta():
                out = _like(out.numpy(), img)
        else:
            out = np.ascontiguousarray(np.flip(img, axis))
        if isinstance(out, MetaTensor):
            record = {"op": "mirror", "applied": True, "axis": int(axis)}
            _append_record(out, record)
            out = self.push_transform(out, extra_info=dict(record))  # the trace is the record
        return out

    @classmethod
    def from_record(cls, record: Mapping, **kwargs: Any) -> MirrorLR:
        """The mirror of a ``"mirror"`` record (nothing random: the axis comes from the affine)."""
        return cls(**kwargs)

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

    def twin_of(self, record: Mapping) -> MirrorLR:
        """The deterministic twin of a ``"mirror"`` record this transform made."""
        return self.mirror

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """Args: img: channel-first array; randomize: draw a new coin (``False``: replay the last)."""
        if randomize:
            self.randomize(None)
        out = self.mirror(img) if self._do_transform else img
        if isinstance(out, MetaTensor):  # MONAI's RandFlip: the mirror's trace, under this id
            out = self.push_transform(out, replace=True)
        return _stamp(out)

    def inverse(self, data: NdarrayOrTensor) -> NdarrayOrTensor:
        xform = self.pop_transform(data)
        if not xform[TraceKeys.DO_TRANSFORM]:
            return data
        data.applied_operations.append(xform[TraceKeys.EXTRA_INFO])  # the mirror's own trace
        return self.mirror.inverse(data)


# --------------------------------------------------------------------------- 3. rotate image
class RotateImage(InvertibleTransform):
    """Rotate the whole image in the axial plane by ``angle`` degrees (deterministic MetaLung op 3).

    Nearest neighbour, so every output voxel is an input value or the padding ``fill``; padding
    is air (``-1024`` HU) for images and ``0`` for masks (0 HU would be soft tissue). In 3D every
    axial slice turns by the same angle about the same axis. The angle is the turn seen in
    radiological display (positive: counter-clockwise). Invertible (see :meth:`inverse`).

    Args:
        angle: signed angle in degrees (a ``"rotate_image"`` record's ``angle``).
        fill: padding value (HU for images; use 0 for masks).
        axcodes: orientation of arrays without a meaningful affine.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, angle: float, fill: float = F.AIR_HU, axcodes: str | None = None) -> None:
        self.angle = float(angle)
        self.fill = fill
        self.axcodes = axcodes

    @classmethod
    def from_record(cls, record: Mapping, **kwargs: Any) -> RotateImage:
        """The rotation of a ``"rotate_image"`` record (its exact ``angle``); ``kwargs``: ``fill``, ``axcodes``."""
        return cls(angle=_replay_arg(record, "angle"), **kwargs)

    def __call__(self, img: NdarrayOrTensor, fill: float | None = None) -> NdarrayOrTensor:
        """Args: img: channel-first ``(C, H, W[, D])``; fill: padding for this call (default ``self.fill``)."""
        fill = self.fill if fill is None else fill
        out = _like(_rotate_native(img, self.angle, fill, self.axcodes), img)
        if isinstance(out, MetaTensor):
            record = {
                "op": "rotate_image",
                "applied": True,
                "angle_deg": round(self.angle, 4),
                "angle": self.angle,
            }
            _append_record(out, record)
            out = self.push_transform(out, extra_info=dict(record, fill=float(fill)))
        return out

    def inverse(self, data: NdarrayOrTensor) -> NdarrayOrTensor:
        """Undo the recorded rotation: exact on every voxel the rotation kept (see
        :func:`.functional.unrotate_axial`); corners that left the grid come back as ``fill``."""
        return self.inverse_transform(data, self.pop_transform(data))

    def inverse_transform(self, data: NdarrayOrTensor, transform: Mapping) -> NdarrayOrTensor:
        """Undo the rotation a trace entry (already popped) describes."""
        info = transform[TraceKeys.EXTRA_INFO]
        return _like(
            _rotate_native(
                data, float(info["angle"]), float(info["fill"]), self.axcodes, undo=True
            ),
            data,
        )


class RandRotateImage(RandomizableTransform, InvertibleTransform):
    """Rotate the whole image in the axial plane by a random angle (MetaLung op 3).

    :meth:`randomize` draws the coin and the angle; the rotation is :class:`RotateImage` with that
    angle, traced under this transform (``push_transform(..., replace=True)``) and inverted by it.

    Args:
        prob: probability of rotating.
        angle_range: ``(min, max)`` absolute angle in degrees (1-90 as in the thesis).
        random_sign: turn clockwise or counter-clockwise with equal probability.
        fill: padding value (HU for images; use 0 for masks).
        axcodes: orientation of arrays without a meaningful affine.
    """

    backend = RotateImage.backend

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
        """Draw the coin (``R.rand()``), then the angle (``R.uniform``, and ``R.rand()`` for its sign)."""
        super().randomize(None)
        if self._do_transform:
            self.angle = _angle(self.R, self.angle_range, self.random_sign)

    def twin_of(self, record: Mapping) -> RotateImage:
        """The deterministic twin of a ``"rotate_image"`` record this transform made (its settings,
        the record's exact angle)."""
        return RotateImage.from_record(record, fill=self.fill, axcodes=self.axcodes)

    def rotate(self, img: NdarrayOrTensor, angle: float, fill: float) -> NdarrayOrTensor:
        """Deterministic rotation of ``img`` by ``angle`` degrees (no trace, no record)."""
        return _like(_rotate_native(img, angle, fill, self.axcodes), img)

    def __call__(
        self, img: NdarrayOrTensor, randomize: bool = True, fill: float | None = None
    ) -> NdarrayOrTensor:
        """Args: img: channel-first array; randomize: draw anew (``False``: replay the last draw);
        fill: padding for this call (default ``self.fill``)."""
        if randomize:
            self.randomize()
        fill = self.fill if fill is None else fill
        if self._do_transform:
            out = RotateImage(self.angle, fill, self.axcodes)(img)
        else:
            out = img
        if isinstance(out, MetaTensor):  # MONAI's RandRotate: the rotation's trace, under this id
            out = self.push_transform(out, replace=True)
        return _stamp(out)

    def inverse(self, data: NdarrayOrTensor) -> NdarrayOrTensor:
        """Undo the traced rotation (see :meth:`RotateImage.inverse`)."""
        xform = self.pop_transform(data)
        if not xform[TraceKeys.DO_TRANSFORM]:
            return data
        inner = xform[TraceKeys.EXTRA_INFO]
        info = inner[TraceKeys.EXTRA_INFO]
        return RotateImage(info["angle"], info["fill"], self.axcodes).inverse_transform(data, inner)


# --------------------------------------------------------------------------- tumour operations
#: the reason of a tumour operation on an image without lung
_NO_LUNG = (
    "no lung in the image: the lung labels are empty (lung_mask needs the body outline, "
    "which a small patch lacks: pass lung labels, lungs= or lung_key)"
)


class _TumourOp(Transform):
    """Shared machinery of the deterministic operations that need the tumour mask and the lungs.

    Their randomness is one numpy ``Generator`` seeded with ``seed`` (positions and donor
    patches of parenchyma), plus the arguments of the subclass (rotation angles).
    """

    backend = [TransformBackends.NUMPY]
    op_name = ""

    def __init__(self, seed: int, axcodes: str | None, spacing: Sequence[float] | None) -> None:
        self.seed = int(seed)
        self.axcodes = axcodes
        self.spacing = spacing

    def replay_args(self) -> dict:
        """The random arguments, as logged in the record (the constructor's names)."""
        return {"seed": self.seed}

    def __call__(self, img, mask, lungs=None):
        """Args: img, mask: channel-first image and one-channel tumour mask (nonzero = tumour) of the
        image's spatial shape; lungs: optional lung labels (1 right, 2 left) on the same grid.
        Returns ``(image, mask)``, the mask ``{0, 1}`` in its input dtype."""
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
        tumour = marr != 0  # compared in the array's own (contiguous) layout, then viewed
        m = view.view(tumour)[0]
        rng = np.random.default_rng(self.seed)
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
        if not lung.any():  # nowhere to move or rotate into (e.g. a patch without body outline)
            return self._done(
                img,
                mask,
                arr.copy(),
                tumour.astype(marr.dtype),
                {"op": self.op_name, "applied": False, "reason": _NO_LUNG},
            )
        roi = self._roi(m, lung, sp)
        lung_r = np.asarray(lung[roi]).astype(np.uint8)
        hu_r = _contiguous(hu[roi])
        dense_r = vessel_mask(hu_r, lung_r, sp)
        out_arr, out_marr = (
            arr.copy(),
            tumour.astype(marr.dtype),
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
        record.update(self.replay_args())
        out_img, out_mask = _like(out_arr, img), _like(out_marr, mask)
        for o in (out_img, out_mask):
            _append_record(o, record)
        return _stamp(out_img, out_mask)


class _RandTumourOp(RandomizableTransform):
    """A random tumour operation: :meth:`randomize` draws the twin's arguments, the twin applies them."""

    backend = _TumourOp.backend

    def __init__(self, prob: float, axcodes: str | None, spacing: Sequence[float] | None) -> None:
        RandomizableTransform.__init__(self, prob)
        self.axcodes = axcodes
        self.spacing = spacing
        self.seed: int | None = None

    def randomize(self, data: Any = None) -> None:
        """Draw the coin (``R.rand()``), then the twin's generator seed (``R.randint``).

        ``data``: the tumour mask (channel first), which :class:`RandRotateTumor` needs.
        """
        super().randomize(None)
        if self._do_transform:
            self.seed = _draw_seed(self.R)

    def twin(self) -> _TumourOp:
        """The deterministic operation of the last draw."""
        if self.seed is None:
            raise _not_drawn(type(self).__name__)
        return self.twin_of(self.last_draw())

    def last_draw(self) -> dict:
        """The last draw, as a record holds it (the twin's random arguments)."""
        return {"seed": self.seed}

    def twin_of(self, record: Mapping) -> _TumourOp:
        """The deterministic twin of a record this transform made (its settings, the record's draw)."""
        raise NotImplementedError

    def __call__(self, img, mask, lungs=None, randomize: bool = True):
        """Args: img, mask: channel-first image and one-channel tumour mask (nonzero = tumour) of the
        image's spatial shape; lungs: optional lung labels (1 right, 2 left) on the same grid;
        randomize: draw anew (``False``: replay the last draw). Returns ``(image, mask)``, the
        mask ``{0, 1}`` in its input dtype."""
        if randomize:
            self.randomize(mask)
        if not self._do_transform:
            return _stamp(img, mask)
        if self.seed is None:
            raise _not_drawn(type(self).__name__)
        return self.twin()(img, mask, lungs)


def _union_box(*boxes) -> tuple[slice, ...]:
    boxes = [b for b in boxes if b is not None]
    return tuple(
        slice(min(b[i].start for b in boxes), max(b[i].stop for b in boxes))
        for i in range(len(boxes[0]))
    )


class RelocateTumor(_TumourOp):
    """Move the tumour into free lung space, opposite lung first (deterministic MetaLung op 2).

    Each tumour component is cut out with its HU values, rotated 180 degrees and pasted into free
    parenchyma (at least ``margin_mm`` from vessels, pleura, calcifications) of the opposite
    lung, else of the same lung; the vacated place is filled with parenchyma voxels copied from
    the same lung. A tumour with no vessel-free room anywhere (a large real mass) is then
    placed over vessels thinner than ``min_vessel_mm``, which a real tumour engulfs, still
    clear of the pleura, mediastinum, wider vessels and airways, calcifications and other
    tumours (the component's ``fallback`` says so). With no room even then the sample is
    returned unchanged and the record says ``"applied": false`` with the component's
    ``reason``: the tumour's size, the free disc it needs and the largest one in each lung.
    See :func:`.functional.relocate_tumors`.

    Args:
        seed: seed of the numpy ``Generator`` that picks the place and the donor parenchyma (a
            ``"relocate"`` record's ``seed``).
        margin_mm: clearance kept around the pasted tumour.
        ring: halo voxels (partial-volume boundary) moved with the tumour.
        rotate_180: rotate the tumour by 180 degrees before pasting (the thesis' choice).
        opposite_first: try the opposite lung first.
        min_vessel_mm: vessel diameter (mm) up to which a tumour with no vessel-free room may
            cover vessels (default 3.0; ``None``: every dense voxel blocks). Tumours that fit
            clear of every vessel are placed as with ``None`` (same output, same seed).
        axcodes, spacing: orientation and voxel size (mm) for arrays without a meaningful affine.

    Call with ``(image, mask, lungs=None)``: ``image`` and ``mask`` channel-first; ``lungs``
    optional precomputed lung labels (1 right, 2 left) on the same grid, computed by HU
    thresholds (:func:`metalung_monai.anatomy.lung_mask`) when absent.
    """

    op_name = "relocate"

    def __init__(
        self,
        seed: int,
        margin_mm: float = 2.0,
        ring: int = 1,
        rotate_180: bool = True,
        opposite_first: bool = True,
        axcodes: str | None = None,
        spacing: Sequence[float] | None = None,
        min_vessel_mm: float | None = 3.0,
    ) -> None:
        super().__init__(seed, axcodes, spacing)
        self.margin_mm, self.ring, self.rotate_180, self.opposite_first = (
            margin_mm,
            ring,
            rotate_180,
            opposite_first,
        )
        self.min_vessel_mm = min_vessel_mm

    @classmethod
    def from_record(cls, record: Mapping, **kwargs: Any) -> RelocateTumor:
        """The relocation of a ``"relocate"`` record (its ``seed``); ``kwargs``: the settings."""
        return cls(seed=_replay_arg(record, "seed"), **kwargs)

    def _roi(self, tumour, lungs, spacing):
        return _union_box(F._bbox(lungs > 0, 2), F._bbox(tumour, 2))

    def _operate(self, hu, mask, lungs, dense, spacing, rng, out_image, out_mask):
        return F.relocate_tumors(
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
            min_vessel_mm=self.min_vessel_mm,
            out_image=out_image,
            out_mask=out_mask,
        )[2]


class RandRelocateTumor(_RandTumourOp):
    """With probability ``prob``, :class:`RelocateTumor` with a random seed (MetaLung op 2).

    Args:
        prob: probability of trying.
        margin_mm, ring, rotate_180, opposite_first, axcodes, spacing, min_vessel_mm: as
            :class:`RelocateTumor`.

    Call with ``(image, mask, lungs=None, randomize=True)`` (see :class:`RelocateTumor`).
    """

    def __init__(
        self,
        prob: float = 1.0,
        margin_mm: float = 2.0,
        ring: int = 1,
        rotate_180: bool = True,
        opposite_first: bool = True,
        axcodes: str | None = None,
        spacing: Sequence[float] | None = None,
        min_vessel_mm: float | None = 3.0,
    ) -> None:
        super().__init__(prob, axcodes, spacing)
        self.margin_mm, self.ring, self.rotate_180, self.opposite_first = (
            margin_mm,
            ring,
            rotate_180,
            opposite_first,
        )
        self.min_vessel_mm = min_vessel_mm

    def twin_of(self, record: Mapping) -> RelocateTumor:
        return RelocateTumor.from_record(
            record,
            margin_mm=self.margin_mm,
            ring=self.ring,
            rotate_180=self.rotate_180,
            opposite_first=self.opposite_first,
            axcodes=self.axcodes,
            spacing=self.spacing,
            min_vessel_mm=self.min_vessel_mm,
        )


class RotateTumor(_TumourOp):
    """Rotate only the tumour about its own centre by given angles (deterministic MetaLung op 4).

    The rest of the image is unchanged apart from the voxels the tumour leaves, which are filled
    with parenchyma from the same lung; the mask follows the tumour. An angle that would push
    too much of the tumour onto vessels or pleura is retried with angles drawn from
    ``angle_range`` by the seeded generator. See :func:`.functional.rotate_tumors`.

    Args:
        angles: first angle (degrees, signed) for each tumour component, largest component first
            (a ``"rotate_tumor"`` record's ``angles``); as many as the mask has components.
        seed: seed of the numpy ``Generator`` for the retries and the donor parenchyma.
        ring: halo voxels rotated with the tumour.
        angle_range: ``(min, max)`` absolute angle in degrees of the retries.
        axcodes, spacing: as :class:`RelocateTumor`.
    """

    op_name = "rotate_tumor"

    def __init__(
        self,
        angles: Sequence[float],
        seed: int,
        ring: int = 0,
        angle_range: tuple[float, float] = (1.0, 90.0),
        axcodes: str | None = None,
        spacing: Sequence[float] | None = None,
    ) -> None:
        super().__init__(seed, axcodes, spacing)
        self.angles = [float(a) for a in angles]
        self.ring, self.angle_range = ring, angle_range

    @classmethod
    def from_record(cls, record: Mapping, **kwargs: Any) -> RotateTumor:
        """The rotation of a ``"rotate_tumor"`` record (its ``angles`` and ``seed``)."""
        return cls(angles=_replay_arg(record, "angles"), seed=_replay_arg(record, "seed"), **kwargs)

    def replay_args(self) -> dict:
        return {"seed": self.seed, "angles": list(self.angles)}

    #: the region kept around the tumour (mm): room for a donor patch of parenchyma nearby
    roi_margin_mm = (12.0, 48.0, 48.0)

    def _roi(self, tumour, lungs, spacing):
        margins = self.roi_margin_mm[-tumour.ndim :]
        pad = tuple(int(math.ceil(mm / sp)) for mm, sp in zip(margins, spacing))
        return F._bbox(tumour, pad)

    def _operate(self, hu, mask, lungs, dense, spacing, rng, out_image, out_mask):
        comps = F.tumor_components(mask)
        n = len(comps)
        if n != len(self.angles):
            raise ValueError(
                f"RotateTumor: the mask has {n} tumour component(s) but {len(self.angles)} "
                "angle(s) were given (one per component, largest first)"
            )
        return F.rotate_tumors(
            hu,
            mask,
            lungs,
            dense,
            spacing,
            rng,
            self.angles,
            ring=self.ring,
            angle_range=self.angle_range,
            out_image=out_image,
            out_mask=out_mask,
            components=comps,
        )[2]


class RandRotateTumor(_RandTumourOp):
    """Rotate only the tumour about its own centre by a random angle (MetaLung op 4).

    :meth:`randomize` (which needs the mask) draws the coin, the generator seed and one angle per
    tumour component; :class:`RotateTumor` applies them.

    Args:
        prob: probability of rotating.
        angle_range: ``(min, max)`` absolute angle in degrees (1-90).
        random_sign: both directions.
        ring: halo voxels rotated with the tumour.
        axcodes, spacing: as :class:`RelocateTumor`.
    """

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
        self.angles: list[float] = []

    def randomize(self, data: Any = None) -> None:
        """Draw the coin, the seed, then one angle per tumour component of ``data`` (the mask)."""
        super().randomize(None)
        if not self._do_transform:
            return
        if data is None:
            raise ValueError(
                "RandRotateTumor.randomize needs the tumour mask (one angle per component)"
            )
        mask = _np(data)
        # one angle per component (a mask that is not channel-first 2D/3D is refused by the twin)
        n = len(F.tumor_components(mask[0])) if mask.ndim in (3, 4) else 0
        self.angles = [_angle(self.R, self.angle_range, self.random_sign) for _ in range(n)]

    def last_draw(self) -> dict:
        return {"seed": self.seed, "angles": list(self.angles)}

    def twin_of(self, record: Mapping) -> RotateTumor:
        return RotateTumor.from_record(
            record,
            ring=self.ring,
            angle_range=self.angle_range,
            axcodes=self.axcodes,
            spacing=self.spacing,
        )


# --------------------------------------------------------------------------- 5./6. integer noise
class IntegerNoise(Transform):
    """Add integer noise in HU, uniform in ``noise_range``, to every voxel (deterministic op 5).

    Each voxel changes by an integer in the closed range, drawn by ``np.random.default_rng(seed)``;
    nothing is rescaled or clipped (integer dtypes saturate instead of wrapping).

    Args:
        seed: generator seed (a ``"noise_image"`` record's ``seed``).
        noise_range: closed integer range in HU.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, seed: int, noise_range: tuple[int, int] = (0, 20)) -> None:
        self.seed = int(seed)
        self.noise_range = (int(noise_range[0]), int(noise_range[1]))

    @classmethod
    def from_record(cls, record: Mapping, **kwargs: Any) -> IntegerNoise:
        """The noise of a ``"noise_image"`` record (its ``seed`` and ``noise_range``)."""
        kwargs.setdefault("noise_range", tuple(_replay_arg(record, "noise_range")))
        return cls(seed=_replay_arg(record, "seed"), **kwargs)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Args: img: channel-first image (HU). Returns the noisy image, same type and dtype."""
        arr = _np(img)
        out = _like(
            F.add_integer_noise(arr, self.noise_range, np.random.default_rng(self.seed)), img
        )
        _append_record(
            out,
            {
                "op": "noise_image",
                "applied": True,
                "noise_range": list(self.noise_range),
                "seed": self.seed,
            },
        )
        return out


class RandIntegerNoise(RandomizableTransform):
    """Add integer noise in HU, uniform in ``noise_range`` (default 0-20), to every voxel (op 5).

    :meth:`randomize` draws the coin and the seed; :class:`IntegerNoise` adds the noise. The
    thesis' "noise on image".

    Args:
        prob: probability of adding noise.
        noise_range: closed integer range in HU.
    """

    backend = IntegerNoise.backend

    def __init__(self, prob: float = 1.0, noise_range: tuple[int, int] = (0, 20)) -> None:
        RandomizableTransform.__init__(self, prob)
        self.noise_range = (int(noise_range[0]), int(noise_range[1]))
        self.seed: int | None = None

    def randomize(self, data: Any = None) -> None:
        """Draw the coin (``R.rand()``), then the noise seed (``R.randint``)."""
        super().randomize(None)
        if self._do_transform:
            self.seed = _draw_seed(self.R)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """Args: img: channel-first image; randomize: draw anew (``False``: replay the last draw)."""
        if randomize:
            self.randomize(None)
        if not self._do_transform:
            return _stamp(img)
        if self.seed is None:
            raise _not_drawn(type(self).__name__)
        return IntegerNoise(self.seed, self.noise_range)(img)

    def twin_of(self, record: Mapping) -> IntegerNoise:
        """The deterministic twin of a ``"noise_image"`` record (its seed and range)."""
        return IntegerNoise.from_record(record)


class TumorNoise(Transform):
    """Add integer noise in HU inside the tumour mask only (deterministic MetaLung op 6).

    Call with ``(image, mask)`` (the mask of the image's spatial shape, nonzero = tumour); voxels
    outside the mask keep their exact values. The mask is returned ``{0, 1}`` in its own dtype.

    Args:
        seed: generator seed (a ``"noise_tumor"`` record's ``seed``).
        noise_range: closed integer range in HU.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, seed: int, noise_range: tuple[int, int] = (0, 20)) -> None:
        self.seed = int(seed)
        self.noise_range = (int(noise_range[0]), int(noise_range[1]))

    @classmethod
    def from_record(cls, record: Mapping, **kwargs: Any) -> TumorNoise:
        """The noise of a ``"noise_tumor"`` record (its ``seed`` and ``noise_range``)."""
        kwargs.setdefault("noise_range", tuple(_replay_arg(record, "noise_range")))
        return cls(seed=_replay_arg(record, "seed"), **kwargs)

    def __call__(self, img: NdarrayOrTensor, mask: NdarrayOrTensor):
        _check_pair(img, mask)
        arr = _np(img)
        m = _np(mask)
        where = np.broadcast_to(np.any(m != 0, axis=0, keepdims=True), arr.shape)
        out = _like(
            F.add_integer_noise(
                arr, self.noise_range, np.random.default_rng(self.seed), where=where
            ),
            img,
        )
        record = {
            "op": "noise_tumor",
            "applied": bool(where.any()),
            "noise_range": list(self.noise_range),
            "seed": self.seed,
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


class RandTumorNoise(RandomizableTransform):
    """Add integer noise in HU (default 0-20) inside the tumour mask only (MetaLung op 6).

    :meth:`randomize` draws the coin and the seed; :class:`TumorNoise` adds the noise. Call with
    ``(image, mask, randomize=True)``.
    """

    backend = TumorNoise.backend

    def __init__(self, prob: float = 1.0, noise_range: tuple[int, int] = (0, 20)) -> None:
        RandomizableTransform.__init__(self, prob)
        self.noise_range = (int(noise_range[0]), int(noise_range[1]))
        self.seed: int | None = None

    def randomize(self, data: Any = None) -> None:
        """Draw the coin (``R.rand()``), then the noise seed (``R.randint``)."""
        super().randomize(None)
        if self._do_transform:
            self.seed = _draw_seed(self.R)

    def __call__(self, img: NdarrayOrTensor, mask: NdarrayOrTensor, randomize: bool = True):
        if randomize:
            self.randomize(None)
        if not self._do_transform:
            return _stamp(img, mask)
        if self.seed is None:
            raise _not_drawn(type(self).__name__)
        return TumorNoise(self.seed, self.noise_range)(img, mask)

    def twin_of(self, record: Mapping) -> TumorNoise:
        """The deterministic twin of a ``"noise_tumor"`` record (its seed and range)."""
        return TumorNoise.from_record(record)
