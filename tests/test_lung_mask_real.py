"""Lung masks on a real CT that includes the upper abdomen (issue 11; skipped without the data).

The CPTAC chest series of ``../shared/data/real/cptac_chest_series`` (512 x 512 x 99, 0.564 mm
pixels, 3 mm slices, canonical z 0 = lowest slice) runs from the upper abdomen to the lung
apices. Its lowest 18 slices hold the lung bases in the posterior recesses and, in front of the
liver and stomach, gas in the colon and stomach (about 57,000 voxels in components that stay in
the front half of the body). The gas must never be lung, whatever part of the scan is given:

* the whole series (3D: gas is not connected to the lungs);
* its lowest 12 slices (an abdominal scan holding only the lung bases: the gas components there
  are as large as the lung bases, so size alone cannot tell them apart);
* each of the lowest 18 slices on its own.

Nothing outside the body is lung, both lungs are found on a mid-thorax slice given alone, the
lungs of the partial inputs agree with those of the whole series, and the air gap between the
patient's back and a table (or blanket) that touches the back and encloses it is not lung.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from metalung_monai.anatomy import LEFT_LUNG, RIGHT_LUNG, lung_mask
from metalung_monai.anatomy._morph import INPLANE_SQUARE, fill_holes_per_slice, largest_component

pytestmark = pytest.mark.real_data

GAS_SLICES = 18  # lowest slices with colon / stomach gas in front of the liver
ABDOMEN_SLICES = 12  # the "abdominal scan": 36 mm, liver, stomach, colon and the lung bases
MID_THORAX = 50


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def cptac(real_data):
    from metalung_monai.io import read_ct
    from metalung_monai.utils.orientation import sitk_to_canonical

    hu, sp = sitk_to_canonical(read_ct(real_data / "cptac_chest_series", progress=False).image)
    assert hu.shape == (99, 512, 512)
    body = fill_holes_per_slice(
        largest_component(hu > -500, structure=ndi.generate_binary_structure(3, 1))
    )
    # gas below the diaphragm: air components of the lowest slices that stay in the front half
    # of the body (the lung bases lie in the posterior recesses, reaching 80 % of its depth)
    rows = body.any(axis=2)
    front = np.argmax(rows, axis=1)
    back = rows.shape[1] - 1 - np.argmax(rows[:, ::-1], axis=1)
    lab, n = ndi.label(body[:GAS_SLICES] & (hu[:GAS_SLICES] < -320))
    z, y, _ = np.nonzero(lab)
    rel = (y - front[z]) / (back[z] - front[z])
    reach = np.zeros(n + 1)
    np.maximum.at(reach, lab[z, y, _], rel)
    gas = np.zeros(hu.shape, bool)
    gas[:GAS_SLICES] = np.isin(lab, np.flatnonzero(reach < 0.5)) & (lab > 0)
    return hu, sp, body, gas, lung_mask(hu, sp, progress=False)


def test_the_lowest_slices_hold_colon_gas(cptac):
    hu, sp, body, gas, full = cptac
    assert gas.sum() > 50_000
    assert gas[:4].sum(axis=(1, 2)).min() > 1_000  # in each of the four lowest slices


def test_whole_series_no_lung_in_colon_gas_or_outside_the_body(cptac):
    hu, sp, body, gas, full = cptac
    lung = full > 0
    assert not (lung & gas).any(), int((lung & gas).sum())
    assert not (lung & ~body).any()
    assert not lung[0].any()  # the lowest slice lies below both lung bases
    assert set(np.unique(full).tolist()) == {0, RIGHT_LUNG, LEFT_LUNG}
    # the right lung (label 1) lies at small canonical x (the patient's right)
    assert np.nonzero(full == RIGHT_LUNG)[2].mean() < 256 < np.nonzero(full == LEFT_LUNG)[2].mean()
    # volume: 0.956 mm3 voxels; an adult's lungs hold 3-7 litres at inspiration
    litres = lung.sum() * float(np.prod(sp)) / 1e6
    assert 3.0 < litres < 7.0, litres


def test_abdominal_scan_finds_the_lung_bases_not_the_colon_gas(cptac):
    hu, sp, body, gas, full = cptac
    part = lung_mask(hu[:ABDOMEN_SLICES], sp, progress=False)
    lung = part > 0
    assert not (lung & gas[:ABDOMEN_SLICES]).any(), int((lung & gas[:ABDOMEN_SLICES]).sum())
    assert not (lung & ~body[:ABDOMEN_SLICES]).any()
    ref = full[:ABDOMEN_SLICES] > 0
    assert ref.sum() > 40_000
    assert _dice(lung, ref) > 0.95
    # both bases, each on its own side
    assert (part == RIGHT_LUNG).sum() > 20_000 and (part == LEFT_LUNG).sum() > 1_000


def test_single_slices_at_the_bases_skip_the_colon_gas(cptac):
    hu, sp, body, gas, full = cptac
    for z in range(GAS_SLICES):
        lab = lung_mask(hu[z], sp[1:])
        assert lab.shape == (512, 512) and lab.dtype == np.uint8
        lung = lab > 0
        assert not (lung & gas[z]).any(), (z, int((lung & gas[z]).sum()))
        assert not (lung & ~body[z]).any(), z
        ref = full[z] > 0
        if ref.sum() > 5_000:  # a lung base large enough to be found alone
            assert _dice(lung, ref) > 0.9, (z, _dice(lung, ref))


def test_single_mid_thorax_slice_has_both_lungs(cptac):
    hu, sp, body, gas, full = cptac
    lab = lung_mask(hu[MID_THORAX], sp[1:])
    px_cm2 = sp[1] * sp[2] / 100.0
    right, left = (lab == RIGHT_LUNG), (lab == LEFT_LUNG)
    assert right.sum() * px_cm2 > 100 and left.sum() * px_cm2 > 80
    assert np.nonzero(right)[1].mean() < np.nonzero(left)[1].mean()
    assert _dice(lab > 0, full[MID_THORAX] > 0) > 0.97
    # right/left agree with the 3D labels wherever both call it lung
    both = (lab > 0) & (full[MID_THORAX] > 0)
    assert (lab[both] == full[MID_THORAX][both]).mean() > 0.999


def test_air_between_the_back_and_a_touching_table_is_not_lung(cptac):
    """Mid-thorax slices wrapped in a 4.5 mm shell (table and blanket, 100 HU) 3.4 mm off the
    skin, touching the back over 45 mm: the enclosed gap is inside the filled body outline."""
    hu, sp, body, gas, full = cptac
    zs = slice(MID_THORAX - 2, MID_THORAX + 3)
    pad = ((0, 0), (60, 60), (60, 60))
    vol = np.pad(hu[zs], pad, constant_values=-1000)
    skin = np.pad(body[zs], pad)
    near = ndi.binary_dilation(skin, INPLANE_SQUARE, iterations=6)
    shell = ndi.binary_dilation(near, INPLANE_SQUARE, iterations=8) & ~near
    gap = near & ~skin
    vol[shell] = 100
    yy, xx = np.mgrid[: vol.shape[1], : vol.shape[2]]
    centre_x = np.nonzero(skin)[2].mean()
    contact = (np.abs(xx - centre_x) < 40) & (yy > np.nonzero(skin)[1].max() - 20)
    vol[:, contact] = np.where(gap[:, contact], 100, vol[:, contact])
    gap &= vol < -320
    filled = fill_holes_per_slice(largest_component(vol > -500))
    assert (filled & gap).sum() > 0.9 * gap.sum() > 10_000  # the gap is inside the outline
    ref = np.pad(full[zs], pad) > 0
    for lab, g, r in (
        (lung_mask(vol, sp, progress=False), gap, ref),
        (lung_mask(vol[2], sp[1:])[None], gap[2:3], ref[2:3]),
    ):
        lung = lab > 0
        assert not (lung & g).any(), int((lung & g).sum())
        assert _dice(lung, r) > 0.98
