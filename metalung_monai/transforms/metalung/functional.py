"""MetaLung operations as pure functions on canonical numpy arrays (no randomness of their own).

Layout: every function takes arrays in the *canonical* layout of
:mod:`metalung_monai.utils.orientation`, spatial axes only or with leading axes (channel):
2D ``(..., y, x)`` or 3D ``(..., z, y, x)``, ``x`` towards the patient's left, ``y`` towards
posterior. The axial plane is always the last two axes.

HU contract: apart from the two noise operations, no function here creates a value. Geometric
operations copy voxels (nearest neighbour, exact 90/180 degree flips); tumour relocation copies
the tumour's own voxels and fills the place it leaves with parenchyma voxels copied from
elsewhere in the same lung. Padding is air (-1024 HU) for images and 0 for masks.

Random choices (positions, donor patches, noise) come from a ``numpy.random.Generator`` passed
in by the caller, so the transforms in :mod:`.array` / :mod:`.dictionary` own all randomness
(MONAI's ``self.R``) and a call is reproducible.
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage

__all__ = [
    "AIR_HU",
    "mirror",
    "rotation_map",
    "rotation_maps",
    "rotate_axial",
    "unrotate_axial",
    "integer_noise",
    "add_integer_noise",
    "Component",
    "tumor_components",
    "relocate_tumors",
    "rotate_tumors",
    "fill_with_parenchyma",
    "ComponentResult",
]

AIR_HU = -1024
_CV_CHANNELS = 128  # channels per OpenCV call (CV_CN_MAX is 128 in OpenCV 5)
_CV_DTYPES = {
    np.dtype(np.uint8),
    np.dtype(np.uint16),
    np.dtype(np.int16),
    np.dtype(np.float32),
    np.dtype(np.float64),
}


# --------------------------------------------------------------------------- mirror / rotation
def mirror(array: np.ndarray, axis: int = -1) -> np.ndarray:
    """Flip ``array`` along ``axis`` (default: canonical ``x``, the patient's left-right axis).

    Returns a new contiguous array; values are only moved.
    """
    return np.ascontiguousarray(np.flip(array, axis))


def _cv_dtype(dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype in _CV_DTYPES:
        return dtype
    if dtype == np.bool_ or dtype == np.int8:
        return np.dtype(np.int16) if dtype == np.int8 else np.dtype(np.uint8)
    if dtype == np.float16:
        return np.dtype(np.float32)
    return np.dtype(np.float64)  # int32/int64/uint32: exact up to 2**53


def _coordinate_maps(
    shape_yx: tuple[int, int], angle_deg: float, center_yx: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Source coordinates ``(x_src, y_src)`` of every output voxel, ``float32`` (not yet rounded)."""
    h, w = shape_yx
    if center_yx is None:
        center_yx = ((h - 1) / 2.0, (w - 1) / 2.0)
    matrix = cv2.getRotationMatrix2D(
        (float(center_yx[1]), float(center_yx[0])), float(angle_deg), 1.0
    )
    inv = cv2.invertAffineTransform(matrix).astype(np.float32)
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)
    mx = (inv[0, 0] * xs)[None, :] + (inv[0, 1] * ys + inv[0, 2])[:, None]
    my = (inv[1, 0] * xs)[None, :] + (inv[1, 1] * ys + inv[1, 2])[:, None]
    return mx, my


def rotation_maps(
    shape_yx: tuple[int, int], angle_deg: float, center_yx: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The rotation of :func:`rotation_map` as the two ``float32`` maps OpenCV rounds itself.

    ``cv2.remap`` with these maps and ``INTER_NEAREST`` rounds each coordinate exactly as
    ``cv2.convertMaps(..., nninterpolation=True)`` does (round half to even), so it takes every
    voxel from the same place as the ``CV_16SC2`` map of :func:`rotation_map` (checked on 1,500
    shapes, angles, centres, dtypes and channel counts), and is faster: no conversion pass, and
    OpenCV converts the maps block by block, in cache. :func:`rotate_axial` accepts either form.
    """
    return _coordinate_maps(shape_yx, angle_deg, center_yx)


def rotation_map(
    shape_yx: tuple[int, int], angle_deg: float, center_yx: tuple[float, float] | None = None
) -> np.ndarray:
    """Integer source coordinates of a nearest-neighbour axial rotation (OpenCV ``CV_16SC2`` map).

    ``map[y, x] = (x_src, y_src)``: the input voxel each output voxel copies. Built once per call
    and shared by every array rotated with it, so an image and its mask always take their voxels
    from the same places (OpenCV's own nearest-neighbour warps round coordinate ties differently
    for different dtypes, which would misalign a uint8 mask and an int16 image by one voxel).
    """
    mx, my = _coordinate_maps(shape_yx, angle_deg, center_yx)
    return cv2.convertMaps(mx, my, cv2.CV_16SC2, nninterpolation=True)[0]


def rotate_axial(
    array: np.ndarray,
    angle_deg: float,
    center_yx: tuple[float, float] | None = None,
    fill: float = AIR_HU,
    rotation: np.ndarray | tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Rotate in the axial plane (last two axes) by ``angle_deg``, nearest neighbour, exact values.

    Every output voxel is either a copy of an input voxel or ``fill``; no value is interpolated.
    Positive angles turn the picture counter-clockwise in radiological display (rows = ``y``,
    columns = ``x``). All leading axes (channel, ``z``) are rotated with the same map, in one
    OpenCV call per 128 planes; arrays rotated by the same angle (or the same ``rotation`` map)
    take their voxels from exactly the same places, whatever their dtype.

    Speed: OpenCV wants the planes interleaved (``(y, x, planes)`` in memory). A view whose
    memory is already in that order (e.g. a MONAI ``(C, x, y, z)`` volume seen as ``(..., y, x)``)
    is rotated where it lies, into an output of the same memory layout, with no copy; other
    arrays are transposed once on the way in and once on the way out.

    Args:
        array: ``(..., y, x)`` array of any numeric or bool dtype.
        angle_deg: rotation angle in degrees.
        center_yx: centre of rotation in voxel coordinates ``(y, x)``; default the array centre.
        fill: value for voxels that come from outside the array (air ``-1024`` for HU images,
            ``0`` for masks).
        rotation: a precomputed :func:`rotation_map` or :func:`rotation_maps` (then ``angle_deg``
            and ``center_yx`` are not used).

    Returns:
        A new array with the shape and dtype of ``array``.
    """
    arr = np.asarray(array)
    h, w = arr.shape[-2:]
    if rotation is None:
        rotation = _coordinate_maps((h, w), angle_deg, center_yx)
    map1, map2 = rotation if isinstance(rotation, tuple) else (rotation, None)
    work = _cv_dtype(arr.dtype)
    n = int(np.prod(arr.shape[:-2], dtype=np.int64))
    border = (float(fill),) * 4  # OpenCV cycles a 4-tuple over the channels

    def remap(chunk, dst=None):
        return cv2.remap(
            chunk,
            map1,
            map2,
            cv2.INTER_NEAREST,
            dst=dst,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=border,
        )

    interleaved = np.moveaxis(arr, (-2, -1), (0, 1))  # (h, w, ...) view
    if n == 0:
        return np.empty_like(arr)
    if interleaved.flags.c_contiguous:
        # planes already interleaved in memory: rotate in place of a copy, same memory layout out
        out = np.empty_like(arr)  # order "K": the input's memory layout
        src = interleaved.reshape(h, w, n)
        dst = np.moveaxis(out, (-2, -1), (0, 1)).reshape(h, w, n)
        for start in range(0, n, _CV_CHANNELS):
            stop = min(start + _CV_CHANNELS, n)
            whole = start == 0 and stop == n
            chunk = src if whole else np.ascontiguousarray(src[..., start:stop])
            chunk = chunk.astype(work, copy=False)
            if chunk.shape[-1] == 1:
                chunk = chunk[..., 0]
            if whole and work == arr.dtype:
                target = dst if n > 1 else dst[..., 0]
                res = remap(chunk, target)
                if np.shares_memory(res, dst):
                    continue
            else:
                res = remap(chunk)
            dst[..., start:stop] = res.reshape(h, w, -1)
        return out
    planes = arr.reshape(-1, h, w)
    stack = np.ascontiguousarray(np.moveaxis(planes, 0, -1).astype(work, copy=False))  # (h, w, n)
    out = np.empty_like(stack)
    for start in range(0, stack.shape[-1], _CV_CHANNELS):
        chunk = np.ascontiguousarray(stack[..., start : start + _CV_CHANNELS])
        out[..., start : start + _CV_CHANNELS] = remap(chunk).reshape(h, w, -1)
    return np.moveaxis(out, -1, 0).reshape(arr.shape).astype(arr.dtype, copy=False)


def unrotate_axial(
    array: np.ndarray,
    angle_deg: float,
    center_yx: tuple[float, float] | None = None,
    fill: float = AIR_HU,
) -> np.ndarray:
    """Undo :func:`rotate_axial` by ``angle_deg``: exact wherever the rotation kept the voxel.

    Every input voxel that the forward rotation copied somewhere is put back exactly where it came
    from (scattering through the same :func:`rotation_map`); the few voxels the nearest-neighbour
    rotation dropped, and those that left the grid, are filled by rotating back (nearest) or with
    ``fill``. So ``unrotate_axial(rotate_axial(a, t), t)`` equals ``a`` on every voxel the rotation
    did not lose.
    """
    arr = np.asarray(array)
    h, w = arr.shape[-2:]
    rot = rotation_map((h, w), angle_deg, center_yx)
    out = rotate_axial(arr, -angle_deg, center_yx, fill=fill)
    sx = rot[..., 0].astype(np.int64).ravel()
    sy = rot[..., 1].astype(np.int64).ravel()
    ok = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    src_planes = arr.reshape(-1, h * w)
    dst_planes = out.reshape(-1, h * w)
    dst_planes[:, sy[ok] * w + sx[ok]] = src_planes[:, np.flatnonzero(ok)]
    return dst_planes.reshape(arr.shape)


# --------------------------------------------------------------------------- integer noise
def integer_noise(
    shape: tuple[int, ...], noise_range: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """Integers drawn uniformly from the closed range ``[low, high]`` (``int16``)."""
    low, high = int(noise_range[0]), int(noise_range[1])
    if high < low:
        raise ValueError(f"noise_range must be (low, high) with low <= high, got {noise_range}")
    return rng.integers(low, high + 1, size=shape, dtype=np.int16)


def add_integer_noise(
    image: np.ndarray,
    noise_range: tuple[int, int],
    rng: np.random.Generator,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """Add integer noise in HU, uniform in ``[low, high]``, to all voxels or only ``where``.

    Each affected voxel changes by an integer in the range; unaffected voxels keep their value.
    Integer dtypes saturate at their limits instead of wrapping.

    Args:
        image: HU array (any shape; int or float dtype).
        noise_range: closed integer range in HU, e.g. ``(0, 20)`` as in the MetaLung thesis.
        rng: the random generator.
        where: optional boolean array of ``image``'s shape; noise only there.
    """
    img = np.asarray(image)
    if where is None:
        noise = integer_noise(img.shape, noise_range, rng)
        return _plus_noise(img, noise, noise_range)
    sel = np.asarray(where, dtype=bool)
    if sel.shape != img.shape:
        raise ValueError(f"noise mask shape {sel.shape} does not match image shape {img.shape}")
    out = img.copy()
    # only the bounding box of ``where`` is indexed: the same voxels in the same (C) order
    box = _bbox(sel)
    if box is None:
        integer_noise((0,), noise_range, rng)  # the same draw as before (keeps the stream)
        return out
    sub, sel_b = out[box], sel[box]
    noise = integer_noise((int(np.count_nonzero(sel_b)),), noise_range, rng)
    sub[sel_b] = _plus_noise(sub[sel_b], noise, noise_range)
    return out


def _plus_noise(target: np.ndarray, noise: np.ndarray, noise_range: tuple[int, int]) -> np.ndarray:
    """``target + noise`` in ``target``'s dtype; integer dtypes saturate instead of wrapping."""
    if np.issubdtype(target.dtype, np.integer):
        info = np.iinfo(target.dtype)
        if target.size and (
            int(target.max()) + int(noise_range[1]) > info.max
            or int(target.min()) + int(noise_range[0]) < info.min
        ):
            return np.clip(target.astype(np.int64) + noise, info.min, info.max).astype(target.dtype)
    elif target.dtype in (np.float32, np.float64):  # int16 -> float is exact: no temporary
        return np.add(target, noise, dtype=target.dtype)
    return target + noise.astype(target.dtype)


# --------------------------------------------------------------------------- tumour components
@dataclass
class Component:
    """One connected tumour component: its bounding box and its voxels inside that box."""

    box: tuple[slice, ...]
    local: np.ndarray  # bool, shape of the box

    @property
    def voxels(self) -> int:
        return int(self.local.sum())

    def full(self, shape: tuple[int, ...]) -> np.ndarray:
        out = np.zeros(shape, bool)
        out[self.box] = self.local
        return out


def tumor_components(mask: np.ndarray) -> list[Component]:
    """Connected tumour components (full connectivity), largest first (ties: raster order).

    Labelling runs on the bounding boxes of the mask only (a tumour is small, a CT volume
    large): the mask is cut into slabs along the first axis at empty planes (nothing connects
    across one), and each slab is labelled on its own box. Labels are numbered slab after slab,
    which is the raster order a labelling of the whole array gives, so the components and their
    order are the same.
    """
    m = np.asarray(mask) != 0
    if m.ndim == 0:
        return []
    rows = np.flatnonzero(m.reshape(m.shape[0], -1).any(axis=1))
    if rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) > 1)
    starts = np.concatenate([[rows[0]], rows[breaks + 1]])
    stops = np.concatenate([rows[breaks], [rows[-1]]]) + 1
    structure = ndimage.generate_binary_structure(m.ndim, m.ndim)
    sizes_all: list[np.ndarray] = []
    pieces: list[tuple[tuple[slice, ...], np.ndarray, list]] = []
    for a, b in zip(starts, stops):
        slab = m[int(a) : int(b)]
        inner = _bbox(slab)
        box = (slice(int(a) + inner[0].start, int(a) + inner[0].stop), *inner[1:])
        labels, n = ndimage.label(m[box], structure=structure)
        sizes_all.append(np.bincount(labels.ravel(), minlength=n + 1)[1:])
        pieces.append((box, labels, ndimage.find_objects(labels)))
    sizes = np.concatenate(sizes_all)
    where = [(p, k) for p, (_, _, objects) in enumerate(pieces) for k in range(len(objects))]
    comps = []
    for g in np.argsort(-sizes, kind="stable"):
        p, k = where[g]
        box, labels, objects = pieces[p]
        local_box = objects[k]
        glob = tuple(slice(b.start + lb.start, b.start + lb.stop) for b, lb in zip(box, local_box))
        comps.append(Component(glob, labels[local_box] == k + 1))
    return comps


@dataclass
class ComponentResult:
    """What happened to one tumour component (recorded in the sample's metadata)."""

    component: int
    voxels: int
    applied: bool
    from_lung: str | None = None
    to_lung: str | None = None
    shift_voxels: list[int] = field(default_factory=list)
    angle_deg: float | None = None
    fallback: str | None = None
    reason: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None and v != []}


_LUNG_NAMES = {1: "right", 2: "left"}


def _bbox(mask: np.ndarray, pad: int | tuple[int, ...] = 0) -> tuple[slice, ...] | None:
    """Bounding box of the nonzero voxels, grown by ``pad`` voxels (per axis) within the array.

    One pass over the array (``any`` along the last axis), then one over the box found so far.
    """
    pads = (pad,) * mask.ndim if isinstance(pad, int) else tuple(pad)
    lead = mask.any(axis=-1)
    if not lead.any():
        return None
    box = []
    for ax in range(lead.ndim):
        idx = np.flatnonzero(
            lead.any(axis=tuple(a for a in range(lead.ndim) if a != ax)) if lead.ndim > 1 else lead
        )
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    last = np.flatnonzero(mask[tuple(box)].any(axis=tuple(range(mask.ndim - 1))))
    box.append(slice(int(last[0]), int(last[-1]) + 1))
    return tuple(
        slice(max(b.start - p, 0), min(b.stop + p, n)) for b, p, n in zip(box, pads, mask.shape)
    )


def _as3d(a: np.ndarray) -> np.ndarray:
    return a[None] if a.ndim == 2 else a


@functools.lru_cache(maxsize=8)
def _root_table(spacing: float, size: int) -> np.ndarray:
    """``float32(sqrt(k) * spacing)`` for the integers ``k < size`` (computed in float64)."""
    table = (np.sqrt(np.arange(size, dtype=np.float64)) * spacing).astype(np.float32)
    table.setflags(write=False)
    return table


def _inplane_distance(free3: np.ndarray, spacing_yx: tuple[float, float]) -> np.ndarray:
    """Per axial slice, the distance in mm from each free voxel to the nearest non-free one.

    The slice border counts as non-free. Square pixels use OpenCV's exact Euclidean transform
    (about 20 times faster than scipy on a 512 x 512 slice; its results are snapped to the exact
    square roots so that runs are bit-for-bit reproducible), others scipy's with ``sampling``.

    Snapping: OpenCV's ``float32`` distance is ``sqrt(k)`` for an integer ``k`` (the squared
    distance in pixels) to within an ulp, so ``rint(d * d)`` recovers ``k`` exactly (the error is
    below 0.2 for any slice up to 1,000 x 1,000 pixels, in ``float32``), and the result is read
    from a table of ``float32(sqrt(k) * spacing)``: the values the float64 formula gives, with no
    float64 temporaries.
    """
    return InplaneDistance(free3, spacing_yx).distance()


#: slices from which the distance maps are computed in two threads (fewer: not worth a thread)
_THREADED_SLICES = 24
_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _distance_pool() -> ThreadPoolExecutor | None:
    """Two threads for the distance maps of this process (None on one CPU); a process forked
    after the pool was made (a DataLoader worker) makes its own."""
    global _POOL
    if (os.cpu_count() or 1) < 2:
        return None
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(2, thread_name_prefix="metalung-distance"))
    return _POOL[1]


class InplaneDistance:
    """Per-slice distance maps of :func:`_inplane_distance`, kept in a form that is cheap to
    threshold and to update.

    Square pixels keep OpenCV's squared distance in pixels (an integer held exactly in
    ``float32`` after snapping):
    ``distance > t`` is then ``k >= k_min(t)``, where ``k_min`` is found in the table of
    ``float32(sqrt(k) * spacing)`` (which never decreases with ``k``), so thresholding gives the
    same voxels as the ``float32`` millimetre map without building it. Other pixels keep the
    ``float32`` map in mm.

    :meth:`update` recomputes only the slices whose free mask changed, so a search repeated
    after a small change (a tumour pasted, a place vacated) costs one comparison of the masks
    plus the changed slices, and gives the same maps as a new computation.
    """

    def __init__(self, free3: np.ndarray, spacing_yx: tuple[float, float]) -> None:
        self.spacing = (float(spacing_yx[0]), float(spacing_yx[1]))
        self.square = math.isclose(self.spacing[0], self.spacing[1], rel_tol=1e-3)
        nz, h, w = free3.shape
        self.free = np.array(free3, dtype=bool, copy=True)
        self.values = np.zeros(free3.shape, np.float32)
        size = 1 << int((h + 2) ** 2 + (w + 2) ** 2).bit_length()
        self._table = _root_table(self.spacing[0], size) if self.square else None
        self._slices(range(nz))

    def _slices(self, zs) -> None:
        zs = list(zs)
        pool = _distance_pool() if len(zs) >= _THREADED_SLICES else None
        if pool is None:
            self._slice_run(zs)
            return
        # OpenCV and scipy release the GIL: halves of the slices in two threads (each slice's
        # map depends on that slice only, so the maps are the same in any order)
        half = len(zs) // 2
        list(pool.map(self._slice_run, (zs[:half], zs[half:])))

    def _slice_run(self, zs) -> None:
        h, w = self.free.shape[1:]
        padded = np.zeros((h + 2, w + 2), np.uint8)  # the border is non-free; one per thread
        inner = padded[1:-1, 1:-1]
        for z in zs:
            sl = self.free[z]
            if not sl.any():
                self.values[z] = 0
                continue
            inner[...] = sl
            if self.square:
                d = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
                d = d[1:-1, 1:-1]
                # exact distances are square roots of integers; OpenCV's SIMD paths round the
                # last bit differently depending on buffer alignment, so snap them (reproducible)
                k = self.values[z]
                np.multiply(d, d, out=k)
                np.rint(k, out=k)
            else:
                self.values[z] = ndimage.distance_transform_edt(padded, sampling=self.spacing)[
                    1:-1, 1:-1
                ]

    def update(self, free3: np.ndarray) -> bool:
        """Recompute the slices where ``free3`` differs from the mask held; False (nothing done)
        when its shape differs."""
        if free3.shape != self.free.shape:
            return False
        changed = np.flatnonzero((self.free != free3).any(axis=(1, 2)))
        if changed.size:
            self.free[changed] = free3[changed]
            self._slices(changed)
        return True

    def greater(self, threshold: float) -> np.ndarray:
        """``distance > threshold`` (mm), voxel by voxel, as the float32 map would give it."""
        if not self.square:
            return self.values > threshold
        above = self._table > threshold  # the comparison the float32 map would make
        k_min = int(above.argmax()) if above[-1] else len(self._table)
        return self.values >= k_min

    def distance(self) -> np.ndarray:
        """The distance map in mm (``float32``)."""
        if not self.square:
            return self.values.copy()
        return np.take(self._table, self.values.astype(np.int32))


class DistanceCache:
    """The :class:`InplaneDistance` maps of the searches of one operation call, reused across its
    tumour components: a new search whose free mask has the shape of a held one updates it slice
    by slice (same maps as a new computation, see :meth:`InplaneDistance.update`)."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._held: list[InplaneDistance] = []

    def get(self, free3: np.ndarray, spacing_yx: tuple[float, float]) -> InplaneDistance:
        sp = (float(spacing_yx[0]), float(spacing_yx[1]))
        for i, held in enumerate(self._held):
            if held.spacing == sp and held.update(free3):
                self._held.insert(0, self._held.pop(i))
                return held
        new = InplaneDistance(free3, sp)
        self._held = [new, *self._held][: self.size]
        return new


def _all_within(mask3: np.ndarray, reach: int) -> np.ndarray:
    """True where ``mask3`` is True on every slice within ``reach`` slices (outside counts False).

    A sliding AND along ``z`` over ``2 * reach + 1`` slices, built by doubling (the AND over 1,
    2, 4, ... slices, then two overlapping spans): ``log2(reach)`` boolean passes.
    """
    if reach <= 0:
        return mask3
    nz = mask3.shape[0]
    out = np.zeros(mask3.shape, bool)
    width = 2 * reach + 1
    if nz < width:
        return out
    acc, span = mask3, 1  # acc[i]: mask3 on all of slices i .. i + span - 1
    while 2 * span <= width:
        acc = acc[:-span] & acc[span:]
        span *= 2
    n_out = nz - width + 1
    if span < width:
        np.logical_and(
            acc[:n_out], acc[width - span : width - span + n_out], out=out[reach : nz - reach]
        )
    else:
        out[reach : nz - reach] = acc[:n_out]
    return out


def _footprint(local: np.ndarray, spacing: tuple[float, ...]):
    """Offsets (voxels, relative to the box centre), in-plane radius in mm, half-height in slices."""
    coords = np.argwhere(local)
    centre = np.array([(s - 1) // 2 for s in local.shape])
    offsets = coords - centre
    sp = np.asarray(spacing[-2:], dtype=float)
    r_xy = float(np.sqrt(((offsets[:, -2:] * sp) ** 2).sum(axis=1)).max()) if len(offsets) else 0.0
    half_z = int(np.abs(offsets[:, 0]).max()) if local.ndim == 3 and len(offsets) else 0
    return offsets, centre, r_xy, half_z


def _fits(ok: np.ndarray, offsets: np.ndarray, centre: np.ndarray) -> bool:
    pts = offsets + centre
    if (pts < 0).any() or (pts >= np.asarray(ok.shape)).any():
        return False
    return bool(ok[tuple(pts.T)].all())


def _find_place(
    free: np.ndarray,
    offsets: np.ndarray,
    r_xy: float,
    half_z: int,
    spacing: tuple[float, ...],
    rng: np.random.Generator,
    margin_mm: float = 0.0,
    tries: int = 32,
    cache: DistanceCache | None = None,
) -> np.ndarray | None:
    """A random centre where every voxel of ``offsets`` lies in ``free``, more than ``margin_mm`` inside.

    Candidates come from per-slice Euclidean distance maps: a centre qualifies when, on every
    slice the footprint spans (plus the margin in slices), the distance to the nearest non-free
    voxel exceeds the footprint's in-plane radius plus the margin (a cylinder that holds the
    footprint: a sufficient condition); ``tries`` of them, drawn at random, are then checked voxel
    by voxel. When no voxel is that far, candidates at half the radius are checked too. Work is
    confined to the bounding box of ``free``.
    """
    return _search(free, None, offsets, r_xy, half_z, spacing, rng, margin_mm, None, tries, cache)


def _search(free, window, offsets, r_xy, half_z, spacing, rng, margin_mm, near, tries, cache=None):
    """:func:`_find_place` inside ``window`` (a box, or everything); with ``near`` (a voxel
    position) the ``tries`` candidates nearest to it are checked instead of random ones;
    ``cache``: a :class:`DistanceCache` shared by the searches of one call."""
    base = np.zeros(free.ndim, int) if window is None else np.array([w.start for w in window])
    region = free if window is None else free[window]
    box = _bbox(region)
    if box is None:
        return None
    origin = base + np.array([b.start for b in box])
    sub3 = _as3d(region[box])
    flat2d = free.ndim == 2
    off3 = (
        np.concatenate([np.zeros((len(offsets), 1), int), offsets], axis=1) if flat2d else offsets
    )
    sp3 = (1.0,) + tuple(spacing) if flat2d else tuple(spacing)
    m_z = 0 if flat2d or margin_mm <= 0 else int(math.ceil(margin_mm / sp3[0]))
    sp_yx = (float(sp3[1]), float(sp3[2]))
    dist = InplaneDistance(sub3, sp_yx) if cache is None else cache.get(sub3, sp_yx)
    reach = half_z + m_z
    ok = dist.greater(margin_mm) if margin_mm > 0 else sub3
    if m_z:
        ok = _all_within(ok, m_z)
    origin3 = np.concatenate([[0], origin]) if flat2d else origin
    for threshold in (r_xy + margin_mm, 0.5 * r_xy + margin_mm):
        cand = np.flatnonzero(_all_within(dist.greater(threshold), reach))
        if cand.size == 0:
            continue
        if near is None:
            picks = rng.choice(cand, size=min(tries, cand.size), replace=False)
        else:
            near3 = np.concatenate([[0], near]) if flat2d else np.asarray(near)
            pts = np.stack(np.unravel_index(cand, sub3.shape), axis=1) + origin3
            d = (((pts - near3) * np.asarray(sp3)) ** 2).sum(axis=1)
            picks = cand[np.argsort(d, kind="stable")[:tries]]
        for flat in picks:
            centre = np.array(np.unravel_index(int(flat), sub3.shape))
            if _fits(ok, off3, centre):
                hit = centre + origin3
                return hit[1:] if flat2d else hit
    return None


def fill_with_parenchyma(
    image: np.ndarray,
    region: np.ndarray,
    parenchyma: np.ndarray,
    spacing: tuple[float, ...],
    rng: np.random.Generator,
    source: np.ndarray | None = None,
    out: np.ndarray | None = None,
    cache: DistanceCache | None = None,
) -> tuple[np.ndarray, str]:
    """Fill ``region`` with lung parenchyma copied from elsewhere in the same image.

    The preferred donor is a patch of free parenchyma with the exact shape of ``region``, as close
    as possible to it (copying texture and noise as the scanner made them). When no such patch
    exists, voxels are drawn at random from the parenchyma nearest to the region. The result
    never contains a value that was not in ``source`` (default ``image``): no hole, no air,
    no copy of a tumour.

    Args:
        image: canonical HU array.
        region: boolean mask of the voxels to fill.
        parenchyma: boolean mask of donor voxels (free lung parenchyma; ``region`` is excluded).
        spacing: voxel size in mm (same axis order).
        rng: random generator.
        source: array to copy donor values from (default ``image``).
        out: array to write into (default a copy of ``image``).
        cache: distance maps shared with the other searches of the call (:class:`DistanceCache`),
            used by the search over the whole lung (the window search is small and new each time).

    Returns:
        ``(filled_image, how)`` with ``how`` in ``{"patch", "sampled", "none"}``.
    """
    src = image if source is None else source
    out = image.copy() if out is None else out
    box = _bbox(region)
    if box is None:
        return out, "none"
    offsets, centre_local, r_xy, half_z = _footprint(region[box], spacing)
    centre = centre_local + np.array([s.start for s in box])
    # donors near the region first (a window of ~40 mm), the whole lung only if none fits there
    win = tuple(
        slice(max(int(c) - w, 0), min(int(c) + w + 1, n))
        for c, w, n in zip(
            centre, (max(int(math.ceil(40.0 / sp)), 1) for sp in spacing), region.shape
        )
    )
    w0 = np.array([w.start for w in win])
    place = _search(
        parenchyma[win] & ~region[win],
        None,
        offsets,
        r_xy,
        half_z,
        spacing,
        rng,
        0.0,
        centre - w0,
        16,
    )
    if place is not None:
        place = place + w0
    else:
        place = _search(
            parenchyma & ~region, None, offsets, r_xy, half_z, spacing, rng, 0.0, centre, 16, cache
        )
    targets = tuple((offsets + centre).T)
    if place is not None:
        out[targets] = src[tuple((offsets + place).T)]
        return out, "patch"
    pool = np.argwhere(parenchyma[win] & ~region[win]) + w0
    if len(pool) == 0:
        donor_free = parenchyma & ~region
        pool = np.argwhere(donor_free)
    if len(pool) == 0:
        return out, "none"
    d2 = (((pool - centre) * np.asarray(spacing)) ** 2).sum(axis=1)
    nearest = pool[np.argsort(d2, kind="stable")[: max(len(offsets) * 4, 64)]]
    picks = nearest[rng.integers(0, len(nearest), size=len(offsets))]
    out[targets] = src[tuple(picks.T)]
    return out, "sampled"


def _cut_region(
    comp: Component, lungs: np.ndarray, ring: int
) -> tuple[tuple[slice, ...], np.ndarray]:
    """The tumour plus a ring of ``ring`` voxels inside the lung (its partial-volume halo).

    Returns ``(box, local)``: a box around the cut region and the region inside it.
    """
    if ring <= 0:
        return comp.box, comp.local.copy()
    shape = lungs.shape
    pad = tuple(
        slice(max(b.start - ring, 0), min(b.stop + ring, n)) for b, n in zip(comp.box, shape)
    )
    local = np.zeros(tuple(p.stop - p.start for p in pad), bool)
    inner = tuple(slice(b.start - p.start, b.stop - p.start) for b, p in zip(comp.box, pad))
    local[inner] = comp.local
    grown = ndimage.binary_dilation(
        local, ndimage.generate_binary_structure(local.ndim, local.ndim), iterations=ring
    )
    return pad, local | (grown & (lungs[pad] > 0))


def _source_lung(comp: Component, lungs: np.ndarray) -> int | None:
    labels = lungs[comp.box][comp.local]
    labels = labels[labels > 0]
    if labels.size:
        return int(np.bincount(labels, minlength=3)[1:3].argmax() + 1)
    # a tumour outside the lung mask (e.g. a mask from another tool): the nearest lung
    lung_pts = np.argwhere(lungs > 0)
    if len(lung_pts) == 0:
        return None
    first = np.argwhere(comp.local)[0] + np.array([b.start for b in comp.box])
    nearest = lung_pts[np.argmin(((lung_pts - first) ** 2).sum(axis=1))]
    return int(lungs[tuple(nearest)])


def _union_box(*boxes: tuple[slice, ...] | None) -> tuple[slice, ...]:
    """The smallest box holding every given box (``None`` entries are skipped)."""
    given = [b for b in boxes if b is not None]
    return tuple(
        slice(min(b[i].start for b in given), max(b[i].stop for b in given))
        for i in range(len(given[0]))
    )


def _shift(box: tuple[slice, ...], frame: tuple[slice, ...]) -> tuple[slice, ...]:
    """``box`` in the coordinates of ``frame`` (which holds it)."""
    return tuple(slice(b.start - f.start, b.stop - f.start) for b, f in zip(box, frame))


def _to_global(box: tuple[slice, ...], local: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, bool)
    out[box] = local
    return out


#: HU above which a lung voxel is calcium (as :data:`metalung_monai.anatomy.CALCIFICATION_HU`):
#: never engulfed by a relocated tumour
CALCIFICATION_HU = 200.0


def engulfable_vessels(
    dense: np.ndarray,
    image: np.ndarray,
    spacing: tuple[float, ...],
    min_vessel_mm: float,
    calcification_hu: float = CALCIFICATION_HU,
) -> np.ndarray:
    """The dense voxels a large tumour may cover: vessels (and airway walls) thinner than
    ``min_vessel_mm``, never calcium.

    A real tumour grows around the small vessels in its way; it does not grow around a large
    vessel, an airway, the mediastinum or a calcification. The local calibre of a dense
    structure comes from the Euclidean distance transform of ``dense`` (``sampling=spacing``):
    a voxel at distance ``e`` from the nearest non-dense voxel lies in a structure of local
    diameter at least ``2 * e - s`` (``s`` the smallest voxel size: exact for a structure an odd
    number of voxels wide, one voxel less for an even width). The *core* of the structures wider
    than ``min_vessel_mm`` is where ``2 * e - s > min_vessel_mm``; every dense voxel within
    ``(min_vessel_mm + s) / 2 + s`` of that core belongs to a wide structure (its wall included)
    and keeps blocking. The rest of ``dense``, minus voxels above ``calcification_hu``, may be
    covered.

    Args:
        dense: boolean dense structures inside the lungs (``(y, x)`` or ``(z, y, x)``).
        image: HU array of the same shape.
        spacing: voxel size in mm, same axis order.
        min_vessel_mm: diameter in mm above which a vessel blocks placement.
        calcification_hu: voxels above this HU always block.

    Returns:
        ``bool`` array of the shape of ``dense``.
    """
    d = np.asarray(dense, dtype=bool)
    out = np.zeros(d.shape, bool)
    box = _bbox(d)
    if box is None:
        return out
    sub = np.pad(d[box], 1)  # beyond the box is not dense
    sp = tuple(float(v) for v in spacing)
    s = min(sp)
    reach = 0.5 * (float(min_vessel_mm) + s)
    edt = ndimage.distance_transform_edt(sub, sampling=sp)
    core = edt > reach
    small = sub.copy()
    if core.any():
        near_core = ndimage.distance_transform_edt(~core, sampling=sp) <= reach + s
        small &= ~near_core
    inner = tuple(slice(1, -1) for _ in range(sub.ndim))
    out[box] = small[inner] & ~(np.asarray(image)[box] > calcification_hu)
    return out


def _largest_free_radius(free: np.ndarray, spacing: tuple[float, ...], reach: int) -> float:
    """The radius (mm) of the largest disc free on ``2 * reach + 1`` consecutive slices: the
    largest, over centres, of the smallest in-plane distance to a non-free voxel on the slices
    within ``reach`` (what the search of :func:`_find_place` thresholds; 0 when none)."""
    box = _bbox(free)
    if box is None:
        return 0.0
    sub3 = _as3d(free[box])
    sp_yx = (float(spacing[-2]), float(spacing[-1]))
    dist = InplaneDistance(sub3, sp_yx).distance()
    if reach > 0:
        dist = ndimage.minimum_filter1d(dist, 2 * reach + 1, axis=0, mode="constant", cval=0.0)
    return float(dist.max())


def _no_room_reason(
    comp: Component,
    spacing: tuple[float, ...],
    r_xy: float,
    half_z: int,
    margin_mm: float,
    order: list[int],
    src_lung: int,
    largest: dict[int, float | None],
    min_vessel_mm: float | None,
) -> str:
    """What blocked placement: the tumour's size, what it needs, the largest free room per lung."""
    size = comp.voxels * float(np.prod(spacing))
    size_txt = f"{size / 1000.0:.1f} cm3" if comp.local.ndim == 3 else f"{size:.0f} mm2"
    slices = f" on {2 * half_z + 1} slices (plus the margin)" if half_z else ""
    rooms = []
    for target in order:
        side = "same" if target == src_lung else "opposite"
        r = largest.get(target)
        rooms.append(
            f"{side} ({_LUNG_NAMES[target]}) lung " + ("absent" if r is None else f"{2 * r:.0f} mm")
        )
    rule = (
        "every dense voxel blocks"
        if min_vessel_mm is None
        else f"vessels up to {min_vessel_mm:g} mm engulfed"
    )
    return (
        f"no free lung space large enough: tumour {size_txt} needs a free disc of "
        f"{2 * (r_xy + margin_mm):.0f} mm ({2 * r_xy:.0f} mm wide plus {margin_mm:g} mm margin, "
        f"half of that at the least){slices}; largest free disc"
        + (" on as many slices" if half_z else "")
        + " in the "
        + ", ".join(rooms)
        + f" ({rule})"
    )


def relocate_tumors(
    image: np.ndarray,
    mask: np.ndarray,
    lungs: np.ndarray,
    dense: np.ndarray,
    spacing: tuple[float, ...],
    rng: np.random.Generator,
    *,
    margin_mm: float = 2.0,
    ring: int = 1,
    rotate_180: bool = True,
    opposite_first: bool = True,
    min_vessel_mm: float | None = 3.0,
    out_image: np.ndarray | None = None,
    out_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list[ComponentResult]]:
    """Move every tumour component into free lung space, the opposite lung first (MetaLung op 2).

    Each connected component of ``mask`` (with a ``ring``-voxel halo inside the lung) is cut out,
    rotated by 180 degrees in the axial plane, and pasted where it fits entirely inside free
    parenchyma of the opposite lung, more than ``margin_mm`` from vessels, pleura,
    calcifications and other tumours; if the opposite lung has no room, elsewhere in the same
    lung. A tumour too large for any vessel-free room (a real mass of tens of cm3 in a lung
    full of small vessels) then gets a second search in both lungs, in the same order, where
    vessels (and airway walls) thinner than ``min_vessel_mm`` may be covered, as a real tumour
    engulfs them (:func:`engulfable_vessels`): pleura, mediastinum, wider vessels and airways,
    calcifications (> 200 HU) and other tumours still block, with the margin. A tumour that
    fits clear of every vessel is placed exactly as without this rule. If nothing fits the
    component stays where it is (``applied=False``) and ``reason`` says why: the tumour's size,
    the free disc it needs and the largest free disc found in each lung. The vacated
    place is filled with parenchyma copied from the same lung (:func:`fill_with_parenchyma`).
    The new mask is exactly the moved tumour. In 3D the whole tumour volume moves; a volume of
    one slice (a 2D patch stored as 3D) is relocated as the slice it is (no margin across
    slices it does not have).

    Args:
        image: canonical HU array ``(y, x)`` or ``(z, y, x)``.
        mask: tumour mask of the same shape (nonzero = tumour).
        lungs: lung labels (0 outside, 1 right, 2 left), same shape.
        dense: boolean dense structures inside the lungs (vessels, airway walls, calcifications,
            nodules), same shape.
        spacing: voxel size in mm, same axis order.
        rng: random generator (positions and donor patches).
        margin_mm: minimum distance kept from anything that is not free parenchyma.
        ring: halo voxels moved with the tumour (its blurred boundary), inside the lung only.
        rotate_180: rotate the tumour by 180 degrees (the thesis' choice) before pasting.
        opposite_first: try the opposite lung first (else the same lung first).
        min_vessel_mm: vessel diameter in mm up to which a tumour with no vessel-free room may
            cover vessels (3.0; ``None``: every dense voxel always blocks, the rule before).
            Such a placement is recorded in ``fallback`` (``"vessels up to 3 mm engulfed"``).
        out_image, out_mask: arrays to write the result into (each must start equal to
            ``image`` / ``mask``); by default new arrays.

    Returns:
        ``(image, mask, results)``: the new image and mask (uint8 {0, 1} unless ``out_mask`` was
        given) and one :class:`ComponentResult` per component.
    """
    kwargs = {
        "margin_mm": margin_mm,
        "ring": ring,
        "rotate_180": rotate_180,
        "opposite_first": opposite_first,
        "min_vessel_mm": min_vessel_mm,
    }
    if np.ndim(image) == 3 and np.shape(image)[0] == 1:
        # one slice (e.g. a 2D patch stored as a volume): the slice problem, with no slices
        # above or below in which a margin could be kept
        out_i, out_m, results = relocate_tumors(
            np.asarray(image)[0],
            np.asarray(mask)[0],
            np.asarray(lungs)[0],
            np.asarray(dense)[0],
            tuple(spacing)[1:],
            rng,
            **kwargs,
            out_image=None if out_image is None else out_image[0],
            out_mask=None if out_mask is None else out_mask[0],
        )
        for r in results:
            r.shift_voxels = [0, *r.shift_voxels] if r.shift_voxels else r.shift_voxels
        return (
            out_i[None] if out_image is None else out_image,
            out_m[None] if out_mask is None else out_mask,
            results,
        )
    img = np.asarray(image)
    msk = np.asarray(mask) != 0
    lungs = np.asarray(lungs)
    spacing = tuple(float(s) for s in spacing)
    comps = tumor_components(msk)
    out_img = img.copy() if out_image is None else out_image
    out_msk = msk.astype(np.uint8) if out_mask is None else out_mask
    results: list[ComponentResult] = []
    if not comps:
        return out_img, out_msk, results
    cuts = [_cut_region(c, lungs, ring) for c in comps]
    blocked = np.asarray(dense, dtype=bool) | msk
    for box, local in cuts:
        blocked[box] |= local
    # free space is looked for inside each lung's bounding box only (the search crops to the free
    # voxels' own box anyway, so the same candidates come out in the same order)
    in_lung = {label: lungs == label for label in _LUNG_NAMES}
    lung_boxes = {label: _bbox(in_lung[label]) for label in _LUNG_NAMES}
    # each lung's free voxels, kept up to date as tumours are pasted (only near each one)
    free_of = {label: in_lung[label] & ~blocked for label in _LUNG_NAMES}
    del in_lung, blocked
    cache = DistanceCache()  # each lung's free space changes little from one component to the next
    # free space where small vessels may be covered: made only when a tumour needs it
    wide_of: dict[int, np.ndarray] | None = None
    pasted_near: list[tuple[tuple[slice, ...], np.ndarray]] = []

    def free_with_small_vessels() -> dict[int, np.ndarray]:
        engulf = engulfable_vessels(dense, img, spacing, min_vessel_mm)
        engulf &= ~msk
        for cbox, clocal in cuts:
            engulf[cbox] &= ~clocal
        for nbox, near in pasted_near:
            engulf[nbox] &= ~near
        return {label: free_of[label] | ((lungs == label) & engulf) for label in _LUNG_NAMES}

    def search(maps, target):
        lbox = lung_boxes[target]
        if lbox is None:
            return None
        place = _find_place(
            maps[target][lbox],
            offsets,
            r_xy,
            half_z,
            spacing,
            rng,
            margin_mm=margin_mm,
            cache=cache,
        )
        return None if place is None else place + np.array([b.start for b in lbox])

    for k, comp in enumerate(comps):
        box, cut = cuts[k]
        res = ComponentResult(component=k, voxels=comp.voxels, applied=False)
        src_lung = _source_lung(comp, lungs)
        if src_lung is None:
            res.reason = "no lung mask"
            results.append(res)
            continue
        res.from_lung = _LUNG_NAMES[src_lung]
        comp_in_cut = np.zeros_like(cut)
        comp_in_cut[
            tuple(slice(b.start - p.start, b.stop - p.start) for b, p in zip(comp.box, box))
        ] = comp.local
        vals = img[box]
        if rotate_180:
            cut_p, comp_p, vals = (
                np.flip(cut, (-2, -1)),
                np.flip(comp_in_cut, (-2, -1)),
                np.flip(vals, (-2, -1)),
            )
        else:
            cut_p, comp_p = cut, comp_in_cut
        offsets, centre_local, r_xy, half_z = _footprint(cut_p, spacing)
        other = 3 - src_lung
        order = [other, src_lung] if opposite_first else [src_lung, other]
        # clear of every dense voxel first; then, if allowed, over small vessels
        place, attempt, target, engulfs = None, 0, order[0], False
        for engulfs in (False, True) if min_vessel_mm is not None else (False,):
            if engulfs and wide_of is None:
                wide_of = free_with_small_vessels()
            maps = wide_of if engulfs else free_of
            for attempt, target in enumerate(order):  # noqa: B007 (used after the loop)
                place = search(maps, target)
                if place is not None:
                    break
            if place is not None:
                break
        if place is None:
            maps = free_of if wide_of is None else wide_of
            m_z = int(math.ceil(margin_mm / spacing[0])) if img.ndim == 3 and margin_mm > 0 else 0
            largest = {
                t: None
                if lung_boxes[t] is None
                else _largest_free_radius(maps[t][lung_boxes[t]], spacing, half_z + m_z)
                for t in order
            }
            res.reason = _no_room_reason(
                comp, spacing, r_xy, half_z, margin_mm, order, src_lung, largest, min_vessel_mm
            )
            results.append(res)
            continue
        src_pts = tuple((offsets + centre_local).T)
        dst_pts = tuple((offsets + place).T)
        # the fill works in a frame holding the source lung and the vacated place: the same
        # donors in the same order as on the whole array (see fill_with_parenchyma)
        frame = _union_box(lung_boxes[src_lung], box)
        vacated = _to_global(_shift(box, frame), cut, tuple(f.stop - f.start for f in frame))
        parenchyma = free_of[src_lung][frame]
        _, how = fill_with_parenchyma(
            img[frame],
            vacated,
            parenchyma,
            spacing,
            rng,
            source=img[frame],
            out=out_img[frame],
            cache=cache,
        )
        out_msk[comp.box][comp.local] = 0
        out_img[dst_pts] = vals[src_pts]
        comp_pts = np.argwhere(comp_p)
        out_msk[tuple((comp_pts - centre_local + place).T)] = 1
        # keep later components away from the pasted one (1 voxel of clearance)
        lo = np.maximum(np.min(np.asarray(dst_pts), axis=1) - 1, 0)
        hi = np.minimum(np.max(np.asarray(dst_pts), axis=1) + 2, np.asarray(img.shape))
        nb = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        pasted = np.zeros(tuple(b - a for a, b in zip(lo, hi)), bool)
        pasted[tuple((np.asarray(dst_pts).T - lo).T)] = True
        near_pasted = ndimage.binary_dilation(
            pasted, ndimage.generate_binary_structure(pasted.ndim, pasted.ndim)
        )
        for lung_free in free_of.values():
            lung_free[nb] &= ~near_pasted
        for lung_free in (wide_of or {}).values():
            lung_free[nb] &= ~near_pasted
        pasted_near.append((nb, near_pasted))
        orig_centre = centre_local + np.array([b.start for b in box])
        res.applied = True
        res.to_lung = _LUNG_NAMES[target]
        res.shift_voxels = [int(v) for v in place - orig_centre]
        fallback = (
            [] if attempt == 0 else [("same lung" if target == src_lung else "opposite lung")]
        )
        if engulfs:
            fallback.append(f"vessels up to {min_vessel_mm:g} mm engulfed")
        res.fallback = ", ".join(fallback) or None
        res.reason = f"vacated place filled ({how})"
        results.append(res)
    return out_img, out_msk, results


def rotate_tumors(
    image: np.ndarray,
    mask: np.ndarray,
    lungs: np.ndarray,
    dense: np.ndarray,
    spacing: tuple[float, ...],
    rng: np.random.Generator,
    angles_deg: list[float],
    *,
    ring: int = 0,
    tries: int = 4,
    angle_range: tuple[float, float] = (1.0, 90.0),
    max_clip: float = 0.1,
    out_image: np.ndarray | None = None,
    out_mask: np.ndarray | None = None,
    components: list[Component] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[ComponentResult]]:
    """Rotate each tumour component in place about its own centre (MetaLung op 4).

    The tumour is rotated in the axial plane by ``angles_deg[k]`` (nearest neighbour, exact
    values); the rest of the image is unchanged, except the voxels the tumour no longer covers,
    which are filled with parenchyma copied from the same lung. Tumour voxels that a rotation
    would push onto vessels, pleura or out of the lung are not pasted (a juxtapleural tumour
    stays flat against the pleura); an angle that loses more than ``max_clip`` of the tumour is
    retried with a new angle from ``angle_range`` (same sign), up to ``tries`` angles in all,
    keeping the best one; when every angle loses more, the component is left as it was
    (``applied=False``).

    Args:
        image, mask, lungs, dense, spacing, rng, out_image, out_mask: as :func:`relocate_tumors`.
        angles_deg: first angle to try for each component (degrees, signed).
        ring: halo voxels rotated with the tumour (default 0: the tumour turns about its own
            centre, its partial-volume halo stays a good fit).
        tries: angles tried per component.
        angle_range: range of absolute angles for retries.
        max_clip: largest fraction of tumour voxels that may be dropped at the pleura / vessels.
        components: ``tumor_components(mask)`` when the caller has it already.

    Returns:
        ``(image, mask, results)`` as :func:`relocate_tumors`.
    """
    img = np.asarray(image)
    msk = np.asarray(mask) != 0
    lungs = np.asarray(lungs)
    dense = np.asarray(dense, dtype=bool)
    spacing = tuple(float(s) for s in spacing)
    comps = tumor_components(msk) if components is None else components
    out_img = img.copy() if out_image is None else out_image
    out_msk = msk.astype(np.uint8) if out_mask is None else out_mask
    results: list[ComponentResult] = []
    lung_boxes: dict[int, tuple[slice, ...] | None] = {}
    for k, comp in enumerate(comps):
        cbox, cut_local = _cut_region(comp, lungs, ring)
        res = ComponentResult(component=k, voxels=comp.voxels, applied=False)
        src_lung = _source_lung(comp, lungs)
        res.from_lung = _LUNG_NAMES.get(src_lung) if src_lung else None
        # a box large enough for any rotation of the cut region about its centre of mass
        coords = np.argwhere(cut_local) + np.array([b.start for b in cbox])
        cy, cx = coords[:, -2].mean(), coords[:, -1].mean()
        half = (
            int(math.ceil(math.hypot(np.ptp(coords[:, -2]) + 1, np.ptp(coords[:, -1]) + 1) / 2.0))
            + 1
        )
        ylo, yhi = max(int(cy) - half, 0), min(int(cy) + half + 2, img.shape[-2])
        xlo, xhi = max(int(cx) - half, 0), min(int(cx) + half + 2, img.shape[-1])
        box = tuple(cbox[:-2]) + (slice(ylo, yhi), slice(xlo, xhi))
        centre = (cy - ylo, cx - xlo)
        shape_b = tuple(b.stop - b.start for b in box)

        def local(box_src, arr_local, shape_b=shape_b, box=box):
            out = np.zeros(shape_b, bool)
            sl = tuple(slice(a.start - b.start, a.stop - b.start) for a, b in zip(box_src, box))
            out[sl] = arr_local
            return out

        comp_b = local(comp.box, comp.local)
        cut_b = local(cbox, cut_local)
        # tumour voxels may land on free parenchyma or where the tumour already is; halo voxels
        # also where the old halo was (it is vacated); nothing lands on vessels or other tumours
        base = (lungs[box] > 0) & ~dense[box] & ~(msk[box] & ~comp_b)
        allowed = base | comp_b
        allowed_ring = base | cut_b
        sign = 1.0 if angles_deg[k] >= 0 else -1.0
        angle = float(angles_deg[k])
        best = None  # (lost fraction, angle, new_cut, new_comp)
        for _attempt in range(tries):
            rot = rotation_map(shape_b[-2:], angle, centre)
            new_cut = rotate_axial(cut_b, angle, fill=0, rotation=rot)
            new_comp = rotate_axial(comp_b, angle, fill=0, rotation=rot)
            if new_comp.any():
                lost = float((new_comp & ~allowed).sum()) / float(new_comp.sum())
                if best is None or lost < best[0]:
                    kept = new_comp & allowed
                    best = (lost, angle, (new_cut & allowed_ring) | kept, kept, rot)
                if lost == 0.0:
                    break
            angle = sign * float(rng.uniform(*angle_range))
        if best is None or best[0] > max_clip:
            res.reason = (
                "every tried angle pushed more than "
                f"{max_clip:.0%} of the tumour onto vessels, pleura or out of the lung"
            )
            results.append(res)
            continue
        lost, angle, new_cut, new_comp, rot = best
        new_vals = rotate_axial(img[box], angle, fill=AIR_HU, rotation=rot)
        vacated_b = cut_b & ~new_cut
        if vacated_b.any() and src_lung:
            # in a frame holding the source lung and the box: the same donors in the same order
            # as on the whole array (see relocate_tumors)
            if src_lung not in lung_boxes:
                lung_boxes[src_lung] = _bbox(lungs == src_lung)
            frame = _union_box(lung_boxes[src_lung], box)
            in_frame = _shift(box, frame)
            parenchyma = (lungs[frame] == src_lung) & ~dense[frame] & ~msk[frame]
            parenchyma[in_frame] &= ~cut_b
            _, how = fill_with_parenchyma(
                img[frame],
                _to_global(in_frame, vacated_b, parenchyma.shape),
                parenchyma,
                spacing,
                rng,
                source=img[frame],
                out=out_img[frame],
            )
        else:
            how = "none"
        patch = out_img[box]
        patch[new_cut] = new_vals[new_cut]
        mpatch = out_msk[box]
        mpatch[comp_b] = 0
        mpatch[new_comp] = 1
        res.applied, res.angle_deg = True, round(angle, 3)
        notes = []
        if vacated_b.any():
            notes.append(f"vacated voxels filled ({how})")
        if lost > 0:
            notes.append(f"{lost:.1%} of the rotated tumour fell on pleura/vessels and was clipped")
        res.reason = "; ".join(notes) or None
        results.append(res)
    return out_img, out_msk, results


# the British spellings, kept for code written before the public API settled on "tumor"
relocate_tumours = relocate_tumors
rotate_tumours = rotate_tumors
tumour_components = tumor_components
