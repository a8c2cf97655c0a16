"""MetaLung dictionary transforms: the ``...d`` twins and :class:`MetaLungd`.

Keys follow MONAI: ``keys=("image", "mask")`` by default, channel-first ``MetaTensor`` values.
For the operations that need the tumour, ``keys`` is the pair ``(image_key, mask_key)``; an
optional ``lung_key`` names precomputed lung labels (1 right, 2 left, e.g. the datalist's
``lung_mask`` loaded with ``LoadImaged``) so that the lung mask is not recomputed per call.

Geometric operations (mirror, image rotation) move every key in ``keys`` (images padded with
air, masks with 0) and are invertible with ``inverse`` / ``Invertd``. Each call appends a JSON
record to ``meta["metalung"]`` of the image (see :func:`.array.metalung_records`).

Grid and mask convention: every key a transform reads must have the spatial shape of the first
(image) key; a mask or label map of another shape is refused with an
:class:`~metalung_monai.errors.InputError` naming the key. A tumour mask (nonzero = tumour) comes
out ``{0, 1}`` in its own dtype whatever the operation (:func:`.array.binary_mask`): always for
the ``mask_key`` of :class:`MetaLungd` and of the tumour operations, and for the keys listed in
``mask_keys`` of the per-key geometric twins (whose other keys, e.g. lung labels 1/2, keep their
values).

Example::

    from monai.transforms import Compose, LoadImaged, EnsureChannelFirstd
    from metalung_monai.transforms import MetaLungd

    train = Compose([
        LoadImaged(keys=("image", "mask")), EnsureChannelFirstd(keys=("image", "mask")),
        MetaLungd(keys=("image", "mask"), prob=0.8),          # one random MetaLung op per call
    ])
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    InvertibleTransform,
    MapTransform,
    Randomizable,
    RandomizableTransform,
    SomeOf,
)
from monai.utils import ensure_tuple, ensure_tuple_rep

from ...errors import InputError
from . import functional as F
from .array import (
    IntegerNoise,
    MirrorLR,
    RandIntegerNoise,
    RandMirrorLR,
    RandRelocateTumor,
    RandRotateImage,
    RandRotateTumor,
    RandTumorNoise,
    RelocateTumor,
    RotateImage,
    RotateTumor,
    TumorNoise,
    _replay_arg,
    _stamp,
    _TumourOp,
    binary_mask,
    metalung_records,
)

__all__ = [
    "METALUNG_OPS",
    "replay_record",
    "MirrorLRd",
    "RandMirrorLRd",
    "RotateImaged",
    "RandRotateImaged",
    "RelocateTumord",
    "RandRelocateTumord",
    "RotateTumord",
    "RandRotateTumord",
    "IntegerNoised",
    "RandIntegerNoised",
    "TumorNoised",
    "RandTumorNoised",
    "MetaLungd",
    "MirrorLRD",
    "MirrorLRDict",
    "MetaLungD",
    "MetaLungDict",
]

#: the six MetaLung operations, by the names used in datalists and on the command line
METALUNG_OPS = ("mirror", "relocate", "rotate_image", "rotate_tumor", "noise_image", "noise_tumor")
#: operations that move or keep the mask's values as they are (the others write a {0, 1} mask)
_KEEP_MASK_VALUES = frozenset({"mirror", "rotate_image", "noise_image"})


def _fills(keys: tuple, fill) -> tuple[float, ...]:
    if fill is None:
        return tuple(float(F.AIR_HU) if i == 0 else 0.0 for i in range(len(keys)))
    return tuple(float(f) for f in ensure_tuple_rep(fill, len(keys)))


def _pair(keys: KeysCollection, name: str) -> tuple[Hashable, Hashable]:
    k = ensure_tuple(keys)
    if len(k) != 2:
        raise ValueError(f"{name}: keys must be (image_key, mask_key), got {k}")
    return k[0], k[1]


def _check_grid(d: Mapping, keys, owner: str) -> None:
    """Refuse any present key whose spatial shape differs from the first present key's (the image)."""
    present = [k for k in keys if k is not None and k in d and hasattr(d[k], "shape")]
    if len(present) < 2:
        return
    ref = present[0]
    ref_shape = tuple(d[ref].shape[1:])
    for key in present[1:]:
        shape = tuple(d[key].shape[1:])
        if shape != ref_shape:
            raise InputError(
                str(key),
                f"spatial shape {shape} does not match the spatial shape {ref_shape} of "
                f"'{ref}' ({owner} expects channel-first arrays on one grid)",
            )


def _binarise_keys(d: dict, mask_keys) -> dict:
    for key in mask_keys:
        if key in d and d[key] is not None:
            d[key] = binary_mask(d[key])
    return d


def _require(d: Mapping, key: Hashable, owner: str):
    if key not in d:
        raise InputError(
            str(key), f"{owner}: key missing from the data dictionary (keys: {sorted(map(str, d))})"
        )
    return d[key]


class _SeedsInner(RandomizableTransform):
    """A random dictionary transform whose array transform (``self._inner``) draws the parameters:
    both are seeded together, so ``set_random_state`` reproduces a call exactly."""

    _inner: RandomizableTransform

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self._inner.set_random_state(seed, state)
        return self


class _InvertsPerKey(InvertibleTransform):
    """``inverse`` of a dictionary twin whose array transform (``self._array``) inverts one key at a time."""

    _array: InvertibleTransform

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self._array.inverse(d[key])
        return d


# --------------------------------------------------------------------------- 1. mirror
class MirrorLRd(MapTransform, _InvertsPerKey):
    """Dictionary twin of :class:`.array.MirrorLR`: mirror every key along the patient's left-right axis.

    Every key must have the spatial shape of the first. Keys in ``mask_keys`` (binary masks) come
    out ``{0, 1}`` in their own dtype; the others keep their values (e.g. lung labels 1/2).
    """

    backend = MirrorLR.backend

    def __init__(
        self,
        keys: KeysCollection = ("image", "mask"),
        axcodes: str | None = None,
        allow_missing_keys: bool = False,
        mask_keys: KeysCollection | None = None,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.mirror = self._array = MirrorLR(axcodes)
        self.mask_keys = ensure_tuple(mask_keys) if mask_keys is not None else ()

    @classmethod
    def from_record(cls, record: Mapping, **kwargs: Any) -> MirrorLRd:
        """The mirror of a ``"mirror"`` record (nothing random); ``kwargs``: ``keys``, ``axcodes``..."""
        return cls(**kwargs)

    def twin_of(self, record: Mapping) -> MirrorLRd:
        """Itself: the mirror is deterministic."""
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        _check_grid(d, self.keys, type(self).__name__)
        _binarise_keys(d, self.mask_keys)
        for key in self.key_iterator(d):
            d[key] = self.mirror(d[key])
        return d


class RandMirrorLRd(_SeedsInner, MapTransform, _InvertsPerKey):
    """With probability ``prob``, mirror all keys along the patient's left-right axis (same draw).

    ``mask_keys``: as :class:`MirrorLRd`. ``randomize=False`` replays the last coin.
    """

    backend = MirrorLR.backend

    def __init__(
        self,
        keys: KeysCollection = ("image", "mask"),
        prob: float = 0.5,
        axcodes: str | None = None,
        allow_missing_keys: bool = False,
        mask_keys: KeysCollection | None = None,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.mirror = self._inner = self._array = RandMirrorLR(prob=1.0, axcodes=axcodes)
        self.mask_keys = ensure_tuple(mask_keys) if mask_keys is not None else ()

    def twin_of(self, record: Mapping) -> MirrorLRd:
        """The deterministic twin of a ``"mirror"`` record this transform made."""
        return MirrorLRd(
            self.keys, self.mirror.mirror.axcodes, self.allow_missing_keys, self.mask_keys
        )

    def __call__(self, data: Mapping[Hashable, Any], randomize: bool = True) -> dict[Hashable, Any]:
        d = dict(data)
        _check_grid(d, self.keys, type(self).__name__)
        _binarise_keys(d, self.mask_keys)
        if randomize:
            self.randomize(None)
        self.mirror._do_transform = self._do_transform
        for key in self.key_iterator(d):
            d[key] = self.mirror(d[key], randomize=False)
        return d


# --------------------------------------------------------------------------- 3. rotate image
class RotateImaged(MapTransform, _InvertsPerKey):
    """Dictionary twin of :class:`.array.RotateImage`: rotate every key by ``angle`` degrees.

    Args:
        keys: keys to rotate (image first, then masks / label maps).
        angle: signed angle in degrees (a ``"rotate_image"`` record's ``angle``).
        fill: padding per key; default air (-1024 HU) for the first key and 0 for the others.
        axcodes, allow_missing_keys, mask_keys: as :class:`RandRotateImaged`.
    """

    backend = RotateImage.backend

    def __init__(
        self,
        keys: KeysCollection = ("image", "mask"),
        angle: float = 0.0,
        fill: Sequence[float] | float | None = None,
        axcodes: str | None = None,
        allow_missing_keys: bool = False,
        mask_keys: KeysCollection | None = None,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.fill = _fills(self.keys, fill)
        self.rotator = self._array = RotateImage(angle, axcodes=axcodes)
        self.mask_keys = ensure_tuple(mask_keys) if mask_keys is not None else ()

    @classmethod
    def from_record(cls, record: Mapping, **kwargs: Any) -> RotateImaged:
        """The rotation of a ``"rotate_image"`` record (its exact ``angle``)."""
        return cls(angle=_replay_arg(record, "angle"), **kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        _check_grid(d, self.keys, type(self).__name__)
        _binarise_keys(d, self.mask_keys)
        for key, fill in self.key_iterator(d, self.fill):
            d[key] = self.rotator(d[key], fill=fill)
        return d


class RandRotateImaged(_SeedsInner, MapTransform, _InvertsPerKey):
    """Dictionary twin of :class:`.array.RandRotateImage`: one random angle for every key.

    Args:
        keys: keys to rotate (image first, then masks / label maps).
        prob, angle_range, random_sign, axcodes: as :class:`.array.RandRotateImage`.
        fill: padding per key; default air (-1024 HU) for the first key and 0 for the others.
        mask_keys: keys holding binary masks: they come out ``{0, 1}`` in their own dtype (the
            other keys keep their values, e.g. lung labels 1/2). Every key must have the spatial
            shape of the first.

    ``randomize=False`` replays the last draw (coin and angle).
    """

    backend = RandRotateImage.backend

    def __init__(
        self,
        keys: KeysCollection = ("image", "mask"),
        prob: float = 1.0,
        angle_range: tuple[float, float] = (1.0, 90.0),
        random_sign: bool = True,
        fill: Sequence[float] | float | None = None,
        axcodes: str | None = None,
        allow_missing_keys: bool = False,
        mask_keys: KeysCollection | None = None,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.fill = _fills(self.keys, fill)
        self.rotator = self._inner = self._array = RandRotateImage(
            prob=1.0, angle_range=angle_range, random_sign=random_sign, axcodes=axcodes
        )
        self.mask_keys = ensure_tuple(mask_keys) if mask_keys is not None else ()

    def twin_of(self, record: Mapping) -> RotateImaged:
        """The deterministic twin of a ``"rotate_image"`` record this transform made."""
        return RotateImaged(
            self.keys,
            _replay_arg(record, "angle"),
            self.fill,
            self.rotator.axcodes,
            self.allow_missing_keys,
            self.mask_keys,
        )

    def randomize(self, data: Any = None) -> None:
        """Draw the coin (own ``R``), then the angle (the array transform's ``R``)."""
        super().randomize(None)
        if self._do_transform:
            self.rotator.randomize()
        self.rotator._do_transform = self._do_transform

    def __call__(self, data: Mapping[Hashable, Any], randomize: bool = True) -> dict[Hashable, Any]:
        d = dict(data)
        _check_grid(d, self.keys, type(self).__name__)
        _binarise_keys(d, self.mask_keys)
        if randomize:
            self.randomize(None)
        for key, fill in self.key_iterator(d, self.fill):
            d[key] = self.rotator(d[key], randomize=False, fill=fill)
        return d


# --------------------------------------------------------------------------- tumour operations
def _apply_pair(owner: MapTransform, d: dict, image_key, mask_key, lung_key, op, **kwargs) -> dict:
    """``d[image_key], d[mask_key] = op(image, mask[, lungs=d[lung_key]], **kwargs)``."""
    if owner.allow_missing_keys and (image_key not in d or mask_key not in d):
        return d
    img = _require(d, image_key, type(owner).__name__)
    mask = _require(d, mask_key, type(owner).__name__)
    if lung_key is not None and lung_key in d:
        kwargs["lungs"] = d[lung_key]
    d[image_key], d[mask_key] = op(img, mask, **kwargs)
    return d


class _PairTwind(MapTransform):
    """``(image_key, mask_key)`` dictionary wrapper of a deterministic tumour operation."""

    backend = _TumourOp.backend

    def __init__(
        self, keys: KeysCollection, lung_key: Hashable | None, op, allow_missing_keys: bool
    ) -> None:
        self.image_key, self.mask_key = _pair(keys, type(self).__name__)
        MapTransform.__init__(self, (self.image_key, self.mask_key), allow_missing_keys)
        self.lung_key = lung_key
        self.op = op

    @classmethod
    def _wrap(cls, keys, lung_key, op, allow_missing_keys: bool) -> _PairTwind:
        """An instance around an already built array twin ``op``."""
        obj = cls.__new__(cls)
        _PairTwind.__init__(obj, keys, lung_key, op, allow_missing_keys)
        return obj

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        _check_grid(d, (self.image_key, self.mask_key, self.lung_key), type(self).__name__)
        return _apply_pair(self, d, self.image_key, self.mask_key, self.lung_key, self.op)


class _PairOpd(_SeedsInner, MapTransform):
    """``(image_key, mask_key)`` dictionary wrapper of a random tumour operation.

    :meth:`randomize` draws the coin (own ``R``), then the operation's arguments (the array
    transform's ``R``, which may look at the mask); ``randomize=False`` replays them.
    """

    def __init__(
        self, keys: KeysCollection, lung_key: Hashable | None, op, allow_missing_keys: bool
    ) -> None:
        self.image_key, self.mask_key = _pair(keys, type(self).__name__)
        MapTransform.__init__(self, (self.image_key, self.mask_key), allow_missing_keys)
        RandomizableTransform.__init__(self, op.prob)
        self.lung_key = lung_key
        self.op = self._inner = op
        self.op.prob = 1.0

    _twin_class: type[_PairTwind]

    def twin_of(self, record: Mapping) -> _PairTwind:
        """The deterministic twin of a record this transform made (its keys and settings)."""
        return self._twin_class._wrap(
            (self.image_key, self.mask_key),
            self.lung_key,
            self.op.twin_of(record),
            self.allow_missing_keys,
        )

    def randomize(self, data: Mapping[Hashable, Any] | None = None) -> None:
        super().randomize(None)
        if self._do_transform and data is not None:
            if self.image_key in data and self.mask_key in data:
                self.op.randomize(data[self.mask_key])

    def __call__(self, data: Mapping[Hashable, Any], randomize: bool = True) -> dict[Hashable, Any]:
        d = dict(data)
        _check_grid(d, (self.image_key, self.mask_key, self.lung_key), type(self).__name__)
        if randomize:
            self.randomize(d)
        if not self._do_transform:
            return _stamp_keys(_binarise_keys(d, (self.mask_key,)), (self.image_key, self.mask_key))
        return _apply_pair(
            self, d, self.image_key, self.mask_key, self.lung_key, self.op, randomize=False
        )


class RelocateTumord(_PairTwind):
    """Dictionary twin of :class:`.array.RelocateTumor` (keys = ``(image_key, mask_key)``).

    Replays a ``"relocate"`` record exactly (``RelocateTumord.from_record(record)``); arguments
    as :class:`RandRelocateTumord`, with ``seed`` instead of ``prob``.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "mask"),
        lung_key: Hashable | None = None,
        seed: int = 0,
        margin_mm: float = 2.0,
        ring: int = 1,
        rotate_180: bool = True,
        opposite_first: bool = True,
        axcodes: str | None = None,
        spacing: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
        min_vessel_mm: float | None = 3.0,
    ) -> None:
        op = RelocateTumor(
            seed, margin_mm, ring, rotate_180, opposite_first, axcodes, spacing, min_vessel_mm
        )
        super().__init__(keys, lung_key, op, allow_missing_keys)

    @classmethod
    def from_record(cls, record: Mapping, **kwargs: Any) -> RelocateTumord:
        return cls(seed=_replay_arg(record, "seed"), **kwargs)


class RandRelocateTumord(_PairOpd):
    """Dictionary twin of :class:`.array.RandRelocateTumor` (keys = ``(image_key, mask_key)``).

    The mask (and ``lung_key``) must have the image's spatial shape; the mask comes out ``{0, 1}``
    in its own dtype. The same holds for :class:`RandRotateTumord` and :class:`RandTumorNoised`.
    ``min_vessel_mm`` (default 3.0, ``None`` to disable): vessels a large tumour with no
    vessel-free room may cover (see :class:`.array.RelocateTumor`); through :class:`MetaLungd`:
    ``op_kwargs={"relocate": {"min_vessel_mm": None}}``.
    """

    backend = RandRelocateTumor.backend
    _twin_class = RelocateTumord

    def __init__(
        self,
        keys: KeysCollection = ("image", "mask"),
        lung_key: Hashable | None = None,
        prob: float = 1.0,
        margin_mm: float = 2.0,
        ring: int = 1,
        rotate_180: bool = True,
        opposite_first: bool = True,
        axcodes: str | None = None,
        spacing: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
        min_vessel_mm: float | None = 3.0,
    ) -> None:
        op = RandRelocateTumor(
            prob, margin_mm, ring, rotate_180, opposite_first, axcodes, spacing, min_vessel_mm
        )
        super().__init__(keys, lung_key, op, allow_missing_keys)


class RotateTumord(_PairTwind):
    """Dictionary twin of :class:`.array.RotateTumor` (keys = ``(image_key, mask_key)``).

    Replays a ``"rotate_tumor"`` record exactly (``RotateTumord.from_record(record)``).
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "mask"),
        lung_key: Hashable | None = None,
        angles: Sequence[float] = (),
        seed: int = 0,
        ring: int = 0,
        angle_range: tuple[float, float] = (1.0, 90.0),
        axcodes: str | None = None,
        spacing: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        op = RotateTumor(angles, seed, ring, angle_range, axcodes, spacing)
        super().__init__(keys, lung_key, op, allow_missing_keys)

    @classmethod
    def from_record(cls, record: Mapping, **kwargs: Any) -> RotateTumord:
        return cls(angles=_replay_arg(record, "angles"), seed=_replay_arg(record, "seed"), **kwargs)


class RandRotateTumord(_PairOpd):
    """Dictionary twin of :class:`.array.RandRotateTumor` (keys = ``(image_key, mask_key)``)."""

    backend = RandRotateTumor.backend
    _twin_class = RotateTumord

    def __init__(
        self,
        keys: KeysCollection = ("image", "mask"),
        lung_key: Hashable | None = None,
        prob: float = 1.0,
        angle_range: tuple[float, float] = (1.0, 90.0),
        random_sign: bool = True,
        ring: int = 0,
        axcodes: str | None = None,
        spacing: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        op = RandRotateTumor(prob, angle_range, random_sign, ring, axcodes, spacing)
        super().__init__(keys, lung_key, op, allow_missing_keys)


class TumorNoised(_PairTwind):
    """Dictionary twin of :class:`.array.TumorNoise` (keys = ``(image_key, mask_key)``).

    Replays a ``"noise_tumor"`` record exactly (``TumorNoised.from_record(record)``).
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "mask"),
        seed: int = 0,
        noise_range: tuple[int, int] = (0, 20),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, None, TumorNoise(seed, noise_range), allow_missing_keys)

    @classmethod
    def from_record(cls, record: Mapping, **kwargs: Any) -> TumorNoised:
        kwargs.setdefault("noise_range", tuple(_replay_arg(record, "noise_range")))
        return cls(seed=_replay_arg(record, "seed"), **kwargs)


class RandTumorNoised(_PairOpd):
    """Dictionary twin of :class:`.array.RandTumorNoise` (keys = ``(image_key, mask_key)``)."""

    backend = RandTumorNoise.backend
    _twin_class = TumorNoised

    def __init__(
        self,
        keys: KeysCollection = ("image", "mask"),
        prob: float = 1.0,
        noise_range: tuple[int, int] = (0, 20),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, None, RandTumorNoise(prob, noise_range), allow_missing_keys)


class IntegerNoised(MapTransform):
    """Dictionary twin of :class:`.array.IntegerNoise`: integer HU noise on the image keys.

    Args:
        keys: image keys (never a mask).
        seed: one seed, or one per key (a ``"noise_image"`` record's ``seed``).
        noise_range: closed integer range in HU.
    """

    backend = IntegerNoise.backend

    def __init__(
        self,
        keys: KeysCollection = "image",
        seed: int | Sequence[int] = 0,
        noise_range: tuple[int, int] = (0, 20),
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        seeds = ensure_tuple_rep(seed, len(self.keys))
        self.noise = {k: IntegerNoise(s, noise_range) for k, s in zip(self.keys, seeds)}

    @classmethod
    def from_record(cls, record: Mapping, **kwargs: Any) -> IntegerNoised:
        kwargs.setdefault("noise_range", tuple(_replay_arg(record, "noise_range")))
        return cls(seed=_replay_arg(record, "seed"), **kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.noise[key](d[key])
        return d


class RandIntegerNoised(_SeedsInner, MapTransform):
    """Dictionary twin of :class:`.array.RandIntegerNoise`: integer HU noise on the image keys.

    List only images in ``keys`` (never a mask). Each key gets its own noise draw (``seeds``,
    by key, after :meth:`randomize`); ``randomize=False`` replays them.
    """

    backend = RandIntegerNoise.backend

    def __init__(
        self,
        keys: KeysCollection = "image",
        prob: float = 1.0,
        noise_range: tuple[int, int] = (0, 20),
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.noise = self._inner = RandIntegerNoise(prob=1.0, noise_range=noise_range)
        self.seeds: dict[Hashable, int] = {}

    def twin_of(self, record: Mapping) -> IntegerNoised:
        """The deterministic twin of one key's ``"noise_image"`` record (its seed for every key:
        with several keys, build :class:`IntegerNoised` with one seed per key instead)."""
        return IntegerNoised.from_record(
            record, keys=self.keys, allow_missing_keys=self.allow_missing_keys
        )

    def randomize(self, data: Mapping[Hashable, Any] | None = None) -> None:
        """Draw the coin (own ``R``), then for each key present a coin and a seed (the array
        transform's ``R``, its coin always true)."""
        super().randomize(None)
        self.seeds = {}
        if self._do_transform and data is not None:
            for key in self.key_iterator(data):
                self.noise.randomize(None)
                self.seeds[key] = int(self.noise.seed)

    def __call__(self, data: Mapping[Hashable, Any], randomize: bool = True) -> dict[Hashable, Any]:
        d = dict(data)
        if randomize:
            self.randomize(d)
        if not self._do_transform:
            return _stamp_keys(d, self.keys)
        for key in self.key_iterator(d):
            if key not in self.seeds:
                raise InputError(
                    str(key), "RandIntegerNoised: replayed (randomize=False) on a key not drawn"
                )
            d[key] = IntegerNoise(self.seeds[key], self.noise.noise_range)(d[key])
        return d


# --------------------------------------------------------------------------- replay
_TWINS = {
    "mirror": (MirrorLR, MirrorLRd),
    "relocate": (RelocateTumor, RelocateTumord),
    "rotate_image": (RotateImage, RotateImaged),
    "rotate_tumor": (RotateTumor, RotateTumord),
    "noise_image": (IntegerNoise, IntegerNoised),
    "noise_tumor": (TumorNoise, TumorNoised),
}


def replay_record(record: Mapping, keys: KeysCollection | None = None, **kwargs: Any):
    """The deterministic transform that replays a MetaLung record exactly (TorchIO-style).

    ``record`` is one entry of :func:`.array.metalung_records`; the record holds the random
    arguments, ``kwargs`` the settings that are not random (``margin_mm``, ``ring``, ``axcodes``,
    ``fill``... as the transform that made it; defaults otherwise). Without ``keys``: the array
    twin (e.g. :class:`.array.RelocateTumor`); with ``keys``: the dictionary twin (e.g.
    :class:`RelocateTumord`), ``keys`` as for that twin (``(image_key, mask_key)`` for the
    tumour operations, ``lung_key`` in ``kwargs``).

    Example: replay the augmentation of an image (all its records, oldest first)::

        d = original
        for rec in metalung_records(augmented["image"]):
            d = replay_record(rec, keys=("image", "mask"))(d)
    """
    op = record.get("op") if isinstance(record, Mapping) else None
    if op not in _TWINS:
        raise ValueError(
            f"not a MetaLung record (its 'op' must be one of {', '.join(METALUNG_OPS)}): {record}"
        )
    array_twin, dict_twin = _TWINS[op]
    if keys is None:
        return array_twin.from_record(record, **kwargs)
    return dict_twin.from_record(record, keys=keys, **kwargs)


# --------------------------------------------------------------------------- MetaLungd
class MetaLungSomeOf(SomeOf):
    """MONAI's ``SomeOf`` as :class:`MetaLungd` uses it: the choice is drawn in :meth:`randomize`.

    What it keeps from ``SomeOf``: the validated ``num_transforms`` / ``weights`` (normalised by
    ``SomeOf``, the same ``w / w.sum()`` as before), the draws (``R.randint(lo, hi + 1)``, then
    ``R.choice(n, k, replace=False, p=weights)``), the trace (``{"applied_order": [...]}`` on
    every MetaTensor it is given: :class:`MetaLungd` gives it only the keys it owns) and
    ``inverse`` (pop the trace, invert the invertible transforms of the order, newest first).
    What it changes, each for a reason (the first four shown by ``tests/test_metalung_replay.py``):

    * the choice is drawn in :meth:`randomize` and replayed by ``apply(..., randomize=False)``
      (``SomeOf`` draws inside ``__call__``, so it cannot replay);
    * with one operation nothing is drawn (``SomeOf`` would draw a size and a choice and change
      the random stream of every seeded single-operation ``MetaLungd``);
    * the operations run directly, not through ``execute_compose``, whose ``apply_transform``
      would wrap the operations' typed :class:`~metalung_monai.errors.InputError` in a
      ``RuntimeError``;
    * the trace is pushed only when an invertible operation (mirror, image rotation) ran: the
      others have nothing to undo, and a trace would only lengthen ``applied_operations``;
    * ``set_random_state`` seeds only this object's ``R`` (``Compose`` would also reseed the
      operations, already at construction; :meth:`MetaLungd.set_random_state` seeds them, in its
      fixed order, and shares its own ``R`` with this object).
    """

    def __init__(self, transforms: Sequence, num_transforms: tuple[int, int], weights) -> None:
        super().__init__(transforms, num_transforms=num_transforms, weights=weights)
        self.applied_order: list[int] = []

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        Randomizable.set_random_state(self, seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        if len(self.transforms) == 1:
            self.applied_order = [0]
            return
        k = self.R.randint(self.min_num_transforms, self.max_num_transforms + 1)
        self.applied_order = self.R.choice(
            len(self.transforms), k, replace=self.replace, p=self.weights
        ).tolist()

    def apply(self, data: dict[Hashable, Any], randomize: bool = True) -> dict[Hashable, Any]:
        """Run the chosen operations in order; ``randomize`` is passed to the random ones."""
        for i in self.applied_order:
            t = self.transforms[i]
            data = t(data, randomize=randomize) if isinstance(t, Randomizable) else t(data)
        if any(isinstance(self.transforms[i], InvertibleTransform) for i in self.applied_order):
            for key in data:  # as SomeOf.__call__
                if isinstance(data[key], MetaTensor):
                    self.push_transform(
                        data, key, extra_info={"applied_order": list(self.applied_order)}
                    )
        return data

    def __call__(self, data, start=0, end=None, threading=False, lazy=None):
        self.randomize()
        return self.apply(data)


class MetaLungd(RandomizableTransform, MapTransform, InvertibleTransform):
    """MetaLung: the six HU-preserving augmentations as one MONAI transform.

    Two modes:

    * ``"online"`` (default): with probability ``prob`` apply ``num_ops`` operations drawn
      without replacement from ``ops`` (weights ``weights``), in that random order: MONAI's
      ``SomeOf`` (see :class:`MetaLungSomeOf`). Returns one dictionary. Use inside a training
      ``Compose``. ``t(d, randomize=False)`` replays the last call exactly (the coin, the
      choice and every chosen operation's draw).
    * ``"expand"``: return a list: the input (if ``include_original``) followed by ``copies``
      variants of each operation in ``ops`` (mirror, being deterministic, once). Variants whose
      operation could not be applied (relocation with no free space, an empty tumour mask) are
      dropped when ``drop_unapplied``. MONAI's ``DataLoader`` flattens such lists; this is the
      thesis' offline expansion (708 -> 4,865 slices). :meth:`iter_expand` yields the same
      variants one at a time (memory for one variant, however large ``copies``).

    Every variant's operations are logged in its records (:func:`.array.metalung_records`), from
    which :func:`replay_record` rebuilds it exactly without the random state.

    Inputs: the mask (and ``lung_key``) must have the image's spatial shape, else an
    :class:`~metalung_monai.errors.InputError` names the key. Mask convention, the same for every
    operation and both modes: the output mask is ``{0, 1}`` in the input mask's dtype (nonzero =
    tumour; ``{0, 255}`` or ``{0, 2}`` in, ``{0, 1}`` out; see :func:`.array.binary_mask`). Lung
    labels keep their values (1 right, 2 left).

    Inversion (online mode): ``inverse`` / ``Invertd`` undo the mirror and the image rotation
    (through ``SomeOf.inverse``); the tumour operations and the noise are not invertible and are
    left as they are.

    Args:
        keys: ``(image_key, mask_key)``.
        lung_key: optional key of precomputed lung labels (moved with geometric operations and
            used by the tumour operations instead of recomputing the lung mask).
        ops: operation names, a subset of :data:`METALUNG_OPS`.
        weights: relative probabilities of the operations in online mode (default equal).
        num_ops: number of operations per call in online mode, an int or an inclusive
            ``(min, max)`` range.
        mode: ``"online"`` or ``"expand"``.
        copies: variants per operation in expand mode.
        include_original: expand mode returns the input first.
        drop_unapplied: expand mode drops variants whose operation was not applied; the
            record of each dropped variant (with its ``reason``) is kept in :attr:`dropped`.
        prob: online mode: probability of augmenting at all.
        op_kwargs: per-operation keyword arguments, e.g. ``{"rotate_image": {"angle_range": (1, 45)}}``.
        axcodes: orientation of arrays without a meaningful affine (see :mod:`.array`).
    """

    backend = RandRelocateTumor.backend

    def __init__(
        self,
        keys: KeysCollection = ("image", "mask"),
        lung_key: Hashable | None = None,
        ops: Sequence[str] = METALUNG_OPS,
        weights: Sequence[float] | None = None,
        num_ops: int | tuple[int, int] = 1,
        mode: str = "online",
        copies: int = 1,
        include_original: bool = True,
        drop_unapplied: bool = True,
        prob: float = 1.0,
        op_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        axcodes: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        self.image_key, self.mask_key = _pair(keys, "MetaLungd")
        MapTransform.__init__(self, (self.image_key, self.mask_key), allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        ops = tuple(ops)
        unknown = [o for o in ops if o not in METALUNG_OPS]
        if unknown or not ops:
            raise ValueError(
                f"MetaLungd: unknown operation(s) {unknown} (choose from {', '.join(METALUNG_OPS)})"
            )
        if mode not in ("online", "expand"):
            raise ValueError(f"MetaLungd: mode must be 'online' or 'expand', got '{mode}'")
        lo, hi = (
            (num_ops, num_ops) if isinstance(num_ops, int) else (int(num_ops[0]), int(num_ops[1]))
        )
        if not 1 <= lo <= hi <= len(ops):
            raise ValueError(f"MetaLungd: num_ops must lie in 1..{len(ops)}, got {num_ops}")
        if copies < 1:
            raise ValueError(f"MetaLungd: copies must be >= 1, got {copies}")
        w = np.ones(len(ops)) if weights is None else np.asarray(weights, dtype=float)
        if w.shape != (len(ops),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(
                f"MetaLungd: weights must be {len(ops)} non-negative numbers, not all zero; got {weights}"
            )
        self.ops, self.weights, self.num_ops = ops, w / w.sum(), (lo, hi)
        self.mode, self.copies = mode, int(copies)
        self.include_original, self.drop_unapplied = include_original, drop_unapplied
        #: expand mode: the records of the variants the last expansion dropped (not applied)
        self.dropped: list[dict] = []
        self.lung_key = lung_key
        kw = {k: dict(v) for k, v in (op_kwargs or {}).items()}
        geo_keys = (self.image_key, self.mask_key) + ((lung_key,) if lung_key is not None else ())
        pair = (self.image_key, self.mask_key)
        builders = {
            "mirror": lambda: MirrorLRd(geo_keys, axcodes=axcodes, allow_missing_keys=True),
            "relocate": lambda: RandRelocateTumord(
                pair, lung_key, axcodes=axcodes, **kw.get("relocate", {})
            ),
            "rotate_image": lambda: RandRotateImaged(
                geo_keys, axcodes=axcodes, allow_missing_keys=True, **kw.get("rotate_image", {})
            ),
            "rotate_tumor": lambda: RandRotateTumord(
                pair, lung_key, axcodes=axcodes, **kw.get("rotate_tumor", {})
            ),
            "noise_image": lambda: RandIntegerNoised(self.image_key, **kw.get("noise_image", {})),
            "noise_tumor": lambda: RandTumorNoised(pair, **kw.get("noise_tumor", {})),
        }
        self.transforms = {name: builders[name]() for name in ops}
        self._owned = geo_keys
        # SomeOf normalises the weights itself: given w, it computes the same w / w.sum()
        self._someof = MetaLungSomeOf([self.transforms[n] for n in ops], (lo, hi), w)
        self._someof.R = self.R

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> MetaLungd:
        super().set_random_state(seed, state)
        self._someof.R = self.R  # the choice is drawn from this transform's R, after its coin
        for t in self.transforms.values():
            if isinstance(t, RandomizableTransform):
                t.set_random_state(seed=int(self.R.randint(0, 2**32 - 1, dtype=np.int64)))
        return self

    def randomize(self, data: Any = None) -> None:
        """Draw the coin (``R.rand()``), then which operations and in which order (``SomeOf``'s
        draws from the same ``R``; none with one operation). Each chosen operation draws its own
        parameters when it runs (from its own ``R``: they may depend on the previous operation's
        output, e.g. the number of tumour components)."""
        super().randomize(None)
        if self._do_transform:
            self._someof.R = self.R
            self._someof.randomize()
        else:
            self._someof.applied_order = []

    def twin_of(self, record: Mapping) -> MapTransform:
        """The deterministic dictionary twin of one of this transform's records (its keys and the
        operation's settings, the record's draw): e.g. :class:`RelocateTumord` for ``"relocate"``."""
        op = record.get("op") if isinstance(record, Mapping) else None
        if op not in self.transforms:
            raise ValueError(
                f"MetaLungd: record {record} is not of one of its operations ({', '.join(self.ops)})"
            )
        return self.transforms[op].twin_of(record)

    def replay(
        self, data: Mapping[Hashable, Any], records: Sequence[Mapping]
    ) -> dict[Hashable, Any]:
        """``data`` through the deterministic twins of ``records`` (oldest first, e.g.
        ``metalung_records(out[image_key])`` of an output of this transform made from ``data``):
        the same image, mask and records, without any random state."""
        d = _binarise_keys(self._prepare(data), (self.mask_key,))
        for record in records:
            d = self.twin_of(record)(d)
        return _stamp_keys(d, self.keys)

    @property
    def chosen(self) -> list[str]:
        """The operations of the last draw, in the order they run (``[]`` when the coin said no)."""
        return [self.ops[i] for i in self._someof.applied_order]

    def _prepare(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Checked input: every key on the image's grid."""
        d = dict(data)
        _check_grid(d, (self.image_key, self.mask_key, self.lung_key), "MetaLungd")
        return d

    def __call__(
        self, data: Mapping[Hashable, Any], randomize: bool = True
    ) -> dict[Hashable, Any] | list[dict[Hashable, Any]]:
        """Online mode: one augmented dictionary (``randomize=False``: the last call's draws again).
        Expand mode: the list of :meth:`expand` (every variant a fresh draw)."""
        if self.mode == "expand":
            if not randomize:
                raise ValueError(
                    "MetaLungd: randomize=False replays online mode; in expand mode replay a "
                    "variant from its records (replay_record)"
                )
            return self.expand(data)
        d = self._prepare(data)
        if randomize:
            self.randomize(None)
        if not self._do_transform:
            return _stamp_keys(_binarise_keys(d, (self.mask_key,)), self.keys)
        if not _KEEP_MASK_VALUES.isdisjoint(
            self.chosen
        ):  # the tumour operations write a {0, 1} mask themselves
            d = _binarise_keys(d, (self.mask_key,))
        # SomeOf sees only the keys MetaLungd owns: other MetaTensors of the sample get no trace
        owned = {k: d[k] for k in self._owned if k in d}
        d.update(self._someof.apply(owned, randomize=randomize))
        return _stamp_keys(d, self.keys)

    def expand(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        """The input followed by its variants (see the class docstring), as one list."""
        return list(self.iter_expand(data))

    def iter_expand(self, data: Mapping[Hashable, Any]) -> Iterator[dict[Hashable, Any]]:
        """The variants of :meth:`expand`, the same ones in the same order, made one at a time.

        Only the input and the variant being made are held, so memory does not grow with
        ``copies`` (``metalung augment`` writes each variant to disk before the next one is made).
        The input is checked here, before the first variant (a mask of another shape raises now).
        """
        d = _binarise_keys(self._prepare(data), (self.mask_key,))
        return self._variants(d)

    def _variants(self, data: dict[Hashable, Any]) -> Iterator[dict[Hashable, Any]]:
        self.dropped = []
        if self.include_original:
            yield _stamp_keys(_copy(data), self.keys)
        for name in self.ops:
            for _ in range(1 if name == "mirror" else self.copies):
                variant = self.transforms[name](_copy(data))
                records = metalung_records(variant.get(self.image_key))
                if self.drop_unapplied and records and not records[-1].get("applied", False):
                    self.dropped.append(records[-1])
                    continue
                yield variant

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Undo the invertible operations of the last online call (mirror, image rotation),
        newest first, through ``SomeOf.inverse``; unchanged when none was applied."""
        d = dict(data)
        ref = next((d[k] for k in self._owned if isinstance(d.get(k), MetaTensor)), None)
        ops = getattr(ref, "applied_operations", None)
        if not ops:
            return d
        try:
            self._someof.check_transforms_match(ops[-1])
        except RuntimeError:  # the newest trace is not this transform's: nothing of ours to undo
            return d
        owned = {k: d[k] for k in self._owned if k in d}
        d.update(self._someof.inverse(owned))
        return d


def _stamp_keys(d: dict, keys) -> dict:
    """Every MetaTensor of ``keys`` gets a ``meta["metalung"]`` entry (see :func:`.array._stamp`)."""
    for key in keys:
        if key in d:
            _stamp(d[key])
    return d


def _copy(data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
    """Deep enough copy for a variant: tensors cloned (with their metadata), the rest deep-copied."""
    out = {}
    for k, v in data.items():
        if isinstance(v, MetaTensor):
            out[k] = v.clone()
            out[k].meta = copy.deepcopy(v.meta)
            out[k].applied_operations = copy.deepcopy(v.applied_operations)
        elif hasattr(v, "clone"):
            out[k] = v.clone()
        else:
            out[k] = copy.deepcopy(v)
    return out


MirrorLRD = MirrorLRDict = MirrorLRd
MetaLungD = MetaLungDict = MetaLungd
