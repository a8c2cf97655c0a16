"""``anatomy.patch_lung_mask``: the lung of a patch cut from inside the chest, where the lung
segmentation finds none (no body outline), so that lesions can be inserted into real tumour
patches (Table 5's MSD subset). Constructed patches, and the real MSD patches (skipped without
the data)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from metalung_monai.anatomy import RIGHT_LUNG, free_space_mask, lung_mask, patch_lung_mask
from metalung_monai.errors import InputError


def _patch(n=48):
    rng = np.random.default_rng(0)
    a = (-850 + rng.integers(-20, 21, (n, n))).astype(np.int16)
    a[18:30, 18:30] = 30  # a solid tumour
    a[:, :10] = 40  # chest wall along one side
    a[5, 40] = 300  # a bright voxel (a vessel in cross-section): not lung
    return a


def test_the_patch_lung_is_parenchyma_below_the_threshold_away_from_the_border():
    a = _patch()
    m = patch_lung_mask(a)
    assert m.dtype == np.uint8 and set(np.unique(m)) == {0, RIGHT_LUNG}
    assert not m[18:30, 18:30].any() and not m[:, :10].any() and m[5, 40] == 0
    assert not m[:4].any() and not m[-4:].any() and not m[:, -4:].any()  # the border is a cut
    inner = np.zeros_like(m, bool)
    inner[4:-4, 11:-4] = True  # parenchyma one voxel off the wall, the tumour and the border
    inner[17:31, 17:31] = False
    inner[4:7, 39:42] = False
    assert m[inner].all()
    # a volume of one slice is that slice; a real volume is cut on every long axis
    assert np.array_equal(patch_lung_mask(a[None])[0], m)
    vol = np.repeat(a[None], 12, axis=0)
    mv = patch_lung_mask(vol, edge_px=2)
    assert not mv[:2].any() and not mv[-2:].any() and mv[6, 24, 35] == RIGHT_LUNG
    assert patch_lung_mask(a, edge_px=0)[0, 20] == RIGHT_LUNG
    with pytest.raises(InputError, match="2D or 3D"):
        patch_lung_mask(np.zeros(5))
    with pytest.raises(InputError, match="edge_px"):
        patch_lung_mask(a, edge_px=-1)


@pytest.mark.real_data
def test_real_msd_patches_get_lungs_the_segmentation_cannot_find(real_data):
    """On the first patch of each of the 13 MSD patients: the full lung segmentation finds no lung
    (the patch shows no body), the patch mask finds parenchyma with room for a lesion beside the
    tumour, and never covers the tumour's solid part."""
    import pandas as pd

    root = real_data / "msd_lung_patches"
    rows = pd.read_csv(root / "patches.csv").groupby("patient").head(1)
    assert len(rows) == 13
    shares, free = [], []
    for case in rows["case"]:
        img = sitk.ReadImage(str(root / "images" / f"{case}.nii.gz"))
        msk = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "masks" / f"{case}.nii.gz")))[0] > 0
        hu = sitk.GetArrayFromImage(img)[0]
        sp = img.GetSpacing()[:2][::-1]
        assert not lung_mask(hu, sp, progress=False).any()
        m = patch_lung_mask(hu) > 0
        assert not (m & msk & (hu >= -500)).any()
        shares.append(m.mean())
        free.append(int(free_space_mask(hu, m.astype(np.uint8), sp, min_distance_mm=1.0).sum()))
    assert np.median(shares) > 0.2
    assert sum(f > 100 for f in free) >= 8  # most patches have room for a 10 mm lesion (25 px)
