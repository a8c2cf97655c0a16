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
from monai.transforms import InvertibleTransform, MapTransform, RandomizableTransform
from monai.utils import ensure_tuple, ensure_tuple_rep

from ...errors import InputError
from . import functional as F
from .array import (
    MirrorLR,
    RandIntegerNoise,
    RandMirrorLR,
    RandRelocateTumor,
    RandRotateImage,
    RandRotateTumor,
    RandTumorNoise,
    _stamp,
    binary_mask,
    metalung_records,
)

__all__ = [
    "METALUNG_OPS",
    "MirrorLRd",
    "RandMirrorLRd",
    "RandRotateImaged",
    "RandRelocateTumord",
    "RandRotateTumord",
    "RandIntegerNoised",
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

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        _check_grid(d, self.keys, type(self).__name__)
        _binarise_keys(d, self.mask_keys)
        for key in self.key_iterator(d):
            d[key] = self.mirror(d[key])
        return d


class RandMirrorLRd(_SeedsInner, MapTransform, _InvertsPerKey):
    """With probability ``prob``, mirror all keys along the patient's left-right axis (same draw).

    ``mask_keys``: as :class:`MirrorLRd`.
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

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        _check_grid(d, self.keys, type(self).__name__)
        _binarise_keys(d, self.mask_keys)
        self.randomize(None)
        self.mirror._do_transform = self._do_transform
        for key in self.key_iterator(d):
            d[key] = self.mirror(d[key], randomize=False)
        return d


# --------------------------------------------------------------------------- 3. rotate image
class RandRotateImaged(_SeedsInner, MapTransform, _InvertsPerKey):
    """Dictionary twin of :class:`.array.RandRotateImage`: one random angle for every key.

    Args:
        keys: keys to rotate (image first, then masks / label maps).
        prob, angle_range, random_sign, axcodes: as :class:`.array.RandRotateImage`.
        fill: padding per key; default air (-1024 HU) for the first key and 0 for the others.
        mask_keys: keys holding binary masks: they come out ``{0, 1}`` in their own dtype (the
            other keys keep their values, e.g. lung labels 1/2). Every key must have the spatial
            shape of the first.
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

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        _check_grid(d, self.keys, type(self).__name__)
        _binarise_keys(d, self.mask_keys)
        self.randomize(None)
        if self._do_transform:
            self.rotator.randomize()
        self.rotator._do_transform = self._do_transform
        for key, fill in self.key_iterator(d, self.fill):
            d[key] = self.rotator(d[key], randomize=False, fill=fill)
        return d


# --------------------------------------------------------------------------- tumour operations
class _PairOpd(_SeedsInner, MapTransform):
    """``(image_key, mask_key)`` dictionary wrapper of a tumour operation."""

    def __init__(
        self, keys: KeysCollection, lung_key: Hashable | None, op, allow_missing_keys: bool
    ) -> None:
        self.image_key, self.mask_key = _pair(keys, type(self).__name__)
        MapTransform.__init__(self, (self.image_key, self.mask_key), allow_missing_keys)
        RandomizableTransform.__init__(self, op.prob)
        self.lung_key = lung_key
        self.op = self._inner = op
        self.op.prob = 1.0

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        _check_grid(d, (self.image_key, self.mask_key, self.lung_key), type(self).__name__)
        self.randomize(None)
        if not self._do_transform:
            return _stamp_keys(_binarise_keys(d, (self.mask_key,)), (self.image_key, self.mask_key))
        if self.allow_missing_keys and (self.image_key not in d or self.mask_key not in d):
            return d
        img = _require(d, self.image_key, type(self).__name__)
        mask = _require(d, self.mask_key, type(self).__name__)
        kwargs = {}
        if self.lung_key is not None and self.lung_key in d:
            kwargs["lungs"] = d[self.lung_key]
        d[self.image_key], d[self.mask_key] = self.op(img, mask, **kwargs)
        return d


class RandRelocateTumord(_PairOpd):
    """Dictionary twin of :class:`.array.RandRelocateTumor` (keys = ``(image_key, mask_key)``).

    The mask (and ``lung_key``) must have the image's spatial shape; the mask comes out ``{0, 1}``
    in its own dtype. The same holds for :class:`RandRotateTumord` and :class:`RandTumorNoised`.
    """

    backend = RandRelocateTumor.backend

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
    ) -> None:
        op = RandRelocateTumor(prob, margin_mm, ring, rotate_180, opposite_first, axcodes, spacing)
        super().__init__(keys, lung_key, op, allow_missing_keys)


class RandRotateTumord(_PairOpd):
    """Dictionary twin of :class:`.array.RandRotateTumor` (keys = ``(image_key, mask_key)``)."""

    backend = RandRotateTumor.backend

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


class RandTumorNoised(_PairOpd):
    """Dictionary twin of :class:`.array.RandTumorNoise` (keys = ``(image_key, mask_key)``)."""

    backend = RandTumorNoise.backend

    def __init__(
        self,
        keys: KeysCollection = ("image", "mask"),
        prob: float = 1.0,
        noise_range: tuple[int, int] = (0, 20),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, None, RandTumorNoise(prob, noise_range), allow_missing_keys)


class RandIntegerNoised(_SeedsInner, MapTransform):
    """Dictionary twin of :class:`.array.RandIntegerNoise`: integer HU noise on the image keys.

    List only images in ``keys`` (never a mask). Each key gets its own noise draw.
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

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return _stamp_keys(d, self.keys)
        for key in self.key_iterator(d):
            d[key] = self.noise(d[key])
        return d


# --------------------------------------------------------------------------- MetaLungd
class MetaLungd(RandomizableTransform, MapTransform, InvertibleTransform):
    """MetaLung: the six HU-preserving augmentations as one MONAI transform.

    Two modes:

    * ``"online"`` (default): with probability ``prob`` apply ``num_ops`` operations drawn
      without replacement from ``ops`` (weights ``weights``), in that random order. Returns one
      dictionary. Use inside a training ``Compose``.
    * ``"expand"``: return a list: the input (if ``include_original``) followed by ``copies``
      variants of each operation in ``ops`` (mirror, being deterministic, once). Variants whose
      operation could not be applied (relocation with no free space, an empty tumour mask) are
      dropped when ``drop_unapplied``. MONAI's ``DataLoader`` flattens such lists; this is the
      thesis' offline expansion (708 -> 4,865 slices). :meth:`iter_expand` yields the same
      variants one at a time (memory for one variant, however large ``copies``).

    Inputs: the mask (and ``lung_key``) must have the image's spatial shape, else an
    :class:`~metalung_monai.errors.InputError` names the key. Mask convention, the same for every
    operation and both modes: the output mask is ``{0, 1}`` in the input mask's dtype (nonzero =
    tumour; ``{0, 255}`` or ``{0, 2}`` in, ``{0, 1}`` out; see :func:`.array.binary_mask`). Lung
    labels keep their values (1 right, 2 left).

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
        drop_unapplied: expand mode drops variants whose operation was not applied.
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

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> MetaLungd:
        super().set_random_state(seed, state)
        for t in self.transforms.values():
            if isinstance(t, RandomizableTransform):
                t.set_random_state(seed=int(self.R.randint(0, 2**32 - 1, dtype=np.int64)))
        return self

    def _choose(self) -> list[str]:
        if len(self.ops) == 1:
            return list(self.ops)
        k = int(self.R.randint(self.num_ops[0], self.num_ops[1] + 1))
        idx = self.R.choice(len(self.ops), size=k, replace=False, p=self.weights)
        return [self.ops[i] for i in idx]

    def _prepare(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Checked input: every key on the image's grid."""
        d = dict(data)
        _check_grid(d, (self.image_key, self.mask_key, self.lung_key), "MetaLungd")
        return d

    def __call__(
        self, data: Mapping[Hashable, Any]
    ) -> dict[Hashable, Any] | list[dict[Hashable, Any]]:
        if self.mode == "expand":
            return self.expand(data)
        d = self._prepare(data)
        self.randomize(None)
        if not self._do_transform:
            return _stamp_keys(_binarise_keys(d, (self.mask_key,)), self.keys)
        names = self._choose()
        if not _KEEP_MASK_VALUES.isdisjoint(
            names
        ):  # the tumour operations write a {0, 1} mask themselves
            d = _binarise_keys(d, (self.mask_key,))
        for name in names:
            d = self.transforms[name](d)
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
        if self.include_original:
            yield _stamp_keys(_copy(data), self.keys)
        for name in self.ops:
            for _ in range(1 if name == "mirror" else self.copies):
                variant = self.transforms[name](_copy(data))
                records = metalung_records(variant.get(self.image_key))
                if self.drop_unapplied and records and not records[-1].get("applied", False):
                    continue
                yield variant

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Undo the invertible operations this transform applied (mirror, image rotation), newest first."""
        d = dict(data)
        by_id = {}
        for t in self.transforms.values():
            inner = getattr(t, "mirror", None) or getattr(t, "rotator", None)
            if inner is not None:
                by_id[id(inner)] = t
        while True:
            img = d.get(self.image_key)
            ops = getattr(img, "applied_operations", None)
            if not ops or ops[-1].get("id") not in by_id:
                return d
            d = by_id[ops[-1]["id"]].inverse(d)


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
