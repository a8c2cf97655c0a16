"""Is a lung mask made of lungs? A small anatomical check of a mask from :func:`lung_mask`.

The HU-threshold method returns *some* air inside *some* body for any image: on uniform random
HU noise it finds two "lungs" of scattered voxels (issue 9, #13e). :func:`lung_mask_problems`
tells a chest CT from such images with five properties every lung has, whatever the scanner, the
patient or the slice (thresholds: the module constants; figures measured on the reference data
of the tests, ``../shared/data/real``, on the synthetic chests and on the phantom):

1. **Found at all**: there is a body (voxels above -500 HU), air inside it (below -320 HU), and a
   lung region on at least one slice of at least :data:`MIN_LUNG_AREA_MM2` (1 cm2; the
   smallest real slice tested, at the lung base, holds 10 cm2).
2. **Aerated**: the median HU of the lung region is at most :data:`MAX_MEDIAN_HU` (-500 HU;
   aerated lung with its vessels: -885 to -664 HU on the real scans, -850 to -800 on the
   phantom; random HU noise in which some air was found: -650 to -410).
3. **Compact**: a lung is one smooth organ per side, not a cloud of voxels. The outline (lung
   voxels with a 4-neighbour outside the lungs, in-plane) is compared with that of discs of the
   same areas, per slice and lung; the ratio is at most :data:`MAX_OUTLINE_RATIO` (3.5; real
   scans 1.2-2.3, the lung bases being the most ragged; synthetic chests and phantom 0.8-1.9;
   random noise 4.1-49).
4. **Inside the chest wall**: at most :data:`MAX_SURFACE_SHARE` (5 %) of that outline touches
   the outside of the body or the image edge (0 % on every chest tested; 36 % for noise of
   -1024..0 HU, whose "lungs" fill the image).
5. **Leaves room for the rest of the chest**: on the slices with lung, the lungs fill at most
   :data:`MAX_BODY_SHARE` (70 %) of the body's cross-section (chests 0.1-41 %; the chest wall,
   mediastinum and heart take the rest).

Not covered (kept small on purpose, issue 11 reworks abdominal scans): a single abdominal slice
with a large gas-filled bowel loop and no lung can pass as a lung base.

``metalung lung-mask`` calls :func:`check_lung_mask` before writing anything; library callers may
pass ``require_lungs=True`` to :func:`~metalung_monai.anatomy.lung_mask` or
:func:`~metalung_monai.anatomy.analyse_lungs`, or call it on their own masks.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from ._checks import as_volume, check_mask
from ._morph import INPLANE_CROSS, bbox_slices, fill_holes_per_slice, largest_component
from .settings import LungMaskSettings

__all__ = [
    "MIN_LUNG_AREA_MM2",
    "MAX_MEDIAN_HU",
    "MAX_OUTLINE_RATIO",
    "MAX_SURFACE_SHARE",
    "MAX_BODY_SHARE",
    "lung_mask_measures",
    "lung_mask_problems",
    "check_lung_mask",
]

#: smallest lung cross-section (both lungs, largest slice) in mm2
MIN_LUNG_AREA_MM2 = 100.0
#: highest median HU of a lung region
MAX_MEDIAN_HU = -500.0
#: largest outline of the lungs relative to discs of the same areas (per slice and lung)
MAX_OUTLINE_RATIO = 3.5
#: largest share of the lung outline on the body surface or the image edge
MAX_SURFACE_SHARE = 0.05
#: largest share of the body cross-section filled by lung (slices with lung)
MAX_BODY_SHARE = 0.70


def _body(vol: np.ndarray, cfg: LungMaskSettings) -> np.ndarray:
    """The body as :func:`lung_mask` finds it: largest tissue component, holes filled per slice."""
    tissue = vol > cfg.body_threshold
    return fill_holes_per_slice(
        largest_component(tissue, structure=ndi.generate_binary_structure(3, 1))
    )


def lung_mask_measures(hu, labels, spacing, settings: LungMaskSettings | None = None) -> dict:
    """The quantities :func:`lung_mask_problems` judges, for a canonical image and its lung labels.

    Args:
        hu: canonical HU array, 2D ``(y, x)`` or 3D ``(z, y, x)``.
        labels: lung labels of the same shape (0, 1 right, 2 left), e.g. from :func:`lung_mask`.
        spacing: voxel size in mm, same axis order.
        settings: the thresholds used for the mask (body and air HU).

    Returns:
        ``{"lung_voxels", "largest_area_mm2", "median_hu", "outline_ratio", "surface_share",
        "body_share"}``; with no lung voxel also ``"has_body"`` and ``"air_in_body"``.
    """
    vol, sp, was_2d = as_volume(hu, spacing, "lung mask check (hu)")
    lab = check_mask(labels, np.shape(hu), "lung mask check (labels)", labels=True)
    lab = np.asarray(lab)[None] if was_2d else np.asarray(lab)
    cfg = settings or LungMaskSettings()
    lung = lab > 0
    n = int(lung.sum())
    if n == 0:
        tissue_any = bool((vol > cfg.body_threshold).any())
        air_in_body = tissue_any and bool((_body(vol, cfg) & (vol < cfg.air_threshold)).any())
        return {"lung_voxels": 0, "has_body": tissue_any, "air_in_body": air_in_body}
    px_mm2 = sp[1] * sp[2]
    box = bbox_slices(lung, margin=1)
    sub_lung, sub_lab = lung[box], lab[box]
    inner = ndi.binary_erosion(sub_lung, structure=INPLANE_CROSS, border_value=0)
    outline = sub_lung & ~inner
    n_outline = int(outline.sum())
    disc = 0.0
    for k in (1, 2):
        area = (sub_lab == k).sum(axis=(1, 2)).astype(float)
        disc += float((2.0 * np.sqrt(np.pi * area[area > 0])).sum())
    body = _body(vol, cfg) | lung
    inner_body = ndi.binary_erosion(body[box], structure=INPLANE_CROSS, border_value=0)
    on_surface = int((outline & ~inner_body).sum())
    zs = lung.any(axis=(1, 2))
    return {
        "lung_voxels": n,
        "largest_area_mm2": float(lung.sum(axis=(1, 2)).max() * px_mm2),
        "median_hu": float(np.median(vol[lung])),
        "outline_ratio": n_outline / disc if disc > 0 else float("inf"),
        "surface_share": on_surface / max(n_outline, 1),
        "body_share": float(lung[zs].sum() / max(int(body[zs].sum()), 1)),
    }


def lung_mask_problems(hu, labels, spacing, settings: LungMaskSettings | None = None) -> list[str]:
    """Why ``labels`` is not a pair of lungs of ``hu`` (an empty list when it is plausible).

    See the module docstring for the five criteria and the figures behind their thresholds.

    Args:
        hu: canonical HU array, 2D ``(y, x)`` or 3D ``(z, y, x)``.
        labels: lung labels of the same shape (0, 1 right, 2 left).
        spacing: voxel size in mm, same axis order.
        settings: the thresholds used for the mask.

    Returns:
        One phrase per failed criterion (``"no body: ..."``, ``"... scattered ..."``).
    """
    cfg = settings or LungMaskSettings()
    m = lung_mask_measures(hu, labels, spacing, cfg)
    if m["lung_voxels"] == 0:
        if not m["has_body"]:
            return [f"no body: no voxel above {cfg.body_threshold:g} HU (air only)"]
        if not m["air_in_body"]:
            return [
                f"no air inside the body: no voxel below {cfg.air_threshold:g} HU within it (water or soft tissue "
                "only)"
            ]
        return [
            f"no air-filled region inside the body is large and deep enough to be a lung (at least "
            f"{cfg.min_depth_mm:g} mm inside the body surface)"
        ]
    problems = []
    if m["largest_area_mm2"] < MIN_LUNG_AREA_MM2:
        problems.append(
            f"the candidate lungs measure {m['largest_area_mm2'] / 100:.2f} cm2 on their largest slice "
            f"(a lung cross-section has at least {MIN_LUNG_AREA_MM2 / 100:g} cm2)"
        )
    if m["median_hu"] > MAX_MEDIAN_HU:
        problems.append(
            f"the candidate lung region has a median of {m['median_hu']:.0f} HU (aerated lung: about "
            f"-950 to -600 HU, at most {MAX_MEDIAN_HU:g})"
        )
    if m["outline_ratio"] > MAX_OUTLINE_RATIO:
        problems.append(
            f"the candidate lung region is scattered, not a compact organ: its outline is "
            f"{m['outline_ratio']:.1f} times that of discs of the same areas (lungs: at most "
            f"{MAX_OUTLINE_RATIO:g})"
        )
    if m["surface_share"] > MAX_SURFACE_SHARE:
        problems.append(
            f"the candidate lungs reach the body surface or the image edge along "
            f"{100 * m['surface_share']:.0f} % of their outline (lungs lie inside the chest wall: at most "
            f"{100 * MAX_SURFACE_SHARE:g} %)"
        )
    if m["body_share"] > MAX_BODY_SHARE:
        problems.append(
            f"the candidate lungs fill {100 * m['body_share']:.0f} % of the body on their slices (at most "
            f"{100 * MAX_BODY_SHARE:g} %: the chest wall, mediastinum and heart take the rest)"
        )
    return problems


def check_lung_mask(
    hu, labels, spacing, source="image", settings: LungMaskSettings | None = None
) -> None:
    """Raise unless ``labels`` is a plausible pair of lungs of ``hu`` (see :func:`lung_mask_problems`).

    Args:
        hu: canonical HU array, 2D ``(y, x)`` or 3D ``(z, y, x)``.
        labels: lung labels of the same shape (0, 1 right, 2 left).
        spacing: voxel size in mm, same axis order.
        source: what to name in the error (the image file).
        settings: the thresholds used for the mask.

    Raises:
        InputError: ``source: no lungs found: <reasons>; is this a chest CT?`` (one line).
    """
    problems = lung_mask_problems(hu, labels, spacing, settings)
    if problems:
        raise InputError(source, f"no lungs found: {'; '.join(problems)}; is this a chest CT?")
