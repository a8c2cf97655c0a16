"""Augmentation arms of the experiment, and the transforms every arm shares.

An arm says what it does to the training data at three points; everything else (windowing,
cropping, network, iterations, seeds) is the same for every arm:

* ``expand(samples, settings, seed)``: offline, on the list of 2D HU samples (MetaLung grows the
  training set as in the thesis, 708 -> 4,865 slices);
* ``on_hu(settings, spatial_dims)``: online transforms on HU images, before windowing;
* ``on_window(settings, spatial_dims)``: online transforms after the HU window (intensities in
  [0, 1]), where generic pipelines such as nnU-Net's work.

Adding an arm (e.g. DeepLungSynth insertion) is one :func:`register_arm` call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Arm", "ARMS", "register_arm", "get_arm", "train_transforms", "eval_transforms"]

KEYS = ("image", "label")


@dataclass
class Arm:
    """One augmentation arm (see the module docstring)."""

    name: str
    description: str
    expand: Callable[[list, dict, int], list] = field(
        default=lambda samples, settings, seed: samples
    )
    on_hu: Callable[[dict, int], list] = field(default=lambda settings, spatial_dims: [])
    on_window: Callable[[dict, int], list] = field(default=lambda settings, spatial_dims: [])


ARMS: dict[str, Arm] = {}


def register_arm(arm: Arm) -> Arm:
    """Make ``arm`` available by name to the bundles and ``metalung experiment``.

    Raises:
        InputError: the name is not a safe file name (it names the arm's run folders).
    """
    from ..errors import InputError
    from ..utils.paths import is_safe_name

    if not is_safe_name(arm.name):
        raise InputError(
            "arm name",
            f"{arm.name!r} is not a safe file name (letters, digits, '.', '_', '-'); it "
            "names the arm's run folders",
        )
    ARMS[arm.name] = arm
    return arm


def get_arm(name: str) -> Arm:
    if name not in ARMS:
        from ..errors import InputError

        raise InputError(
            "augment", f"unknown augmentation arm '{name}' (choose from {', '.join(ARMS)})"
        )
    return ARMS[name]


def _metalung_expand(samples, settings, seed):
    from .data import expand_metalung

    return expand_metalung(
        samples, seed, ops=settings["metalung_ops"], copies=settings["metalung_copies"]
    )


def _metalung_online_3d(settings, spatial_dims):
    from ..transforms import MetaLungd

    if spatial_dims == 2:
        return []  # 2D: offline expansion (the thesis' protocol)
    ops = tuple(settings["metalung_ops"])
    return [
        MetaLungd(
            keys=KEYS,
            lung_key="lung",
            ops=ops,
            prob=len(ops) / (len(ops) + 1.0),
            allow_missing_keys=False,
        )
    ]


def _generic_monai(settings, spatial_dims):
    """nnU-Net-style defaults with MONAI transforms (on intensities already scaled to [0, 1])."""
    from monai.transforms import (
        RandAdjustContrastd,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    rot = (math.pi,) if spatial_dims == 2 else (0.0, 0.0, math.pi)  # 3D: in the axial plane
    return [
        *[RandFlipd(keys=KEYS, prob=0.5, spatial_axis=a) for a in range(spatial_dims)],
        RandAffined(
            keys=KEYS,
            prob=0.2,
            rotate_range=rot,
            scale_range=(0.3,) * spatial_dims,
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        ),
        RandGaussianNoised(keys="image", prob=0.1, std=0.05),
        RandGaussianSmoothd(
            keys="image", prob=0.2, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)
        ),
        RandScaleIntensityd(keys="image", factors=0.25, prob=0.15),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.15),
        RandAdjustContrastd(keys="image", gamma=(0.7, 1.5), prob=0.3),
    ]


register_arm(Arm("none", "baseline: no augmentation"))
register_arm(
    Arm(
        "metalung",
        "MetaLung: the six HU-preserving operations (offline expansion in 2D, online in 3D)",
        expand=_metalung_expand,
        on_hu=_metalung_online_3d,
    )
)
register_arm(
    Arm(
        "monai",
        "generic MONAI pipeline with nnU-Net-style defaults (flips, rotation/zoom, noise, blur, "
        "intensity scale/shift, gamma)",
        on_window=_generic_monai,
    )
)


def _window(settings):
    from ..transforms import HUWindowd

    lo, hi = settings["window"]
    return HUWindowd(
        keys="image",
        window_center=(lo + hi) / 2.0,
        window_width=hi - lo,
        output_range=(0.0, 1.0),
        clip=True,
    )


def train_transforms(arm: str, settings: dict, spatial_dims: int = 2, load: bool = False):
    """The training ``Compose`` of an arm: [load] -> arm on HU -> window -> arm on [0, 1] -> crop."""
    from monai.transforms import (
        Compose,
        DeleteItemsd,
        EnsureChannelFirstd,
        EnsureTyped,
        LoadImaged,
        RandCropByPosNegLabeld,
        RandSpatialCropd,
        SpatialPadd,
    )

    a = get_arm(arm)
    crop = (settings["crop"],) * 2 if spatial_dims == 2 else tuple(settings["crop_3d"])
    pos, neg = settings["pos_neg"]
    ts = []
    if load:
        from monai.transforms import Orientationd

        from .workflow import AXCODES, ORIENTATION_LABELS

        vol_keys = ("image", "label", "lung")
        ts += [
            LoadImaged(keys=vol_keys, allow_missing_keys=True, image_only=True),
            EnsureChannelFirstd(keys=vol_keys, allow_missing_keys=True),
            Orientationd(
                keys=vol_keys, axcodes=AXCODES, labels=ORIENTATION_LABELS, allow_missing_keys=True
            ),
        ]
    ts += a.on_hu(settings, spatial_dims)
    ts += [_window(settings), DeleteItemsd(keys="lung")]
    ts += a.on_window(settings, spatial_dims)
    # positive crops are centred on a tumour voxel; cropping 1.5x larger first and then a random
    # window puts the tumour anywhere in the patch, so the network learns no "tumour in the middle"
    # prior (which sliding-window inference on whole slices would punish)
    outer = tuple(int(round(c * 1.5)) for c in crop)
    ts += [
        SpatialPadd(keys=KEYS, spatial_size=outer),
        RandCropByPosNegLabeld(
            keys=KEYS, label_key="label", spatial_size=outer, pos=pos, neg=neg, num_samples=1
        ),
        RandSpatialCropd(keys=KEYS, roi_size=crop, random_size=False),
        EnsureTyped(keys=KEYS, track_meta=False),
    ]
    return Compose(ts)


def eval_transforms(settings: dict, spatial_dims: int = 2, load: bool = False):
    """Validation / test transforms: [load] -> window (whole slices or volumes, no crop)."""
    from monai.transforms import Compose, DeleteItemsd, EnsureChannelFirstd, EnsureTyped, LoadImaged

    ts = []
    if load:
        ts += [
            LoadImaged(keys=("image", "label"), image_only=True),
            EnsureChannelFirstd(keys=("image", "label")),
        ]
    ts += [_window(settings), DeleteItemsd(keys="lung"), EnsureTyped(keys=KEYS)]
    return Compose(ts)
