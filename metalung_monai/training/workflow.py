"""Glue between the bundles' JSON configs and the package: data, transforms, inferers, weights.

The bundles (``bundles/*/configs/*.json``) call these functions so that a config stays a short,
readable Model Zoo config while the behaviour lives in tested code:

* :func:`prepare` builds the training and validation data of one arm (2D tumour slices or 3D
  volumes) with their transforms and the validation inferer;
* :func:`volume_data` / :func:`volume_transforms` / :func:`volume_inferer` serve evaluation and
  inference on whole volumes of any datalist (a 2D network runs slice by slice);
* :func:`load_pretrained` loads local weights (no download, ever).

Orientation: volumes are brought to ``PLS`` (MONAI/nibabel axcodes: array axes towards posterior,
the patient's left, superior), so that an axial slice ``[:, :, z]`` is exactly the canonical
``(y, x)`` slice the 2D networks were trained on (radiological display). A 2D image (a converted
DICOM slice, a thesis-pickle case) is one axial slice: it is evaluated as a volume of one slice
(:class:`~metalung_monai.training.as_volume.AsVolumed`), and predictions are written back in 2D.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import InputError
from .arms import eval_transforms, get_arm, train_transforms
from .data import entries_of, slice_samples, split_entries, volume_samples

__all__ = [
    "Prepared",
    "prepare",
    "roi_size",
    "volume_data",
    "volume_transforms",
    "volume_inferer",
    "load_pretrained",
    "AXCODES",
    "CropToLungsd",
]

#: orientation of volumes for 2D slice-wise and 3D networks (axial slices in radiological display)
AXCODES = "PLS"
#: nibabel's axis labels, given explicitly (MONAI 1.6 warns that its default will change)
ORIENTATION_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


@dataclass
class Prepared:
    """Training and validation data of one arm, with their transforms and validation inferer."""

    train: list
    val: list
    train_transform: object
    val_transform: object
    val_inferer: object
    n_original: int
    n_train: int
    info: dict = field(default_factory=dict)


def roi_size(settings: dict, spatial_dims: int) -> tuple[int, ...]:
    """Patch size of training crops and sliding-window inference."""
    return (settings["crop"],) * 2 if spatial_dims == 2 else tuple(settings["crop_3d"])


def prepare(
    datalist: str | os.PathLike,
    augment: str,
    settings: dict,
    seed: int = 0,
    spatial_dims: int = 2,
    train_mode: str = "slices",
) -> Prepared:
    """Data of one training run.

    Args:
        datalist: datalist JSON (its ``training`` section; patients of fold ``settings["val_fold"]``
            validate).
        augment: arm name (``none``, ``metalung``, ``monai``, ...; see :mod:`.arms`).
        settings: a preset (:func:`metalung_monai.training.preset`).
        seed: seeds the offline expansion (and, through the bundle, everything else).
        spatial_dims: 2 (slices) or 3 (patches of volumes).
        train_mode: ``"slices"`` (2D tumour slices, the thesis' protocol) or ``"patches"``
            (3D patches of whole volumes).
    """
    from monai.inferers import SlidingWindowInferer

    if train_mode not in ("slices", "patches"):
        raise InputError("train_mode", f"must be 'slices' or 'patches', got '{train_mode}'")
    if (train_mode == "slices") != (spatial_dims == 2):
        raise InputError(
            "train_mode",
            f"'{train_mode}' needs spatial_dims {2 if train_mode == 'slices' else 3}, "
            f"got {spatial_dims}",
        )
    arm = get_arm(augment)
    entries = entries_of(datalist, "training")
    train_e, val_e = split_entries(entries, settings.get("val_fold"))
    if not train_e:
        raise InputError(datalist, "no training cases left after setting the validation fold aside")
    if train_mode == "slices":
        train = slice_samples(train_e)
        val = slice_samples(val_e)
        n_original = len(train)
        train = arm.expand(train, settings, seed)
        load = False
        val_tf = eval_transforms(settings, 2)
    else:
        train = volume_samples(train_e)
        val = volume_samples(val_e)
        n_original = len(train)
        load = True
        val_tf = volume_transforms(settings, with_label=True)
    if not train:
        raise InputError(datalist, "no training samples with a tumour")
    if (
        not val and settings.get("val_fold") is not None
    ):  # the validator would fail after the first epoch
        raise InputError(
            datalist,
            f"no validation samples with a tumour in the validation fold {settings['val_fold']} "
            f"(training cases with that 'fold': {len(val_e)})",
        )
    inferer = SlidingWindowInferer(
        roi_size=roi_size(settings, spatial_dims),
        sw_batch_size=settings["sw_batch_size"],
        overlap=0.25,
        mode="gaussian",
    )
    return Prepared(
        train=train,
        val=val,
        train_transform=train_transforms(augment, settings, spatial_dims, load=load),
        val_transform=val_tf,
        val_inferer=inferer,
        n_original=n_original,
        n_train=len(train),
        info={
            "arm": arm.name,
            "description": arm.description,
            "train_patients": len(train_e),
            "val_patients": len(val_e),
        },
    )


def volume_data(datalist: str | os.PathLike, section: str = "test") -> list[dict]:
    """Whole-volume samples of a datalist section (files), with their metadata."""
    out = []
    for e in entries_of(datalist, section):
        s = {
            "image": e["image"],
            "patient_id": str(e["patient_id"]),
            "case_id": str(e.get("case_id") or Path(e["image"]).name.split(".")[0]),
            "lung_rads": str(e.get("lung_rads") or "LR1"),
        }
        if e.get("mask"):
            s["label"] = e["mask"]
        if e.get("lung_mask"):
            s["lung"] = e["lung_mask"]
        out.append(s)
    return out


class CropToLungsd:
    """Crop every key to the bounding box of the lungs (``lung`` key) plus ``margin`` voxels.

    Evaluation only looks where tumours can be: the slices and the in-plane region that hold
    lung (faster, and false positives are counted inside the chest). A sample without a ``lung``
    key is returned unchanged (then the whole volume is evaluated).
    """

    def __init__(self, keys, margin: int = 4) -> None:
        self.keys = tuple(keys)
        self.margin = int(margin)

    def __call__(self, data: dict) -> dict:
        from monai.transforms import CropForegroundd

        if "lung" not in data:
            return data
        crop = CropForegroundd(
            keys=self.keys,
            source_key="lung",
            margin=self.margin,
            allow_smaller=True,
            allow_missing_keys=True,
        )
        return crop(data)


def _resample(settings: dict, keys: tuple) -> list:
    """In-plane resampling to ``settings["pixel_mm"]`` (when set): real CT at another pixel size
    than the training data (e.g. 0.57 mm vs the phantom's 1.4 mm) is seen at the trained scale.
    Images bilinear, label and lungs nearest; the slice spacing is kept."""
    from monai.transforms import Spacingd

    px = settings.get("pixel_mm")
    if not px:
        return []
    modes = tuple("nearest" if k in ("label", "lung") else "bilinear" for k in keys)
    return [
        Spacingd(keys=keys, pixdim=(float(px), float(px), 0.0), mode=modes, allow_missing_keys=True)
    ]


def volume_transforms(settings: dict, with_label: bool = True, crop_to_lungs: bool = False):
    """Load a volume (and label, lungs), orient it ``PLS``, keep its HU as ``hu``, window ``image``.

    With ``crop_to_lungs`` (evaluation) every key is cropped to the lungs' bounding box first
    (:class:`CropToLungsd`)."""
    from monai.transforms import (
        Compose,
        CopyItemsd,
        EnsureChannelFirstd,
        EnsureTyped,
        LoadImaged,
        Orientationd,
    )

    from .arms import _window
    from .as_volume import AsVolumed

    keys = ("image", "label", "lung") if with_label else ("image", "lung")
    return Compose(
        [
            LoadImaged(keys=keys, image_only=True, allow_missing_keys=True),
            EnsureChannelFirstd(keys=keys, allow_missing_keys=True),
            AsVolumed(keys=keys),
            Orientationd(
                keys=keys, axcodes=AXCODES, labels=ORIENTATION_LABELS, allow_missing_keys=True
            ),
            *_resample(settings, keys),
            *([CropToLungsd(keys=keys)] if crop_to_lungs else []),
            CopyItemsd(keys="image", names="hu"),
            _window(settings),
            EnsureTyped(keys=keys + ("hu",), allow_missing_keys=True),
        ]
    )


def volume_inferer(settings: dict, spatial_dims: int):
    """Whole-volume inferer: 2D networks slice by slice along the axial axis, 3D by sliding window."""
    from monai.inferers import SliceInferer, SlidingWindowInferer

    if spatial_dims == 2:
        # whole slices up to eval_roi pixels in one window (the networks are fully convolutional)
        return SliceInferer(
            roi_size=(settings["eval_roi"],) * 2,
            sw_batch_size=settings["sw_batch_size"],
            spatial_dim=2,
            overlap=0.25,
            mode="gaussian",
            progress=False,
        )
    return SlidingWindowInferer(
        roi_size=roi_size(settings, 3),
        sw_batch_size=settings["sw_batch_size"],
        overlap=0.25,
        mode="gaussian",
    )


def load_pretrained(network: torch.nn.Module, path: str | os.PathLike | None) -> torch.nn.Module:
    """Load local weights into ``network`` when ``path`` is given; return the network.

    Accepts a plain ``state_dict``, a checkpoint dict holding one under ``model``/``network``/
    ``state_dict``, and weights saved from ``DistributedDataParallel`` (``module.`` prefix).
    Nothing is ever downloaded.

    Raises:
        InputError: the file does not exist, cannot be read, or does not fit the network.
    """
    if path in (None, "", "None", "none"):
        return network
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "pretrained weights file does not exist")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file
        raise InputError(p, f"cannot be read as PyTorch weights ({type(e).__name__}: {e})") from e
    for key in ("model", "network", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(p, f"weights do not fit the network: {str(e).splitlines()[0]}") from e
    return network
