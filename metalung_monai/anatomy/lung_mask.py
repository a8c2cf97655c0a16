"""Lung masks by HU thresholds, with right/left labels (1 = right lung, 2 = left lung).

The method (details and limits in ``docs/anatomy.md``) works on *canonical* arrays (see
:mod:`metalung_monai.utils.orientation`): a 2D axial slice ``(y, x)`` or a volume ``(z, y, x)``
with ``x`` towards the patient's left, ``y`` posterior and ``z`` superior.

0. Steps 1-6 run on a grid of blocks of ``f x f`` voxels in-plane, ``f = floor(GRID_MM / pixel)``
   (``GRID_MM`` 1.75 mm: 3 at 0.5-0.58 mm, 2 at 0.59-0.87 mm, full resolution from 0.88 mm). A block
   is air when all its voxels are and tissue when any is (thin walls between a lung and bowel gas
   survive). The labels are carried back to the full-resolution air voxels of lung blocks and of
   mixed blocks next to them (never next to an airway block); steps 7-8 run at full resolution.
1. Values below -1024 HU (field-of-view padding such as -2048 or -3024) count as air.
2. Body: the largest connected component of tissue (``> body_threshold``, -500 HU), its holes
   filled per axial slice. Air outside the body (room air, air outside the field of view, air in
   the table or clothes) is therefore never lung. The body's midline in each slice is the centre
   of its deepest part (in-plane distance to the body surface).
3. Candidate lung: voxels of the filled body below ``air_threshold`` (-320 HU); at least
   ``MIN_DEEP_SHARE`` (half) of a component must lie ``min_depth_mm`` (15 mm) or more inside the
   body (air gaps under the skin, a blanket, or between the back and a table that touches it and
   so encloses the gap in the body outline, do not).
4. Airways: the trachea and main bronchi are found as small, compact air components near the
   midline (the seed) and followed from slice to slice downwards while their 2D components stay
   small; where the airway merges in-plane with a lung, it is cut off by an erosion of 1-5 mm
   (when that separates it). A seed is kept when the tube is at least ``airway_min_length_mm``
   long. In a single 2D slice, every small air component near the midline (trachea, main
   bronchus, oesophagus) is removed.
5. Bowel gas and small air pockets: lungs are thoracic and every lung section reaches the back of
   the chest, while gas in the stomach or colon of a supine patient floats to the front: a
   component (3D; 2D in a slice) must reach ``MIN_POSTERIOR_REACH`` (65 %) of the body's
   front-to-back extent of its slices. Components smaller than ``min_lung_fraction`` of the
   largest remaining one are dropped; in a volume, components whose centre lies below the lowest
   tenth of the largest component (a lung) are dropped too (gas under the diaphragm).
6. Right/left: each component is assigned to the side of the midline that holds most of it. A
   component spread over both sides (lungs touching at the anterior or posterior junction) is
   eroded (Euclidean distance in mm) until two large parts appear, one on each side; every voxel
   then takes the label of the nearest part.
7. Holes are filled per axial slice and per lung (vessels, nodules and tumours inside the lung
   become lung).
8. Juxtapleural tumours form notches in the lung border. Per slice and per lung, the concavities
   between the lung and its convex hull are filled when they are small (area up to that of a
   disc of ``notch_max_diameter_mm``) and open onto the chest wall (they touch the outside of the
   convex hull of both lungs, so concavities facing the mediastinum - hilum, heart - are left
   alone) and deep enough to hold a nodule (not a sliver between ribs); bone
   (``>= bone_threshold``, 300 HU) is never added.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from tqdm.auto import tqdm

from ..errors import InputError
from ._checks import as_volume
from ._images import check_same_grid, from_canonical_image, to_canonical_image
from ._morph import (
    INPLANE_SQUARE,
    bbox_slices,
    closing_3x3,
    convex_hull_2d,
    dilate_3x3,
    fill_holes_per_slice,
    label_per_slice,
    largest_component,
)
from .plausibility import check_lung_mask
from .settings import LEFT_LUNG, RIGHT_LUNG, LungMaskSettings

__all__ = ["RIGHT_LUNG", "LEFT_LUNG", "LungMaskSettings", "lung_mask", "lung_mask_image"]

log = logging.getLogger(__name__)


def lung_mask(
    hu,
    spacing,
    *,
    settings: LungMaskSettings | None = None,
    fill_holes: bool = True,
    close_notches: bool = True,
    progress: bool = True,
    require_lungs: bool = False,
) -> np.ndarray:
    """Right/left lung labels of a canonical CT slice or volume, by HU thresholds.

    Args:
        hu: canonical array of HU, 2D ``(y, x)`` or 3D ``(z, y, x)`` (``x`` towards patient left,
            ``y`` posterior, ``z`` superior), any integer or float dtype. Air is about -1000,
            water 0; values below -1024 (field-of-view padding) are treated as air.
        spacing: voxel size in mm in the same axis order (``(sy, sx)`` or ``(sz, sy, sx)``).
        settings: thresholds and sizes, see :class:`LungMaskSettings`.
        fill_holes: fill holes per axial slice and lung (vessels and nodules become lung).
        close_notches: fill juxtapleural notches (see the module docstring).
        progress: show a progress bar over slices for volumes (only on a terminal).
        require_lungs: raise when the result is not a plausible pair of lungs (an image of
            random noise, air or water; see :mod:`metalung_monai.anatomy.plausibility`). Off by
            default: an empty or odd mask of a crop or patch is a valid answer.

    Returns:
        ``uint8`` array of the same shape: 0 background, 1 right lung, 2 left lung.

    Raises:
        InputError: the array is not 2D/3D, is empty, holds NaN, or ``spacing`` does not fit;
            with ``require_lungs``, ``no lungs found: <why>``.
    """
    vol, sp, was_2d = as_volume(hu, spacing, "lung_mask(hu)")
    cfg = settings or LungMaskSettings()
    labels, _ = _lung_labels(vol, sp, cfg, fill_holes, close_notches, progress)
    if require_lungs:
        check_lung_mask(vol, labels, sp, source="lung_mask(hu)", settings=cfg)
    return labels[0] if was_2d else labels


def patch_lung_mask(hu, below_hu: float = -500.0, edge_px: int = 4) -> np.ndarray:
    """Lung of a patch cut from inside the chest, where :func:`lung_mask` finds none (no body
    outline around it: the MSD tumour-centred patches): the voxels below ``below_hu``, opened by
    one voxel, less ``edge_px`` voxels at the patch's border (the border is a cut, not pleura;
    nothing placed in the lung then reaches it). One label, :data:`RIGHT_LUNG`: a patch does not
    show which lung it is in.

    Args:
        hu: a 2D ``(y, x)`` or 3D ``(z, y, x)`` array of HU (any axis order: nothing here depends
            on orientation; a volume of one slice is processed as that slice; in 3D the border
            is cut on every axis of more than ``2 * edge_px`` voxels, so a thin stack of slices
            keeps its slices).
        below_hu: the lung threshold in HU (-500: parenchyma, not solid tumour or vessel walls).
        edge_px: border width in voxels.

    Returns:
        ``uint8`` array of ``hu``'s shape: 0 background, 1 lung.

    Raises:
        InputError: not a 2D or 3D array, or a negative ``edge_px``.
    """
    a = np.asarray(hu)
    if a.ndim not in (2, 3) or a.size == 0:
        raise InputError("patch_lung_mask(hu)", f"expected a 2D or 3D array, got shape {a.shape}")
    if edge_px < 0:
        raise InputError("edge_px", f"expected a border width >= 0 voxels, got {edge_px}")
    shape = a.shape
    a = a.squeeze() if a.ndim == 3 and 1 in a.shape else a  # one slice stored as a volume
    lung = ndi.binary_opening(a < below_hu, iterations=1)
    if edge_px:
        for ax, n in enumerate(a.shape):
            if n > 2 * edge_px:
                cut = [slice(None)] * a.ndim
                cut[ax] = np.r_[0:edge_px, n - edge_px : n]
                lung[tuple(cut)] = False
    return (lung.astype(np.uint8) * np.uint8(RIGHT_LUNG)).reshape(shape)


def lung_mask_image(image, **kwargs):
    """:func:`lung_mask` of a ``SimpleITK.Image`` (HU); returns uint8 labels on the same grid.

    Args:
        image: 2D or 3D ``SimpleITK.Image`` of HU in any orientation (a 3D image of one slice is
            processed as a 2D slice).
        **kwargs: passed to :func:`lung_mask`.

    Returns:
        ``SimpleITK.Image`` (sitkUInt8) with the geometry of ``image``: 0, 1 right, 2 left lung.
    """
    arr, spacing = to_canonical_image(image)
    return from_canonical_image(lung_mask(arr, spacing, **kwargs), image)


def lungs_canonical(image, lungs_image, arr: np.ndarray, spacing) -> np.ndarray:
    """Canonical lung labels for ``image`` (canonical ``arr``, ``spacing``) of a ``*_image`` wrapper:
    from ``lungs_image`` (checked to lie on the grid of ``image``) when given, else computed."""
    if lungs_image is None:
        return lung_mask(arr, spacing)
    check_same_grid(image, lungs_image, "lungs_image")
    lungs, _ = to_canonical_image(lungs_image)
    return lungs


# --------------------------------------------------------------------------------------------
# implementation (volumes (z, y, x); a 2D slice is a volume of one slice)
# --------------------------------------------------------------------------------------------


def _tqdm(iterable, enabled: bool, total: int, desc: str):
    if not enabled or not sys.stderr.isatty() or total < 8:
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False)


#: Largest in-plane voxel size (mm) of the grid on which the body, the airways, the component
#: selection and the right/left split are computed: finer scans are reduced by whole blocks of
#: ``floor(GRID_MM / voxel size)`` voxels (0.5-0.58 mm: blocks of 3; 0.59-0.87 mm: blocks of 2;
#: 0.88 mm and coarser: not reduced).
GRID_MM = 1.75
#: A lung reaches the back of the chest: every lung component reaches at least this share of the
#: body's front-to-back extent (slices of the component), measured from the front. Gas in the
#: stomach, colon or bowel of a supine patient floats to the front (0.22-0.49 on the lowest
#: slices of the CPTAC series); its lung bases lie in the posterior recesses (0.82-0.85, with the
#: table side of the body as its back).
MIN_POSTERIOR_REACH = 0.65
#: Share of a lung component's voxels that lie at least ``min_depth_mm`` inside the body (in-plane).
MIN_DEEP_SHARE = 0.5


def _lung_labels(
    vol: np.ndarray,
    sp: tuple[float, float, float],
    cfg: LungMaskSettings,
    fill_holes: bool,
    close_notches: bool,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels (uint8, (z, y, x)) and the tissue mask ``vol > body_threshold`` (reused by callers).

    Steps 1-6 of the module docstring run on a grid of about ``GRID_MM`` in-plane (blocks of
    ``f x f`` voxels: a block is air when all its voxels are, tissue when any is, so thin walls
    between the lungs and bowel gas survive the reduction); the labels are then carried back to
    every full-resolution voxel below ``air_threshold`` of a lung block or of a partly aerated
    block next to it, and steps 7-8 run at full resolution.
    """
    tissue = vol > cfg.body_threshold
    f = _grid_factor(sp)
    if f > 1:
        small = _block_max(vol, f)
        sp_small = (sp[0], sp[1] * f, sp[2] * f)
    else:
        small, sp_small = vol, sp
    labels, airway = _coarse_labels(small, sp_small, cfg)
    if f > 1:
        air_small = small < cfg.air_threshold
        labels = _to_full_grid(labels, air_small, airway, vol < cfg.air_threshold, f)
    if fill_holes:
        labels = _fill_holes_per_lung(labels)
    if close_notches:
        labels = _close_notches(labels, vol, sp, cfg, progress)
        labels = _smooth_border(labels, vol, cfg)
    log.info(
        "lung mask: %d airway voxels removed (grid 1/%d), right lung %d voxels, left lung %d voxels",
        int(airway.sum()),
        f,
        int((labels == RIGHT_LUNG).sum()),
        int((labels == LEFT_LUNG).sum()),
    )
    return labels, tissue


def _grid_factor(sp) -> int:
    """Largest block size ``f`` whose blocks are at most ``GRID_MM`` wide (at least 1)."""
    return max(1, int(GRID_MM / min(sp[1], sp[2])))


def _block_max(vol: np.ndarray, f: int) -> np.ndarray:
    """Maximum of every ``f x f`` in-plane block of ``vol``; blocks cut by the array edge count
    the missing voxels as -1024 HU (air). Strided maxima, 10 times faster than a reshape."""
    out = vol
    for axis in (1, 2):
        idx = [slice(None)] * 3
        idx[axis] = slice(0, None, f)
        red = out[tuple(idx)].copy()  # ceil(n / f) along axis
        for k in range(1, f):
            idx[axis] = slice(k, None, f)
            part = out[tuple(idx)]
            m = part.shape[axis]
            head = [slice(None)] * 3
            head[axis] = slice(0, m)
            np.maximum(red[tuple(head)], part, out=red[tuple(head)])
            if m < red.shape[axis]:  # the last block lacks this voxel: pad with air
                head[axis] = slice(m, None)
                np.maximum(red[tuple(head)], -1024, out=red[tuple(head)])
        out = red
    return out


def _to_full_grid(
    labels: np.ndarray, air_small: np.ndarray, airway: np.ndarray, air_full: np.ndarray, f: int
) -> np.ndarray:
    """Full-resolution labels from block labels.

    Every block that is not all air (the lung border: air and tissue mixed) takes the label of an
    adjacent lung block (3x3 in-plane; the left label where both touch), unless it also touches
    an airway block (the wall between a bronchus and the lung); blocks of other air (airways,
    bowel gas, dropped pockets) never do. Then every full-resolution voxel below the air
    threshold takes the label of its block.
    """
    grown = ndi.grey_dilation(labels, footprint=INPLANE_SQUARE)
    grown[air_small & (labels == 0)] = 0
    if airway.any():
        grown[ndi.binary_dilation(airway, structure=INPLANE_SQUARE)] = 0
    grown[labels > 0] = labels[labels > 0]
    up = np.repeat(np.repeat(grown, f, axis=1), f, axis=2)[
        :, : air_full.shape[1], : air_full.shape[2]
    ]
    up[~air_full] = 0
    return up


def _coarse_labels(vol: np.ndarray, sp, cfg: LungMaskSettings) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1-6 (body, candidates, airways, component selection, right/left) on one grid."""
    tissue = vol > cfg.body_threshold
    body = largest_component(tissue, structure=ndi.generate_binary_structure(3, 1))
    body = fill_holes_per_slice(body)
    if not body.any():
        return np.zeros(vol.shape, np.uint8), np.zeros(vol.shape, bool)
    cand = body & (vol < cfg.air_threshold)
    depth, f = _body_depth(body, sp)
    midline = _midline_per_slice(depth, f, vol.shape[2])
    airway = _airways(cand, midline, sp, cfg)
    cand &= ~airway
    deep = _deep_region(depth, f, vol.shape, cfg.min_depth_mm)
    lungs = _select_components(cand, deep, body, cfg)
    return _split_sides(lungs, midline, sp, cfg), airway


def _body_depth(body: np.ndarray, sp) -> tuple[np.ndarray, int]:
    """In-plane distance (mm) of every body voxel to the body surface, on a grid of about 2 mm.

    Returns the depth map of shape ``(z, ceil(y/f), ceil(x/f))`` and the subsampling factor
    ``f``. A huge z sampling keeps the Euclidean distance inside each axial slice.
    """
    f = max(1, int(2.0 // min(sp[1], sp[2])))
    small = np.pad(body[:, ::f, ::f], ((0, 0), (1, 1), (1, 1)))
    depth = ndi.distance_transform_edt(small, sampling=(1e6, sp[1] * f, sp[2] * f))[:, 1:-1, 1:-1]
    return depth.astype(np.float32), f


def _midline_per_slice(depth: np.ndarray, f: int, nx: int) -> np.ndarray:
    """x (index units) of the body's midline in every slice.

    The midline is the centre of the deepest part of the body (in-plane depth at least 80% of
    the slice's largest): the middle of the trunk or neck, whatever the arms and the table do.
    Slices without body take the median of the others.
    """
    mx = depth.max(axis=(1, 2))
    core = depth >= 0.8 * mx[:, None, None]
    core &= mx[:, None, None] > 0
    cols = core.sum(axis=1)  # (z, x_small)
    n = cols.sum(axis=1)
    x = np.arange(depth.shape[2], dtype=float) * f  # body[:, ::f, ::f] took columns 0, f, 2f, ...
    mid = np.full(depth.shape[0], nx / 2.0)
    ok = n > 0
    mid[ok] = (cols[ok] * x).sum(axis=1) / n[ok]
    if ok.any():
        mid[~ok] = np.median(mid[ok])
    return mid


def _deep_region(depth: np.ndarray, f: int, shape, min_depth_mm: float) -> np.ndarray:
    """Full-resolution mask of the voxels at least ``min_depth_mm`` inside the body (in-plane)."""
    core = depth >= min_depth_mm
    up = np.repeat(np.repeat(core, f, axis=1), f, axis=2)
    return up[:, : shape[1], : shape[2]]


@dataclass
class _Comp2D:
    z: np.ndarray
    area: np.ndarray  # pixels
    cx: np.ndarray
    bbox_h: np.ndarray
    bbox_w: np.ndarray


def _comp_stats(lab: np.ndarray, n: int) -> _Comp2D:
    shape = lab.shape
    flat = lab.ravel()
    idx = np.flatnonzero(flat)
    ids = flat[idx]
    area = np.bincount(ids, minlength=n + 1).astype(float)
    xs = idx % shape[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = np.bincount(ids, weights=xs, minlength=n + 1) / area
    z = np.zeros(n + 1, int)
    h = np.zeros(n + 1, int)
    w = np.zeros(n + 1, int)
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        z[i] = sl[0].start
        h[i] = sl[1].stop - sl[1].start
        w[i] = sl[2].stop - sl[2].start
    return _Comp2D(z=z, area=area, cx=cx, bbox_h=h, bbox_w=w)


def _airways(cand: np.ndarray, midline: np.ndarray, sp, cfg: LungMaskSettings) -> np.ndarray:
    """Mask of the trachea / main bronchi (and other small central air tubes) in ``cand``."""
    nz = cand.shape[0]
    px_area = sp[1] * sp[2]
    lab, n = label_per_slice(cand)
    airway = np.zeros(cand.shape, dtype=bool)
    if n == 0:
        return airway
    st = _comp_stats(lab, n)
    area_mm2 = st.area * px_area
    flat = nz == 1 or nz * sp[0] < cfg.airway_min_length_mm
    per_slice: list[list[int]] = [[] for _ in range(nz)]
    for i in range(1, n + 1):
        per_slice[st.z[i]].append(i)

    def is_seed(i: int) -> bool:
        if not (cfg.airway_min_area_mm2 <= area_mm2[i] <= cfg.airway_max_area_mm2):
            return False
        if abs(st.cx[i] - midline[st.z[i]]) * sp[2] > cfg.airway_max_offset_mm:
            return False
        if flat:  # a single slice has no tube to follow: any small central air is airway
            return True
        hmm, wmm = st.bbox_h[i] * sp[1], st.bbox_w[i] * sp[2]
        if max(hmm, wmm) > 3.0 * min(hmm, wmm):  # compact (a tube seen across), not a sliver
            return False
        return st.area[i] / float(st.bbox_h[i] * st.bbox_w[i]) >= 0.5

    tracked = np.zeros(n + 1, dtype=bool)
    if flat:  # no tube to follow: every small central component is airway
        seeds = [i for i in range(1, n + 1) if is_seed(i)]
        airway |= np.isin(lab, seeds)
        return airway
    min_slices = max(2, int(np.ceil(cfg.airway_min_length_mm / sp[0])))
    for z in range(nz - 1, -1, -1):
        for seed in per_slice[z]:
            if tracked[seed] or not is_seed(seed):
                continue
            if z > 0 and not _small_overlaps(lab, z - 1, lab[z] == seed, area_mm2, cfg):
                continue
            masks, areas = _follow(lab, z, seed, tracked, area_mm2, sp, cfg)
            if _long_even_tube(areas, min_slices):
                for zz, m in masks.items():
                    airway[zz] |= m
    return airway


def _long_even_tube(areas: list[float], min_slices: int) -> bool:
    """True when ``min_slices`` consecutive cross-sections have areas within a factor of 4."""
    a = np.asarray(areas, float)
    for k in range(len(a) - min_slices + 1):
        w = a[k : k + min_slices]
        if w.max() <= 4.0 * w.min():
            return True
    return False


def _follow(lab, z, seed, tracked, area_mm2, sp, cfg):
    """Follow an air tube down from component ``seed`` of slice ``z``.

    Returns the airway mask per slice and the cross-section areas (mm2) of the first slices in
    which the tube is made of whole small components (before it merges with a lung).
    """
    current = lab[z] == seed
    tracked[seed] = True
    masks = {z: current}
    areas = [float(area_mm2[seed])]
    whole = True
    zz = z - 1
    while zz >= 0 and current.any():
        below = lab[zz]
        ids = np.unique(below[current])
        ids = ids[(ids > 0) & ~tracked[ids]]
        nxt = np.zeros_like(current)
        cut = False
        for i in ids:
            comp = below == i
            if area_mm2[i] <= cfg.airway_max_area_mm2:
                nxt |= comp
                tracked[i] = True
            else:  # merged in-plane with a lung: try to cut the tube off by an erosion
                cut = True
                part = _cut_tube(comp, current, sp, cfg)
                if part is not None:
                    nxt |= part
        if nxt.any():
            masks[zz] = nxt
            whole = whole and not cut
            if whole:
                areas.append(float(nxt.sum() * sp[1] * sp[2]))
        current = nxt
        zz -= 1
    return masks, areas


def _small_overlaps(lab, z, region, area_mm2, cfg) -> bool:
    ids = np.unique(lab[z][region])
    ids = ids[ids > 0]
    return bool(ids.size) and bool((area_mm2[ids] <= cfg.airway_max_area_mm2).any())


def _cut_tube(comp: np.ndarray, above: np.ndarray, sp, cfg: LungMaskSettings) -> np.ndarray | None:
    """Part of a large 2D component that continues the airway ``above``, or None.

    The component is eroded (distance transform, mm) by 1 to 5 mm; when a small core overlapping
    the airway of the slice above separates from the rest, it is grown back by the same depth
    inside the component and returned.
    """
    box = bbox_slices(comp, margin=1)
    c = comp[box]
    a = above[box]
    dist = ndi.distance_transform_edt(c, sampling=sp[1:])
    px_area = sp[1] * sp[2]
    for depth in (1.0, 2.0, 3.0, 4.0, 5.0):
        core = dist > depth
        lab, n = ndi.label(core)
        if n < 2:
            continue
        ids = np.unique(lab[a & core])
        ids = ids[ids > 0]
        if ids.size == 0:
            continue
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        keep = [i for i in ids if sizes[i] * px_area <= cfg.airway_max_area_mm2]
        if not keep or len(keep) == n:
            continue
        seed = np.isin(lab, keep)
        grown = (ndi.distance_transform_edt(~seed, sampling=sp[1:]) <= depth + max(sp[1:])) & c
        # never take more than the erosion separated: voxels nearer to another core stay lung
        rest = core & ~seed
        nearest_rest = ndi.distance_transform_edt(~rest, sampling=sp[1:])
        nearest_seed = ndi.distance_transform_edt(~seed, sampling=sp[1:])
        grown &= nearest_seed < nearest_rest
        out = np.zeros_like(comp)
        out[box] = grown
        return out
    return None


def _select_components(
    cand: np.ndarray, deep: np.ndarray, body: np.ndarray, cfg: LungMaskSettings
) -> np.ndarray:
    """Drop air gaps under the body surface, gas in front of the abdomen, small air pockets and,
    in volumes, gas below the lungs.

    A component is kept when at least ``MIN_DEEP_SHARE`` of it lies ``min_depth_mm`` inside the
    body, it reaches back to
    ``MIN_POSTERIOR_REACH`` of the body's front-to-back extent, is at least ``min_lung_fraction``
    of the largest such component and, in volumes, its centre is not below the lowest tenth of
    that largest component (a lung).
    """
    lab, n = ndi.label(cand)  # 6-connectivity in 3D (4 in a slice)
    if n == 0:
        return cand
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    # most of a lung lies deeper than min_depth_mm; an air gap under the skin, a blanket or the
    # table only reaches that deep, if at all, where the table touches the back
    n_deep = np.bincount(lab[deep], minlength=n + 1)
    sizes[n_deep < MIN_DEEP_SHARE * sizes] = 0
    sizes[_posterior_reach(lab, n, body) < MIN_POSTERIOR_REACH] = 0
    if not sizes.any():
        return np.zeros_like(cand)
    order = np.argsort(sizes)[::-1]
    order = order[sizes[order] > 0]
    largest = sizes[order[0]]
    keep = [int(i) for i in order if sizes[i] >= cfg.min_lung_fraction * largest]
    nz = cand.shape[0]
    if nz >= 3 and len(keep) > 1:
        # gas under the diaphragm: centre below the lowest tenth of the largest component (a lung)
        per_slice = np.bincount(np.nonzero(lab == keep[0])[0], minlength=nz)
        z_low = int(np.searchsorted(np.cumsum(per_slice), 0.1 * per_slice.sum()))
        zsum = ndi.sum_labels(np.broadcast_to(np.arange(nz)[:, None, None], cand.shape), lab, keep)
        zc = np.asarray(zsum, float) / sizes[keep]
        keep = [k for k, c in zip(keep, zc) if k == keep[0] or c >= z_low]
    return np.isin(lab, keep)


def _posterior_reach(lab: np.ndarray, n: int, body: np.ndarray) -> np.ndarray:
    """Per component of ``lab``: its largest ``(y - front) / (back - front)`` over its voxels.

    ``front`` and ``back`` are the first and last body row of the voxel's axial slice (y grows
    towards the back), so 0 is the front of the body and 1 its back.
    """
    rows = body.any(axis=2)  # (z, y)
    has = rows.any(axis=1)
    front = np.where(has, np.argmax(rows, axis=1), 0)
    back = np.where(has, rows.shape[1] - 1 - np.argmax(rows[:, ::-1], axis=1), 1)
    z, y, x = np.nonzero(lab)
    ids = lab[z, y, x]
    rel = (y - front[z]) / np.maximum(back[z] - front[z], 1).astype(float)
    out = np.zeros(n + 1)
    np.maximum.at(out, ids, rel)
    return out


def _split_sides(lungs: np.ndarray, midline: np.ndarray, sp, cfg: LungMaskSettings) -> np.ndarray:
    """Label lung voxels 1 (right: x below the midline) or 2 (left), splitting joined lungs."""
    out = np.zeros(lungs.shape, np.uint8)
    lab, n = ndi.label(lungs)
    if n == 0:
        return out
    xs = np.arange(lungs.shape[2])[None, None, :]
    right_side = xs < midline[:, None, None]  # broadcast (z, 1, x)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    n_right = np.bincount(lab[np.broadcast_to(right_side, lungs.shape)], minlength=n + 1)
    for i in range(1, n + 1):
        if sizes[i] == 0:
            continue
        frac = n_right[i] / sizes[i]
        comp = lab == i
        if 0.15 < frac < 0.85 and sizes[i] >= 0.05 * sizes[1:].max():
            split = _split_joined(comp, right_side, sp, cfg)
            if split is not None:
                out[split == RIGHT_LUNG] = RIGHT_LUNG
                out[split == LEFT_LUNG] = LEFT_LUNG
                continue
        out[comp] = RIGHT_LUNG if frac >= 0.5 else LEFT_LUNG
    return out


def _split_joined(
    comp: np.ndarray, right_side: np.ndarray, sp, cfg: LungMaskSettings
) -> np.ndarray | None:
    """Split one component that spans both sides into right/left parts (labels 1/2), or None."""
    box = bbox_slices(comp, margin=1)
    c = comp[box]
    rs = np.broadcast_to(right_side, comp.shape)[box]
    sampling = sp if c.shape[0] > 1 else sp[1:]
    cc = c if c.shape[0] > 1 else c[0]
    dist = ndi.distance_transform_edt(cc, sampling=sampling)
    if c.shape[0] == 1:
        dist = dist[None]
    total = int(c.sum())
    step = min(sp[1:])
    depth = step
    while depth <= cfg.max_split_depth_mm:
        core = dist > depth
        lab, n = ndi.label(core)
        if n >= 2:
            sizes = np.bincount(lab.ravel(), minlength=n + 1)
            sizes[0] = 0
            big = [i for i in np.argsort(sizes)[::-1][:n] if sizes[i] >= 0.05 * total]
            if len(big) >= 2:
                nr = np.bincount(lab[rs], minlength=n + 1)
                sides = {i: (nr[i] / sizes[i]) >= 0.5 for i in big}
                if any(sides.values()) and not all(sides.values()):
                    markers = np.zeros(c.shape, np.uint8)
                    for i in big:
                        markers[lab == i] = RIGHT_LUNG if sides[i] else LEFT_LUNG
                    idx = ndi.distance_transform_edt(
                        markers == 0, sampling=sp, return_distances=False, return_indices=True
                    )
                    grown = markers[tuple(idx)]
                    grown[~c] = 0
                    out = np.zeros(comp.shape, np.uint8)
                    out[box] = grown
                    return out
        if n == 0:
            break
        depth += step
    return None


def _fill_holes_per_lung(labels: np.ndarray) -> np.ndarray:
    out = labels.copy()
    for lung in (RIGHT_LUNG, LEFT_LUNG):
        m = labels == lung
        box = bbox_slices(m, margin=1)
        if box is None:
            continue
        filled = fill_holes_per_slice(m[box])
        region = out[box]
        region[filled & (region == 0)] = lung
    return out


def _smooth_border(labels: np.ndarray, vol: np.ndarray, cfg: LungMaskSettings) -> np.ndarray:
    """Per lung and axial slice, a 3x3 closing: fills one-pixel notches of the pleural border.

    Partial volume leaves single border pixels of a juxtapleural tumour just above
    ``air_threshold`` (e.g. -316 HU on the LIDC example slice); the closing puts them back in
    the lung. Only partial-volume pixels (below ``partial_volume_hu``, -200 HU: a mixture of
    air and tissue, never pure fat or muscle) are added; bone and the other lung never.
    """
    out = labels.copy()
    for lung in (RIGHT_LUNG, LEFT_LUNG):
        m = labels == lung
        box = bbox_slices(m, margin=2)
        if box is None:
            continue
        closed = closing_3x3(m[box])
        region = out[box]
        region[closed & (region == 0) & (vol[box] < cfg.partial_volume_hu)] = lung
    return out


def _close_notches(
    labels: np.ndarray, vol: np.ndarray, sp, cfg: LungMaskSettings, progress: bool
) -> np.ndarray:
    """Fill small concavities of each lung that open onto the chest wall (juxtapleural tumours)."""
    out = labels.copy()
    px_area = sp[1] * sp[2]
    max_area = np.pi * (cfg.notch_max_diameter_mm / 2.0) ** 2 / px_area
    zs = np.flatnonzero(labels.any(axis=(1, 2)))
    for z in _tqdm(zs, progress, len(zs), "juxtapleural notches"):
        sl = labels[z]
        both = sl > 0
        box = bbox_slices(both, margin=2)
        sub = sl[box]
        near_outside = dilate_3x3(~convex_hull_2d(sub > 0))
        soft = vol[z][box] < cfg.bone_threshold
        for lung in (RIGHT_LUNG, LEFT_LUNG):
            m = sub == lung
            if not m.any():
                continue
            concave = convex_hull_2d(m) & ~(sub > 0)
            lab, n = ndi.label(concave)
            if n == 0:
                continue
            sizes = np.bincount(lab.ravel(), minlength=n + 1)
            touch = np.unique(lab[near_outside & (lab > 0)])
            ok = [i for i in touch if 0 < sizes[i] <= max_area]
            if ok:  # thick enough to hold a nodule, not a sliver between ribs
                boxes = ndi.find_objects(lab)
                need = {
                    i: max(
                        cfg.notch_min_radius_mm,
                        cfg.notch_min_compactness * np.sqrt(sizes[i] * px_area),
                    )
                    for i in ok
                }
                ok = [
                    i
                    for i in ok
                    if _radius_bound(boxes[i - 1], sp[1:]) >= need[i]
                    and _inscribed_radius(concave, lab, i, boxes[i - 1], sp[1:]) >= need[i]
                ]
            if ok:
                add = np.isin(lab, ok) & soft
                region = out[z][box]
                region[add & (region == 0)] = lung
    return out


def _inscribed_radius(concave: np.ndarray, lab: np.ndarray, i: int, box, sp2) -> float:
    """Largest distance (mm) from a voxel of component ``i`` of ``lab`` to a voxel outside
    ``concave``, computed on the component's bounding box grown by one voxel (which holds the
    ring of non-concave voxels around it) instead of the whole slice: the CPTAC series gives
    identical labels either way, at a fraction of the cost."""
    grown = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)
    depth = ndi.distance_transform_edt(concave[grown], sampling=sp2)
    return float(depth[lab[grown] == i].max())


def _radius_bound(box, sp2) -> float:
    """Upper bound (mm) of :func:`_inscribed_radius` from the bounding box alone: walking along a
    row or column from any voxel, the first voxel outside the component is outside ``concave``
    (else it would belong to the component), within half the box side plus one voxel."""
    h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
    return min((h + 1) / 2.0 * sp2[0], (w + 1) / 2.0 * sp2[1])
