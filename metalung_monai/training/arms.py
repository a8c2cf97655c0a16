"""Augmentation arms of the experiment: their names and what they are.

An arm's transforms are not code: each bundle spells them out in an override file,
``bundles/<bundle>/configs/augment_<arm>.json``, stacked on ``train.json``. An arm file fills three
slots of ``train.json`` (everything else: windowing, cropping, network, iterations, seeds, is the
same for every arm):

* ``train#expansion``: offline, a transform in ``"expand"`` mode applied to each 2D training
  sample, whose variants are added to the training set (MetaLung grows it as in the thesis,
  708 -> 4,865 slices); ``null`` for none;
* ``train#hu_augmentation``: online random transforms on HU images, before the window;
* ``train#augmentation``: online random transforms after the HU window (intensities in [0, 1]),
  where generic pipelines such as nnU-Net's work.

This module only names the arms (``metalung experiment --augment`` checks the names here, and the
names become run folders). Adding an arm is one ``augment_<name>.json`` per bundle and one
:func:`register_arm` call.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from ..utils.paths import is_safe_name

__all__ = ["Arm", "ARMS", "register_arm", "get_arm", "arm_config"]


@dataclass(frozen=True)
class Arm:
    """One augmentation arm: its name (``augment_<name>.json``), what it does, in words, and the
    lesion banks it inserts from (the names its file gives ``mt.insertion_banks``: a tuple of
    ``lesion_banks`` names, ``"generated"`` for every generated bank, ``None`` for no insertion;
    ``results.md``'s Table 5 reports their lesions)."""

    name: str
    description: str
    banks: tuple[str, ...] | str | None = None


ARMS: dict[str, Arm] = {}


def register_arm(arm: Arm) -> Arm:
    """Make ``arm`` available by name to ``metalung experiment`` (its bundles need the file).

    Raises:
        InputError: the name is not a safe file name (it names the arm's run folders and files).
    """
    if not isinstance(arm.name, str) or not all(is_safe_name(p) for p in arm.name.split("+")):
        raise InputError(
            "arm name",
            f"{arm.name!r} is not a safe file name (letters, digits, '.', '_', '-', and '+' "
            "between two such names for a combined arm); it names the arm's run folders",
        )
    ARMS[arm.name] = arm
    return arm


def get_arm(name: str) -> Arm:
    """The registered arm ``name``.

    Raises:
        InputError: no such arm.
    """
    if name not in ARMS:
        raise InputError(
            "augment", f"unknown augmentation arm '{name}' (choose from {', '.join(ARMS)})"
        )
    return ARMS[name]


def arm_config(name: str) -> str:
    """The file name of arm ``name``'s override file in a bundle's ``configs/``."""
    return f"augment_{get_arm(name).name}.json"


register_arm(Arm("none", "baseline: no augmentation"))
register_arm(
    Arm(
        "metalung",
        "MetaLung: the six HU-preserving operations (offline expansion in 2D, online in 3D)",
    )
)
register_arm(
    Arm(
        "monai",
        "generic MONAI pipeline with nnU-Net-style defaults (flips, rotation/zoom, noise, blur, "
        "intensity scale/shift, gamma)",
    )
)
register_arm(
    Arm(
        "metalung+monai",
        "MetaLung's HU-exact operations on HU, then the generic MONAI pipeline after the window",
    )
)

for _op, _what in (
    ("mirror", "mirror the slice (the tumour changes lung)"),
    ("relocate", "move the tumour into free lung space, the opposite lung first"),
    ("rotate_image", "rotate the whole image by 1-90 degrees either way, nearest neighbour"),
    ("rotate_tumor", "rotate the tumour in place by 1-90 degrees"),
    ("noise_image", "integer noise of 0-20 HU on the image"),
    ("noise_tumor", "integer noise of 0-20 HU on the tumour only"),
):
    register_arm(Arm(_op, f"one MetaLung operation (the thesis' single rows): {_what}"))
register_arm(Arm("blur", "Gaussian blurring (the thesis' peer), sigma 0.5-1.5 pixels, p 0.5"))
register_arm(Arm("elastic", "elastic deformation (the thesis' peer): MONAI Rand2DElasticd, p 0.5"))
register_arm(
    Arm(
        "copypaste",
        "real lesions of the bank 'real' inserted online into free lung (TumorCP's peer), "
        "p insert_prob",
        banks=("real",),
    )
)
for _gen in ("vqvae", "dcgan", "diffusion"):
    register_arm(
        Arm(
            _gen,
            f"generated lesions of the bank '{_gen}' inserted online, p insert_prob",
            banks=(_gen,),
        )
    )
register_arm(
    Arm(
        "mixed",
        "MetaLung's six operations and generated lesions of every generated bank inserted "
        "online (the thesis' best arm)",
        banks="generated",
    )
)
