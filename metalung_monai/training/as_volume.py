"""A 2D image is one axial slice: :class:`AsVolumed` makes it a volume of one slice.

Separate from :mod:`.workflow` because it imports MONAI at module level (a transform class must be
importable by name, e.g. by DataLoader workers that unpickle it), and the command line imports
:mod:`.workflow` without MONAI.
"""

from __future__ import annotations

from monai.transforms import InvertibleTransform, MapTransform

__all__ = ["AsVolumed"]


class AsVolumed(MapTransform, InvertibleTransform):
    """A 2D image ``(C, H, W)`` becomes a volume of one axial slice ``(C, H, W, 1)``; 3D is unchanged.

    Place it right after ``EnsureChannelFirstd``: the affine (4 x 4 for NIfTI, whatever the
    dimension) already describes the third axis, so ``Orientationd`` then orients the slice like
    any volume, and a 2D network runs on it slice by slice. Invertible: ``Invertd`` gives a 2D
    prediction back for a 2D input.

    Args:
        keys: keys of the images to convert.
        allow_missing_keys: skip keys that a sample does not have (``label``, ``lung``).
    """

    def __init__(self, keys, allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            added = img.ndim == 3
            if added:
                img = img.unsqueeze(-1)
            d[key] = img
            self.push_transform(d, key, extra_info={"added_axis": added})
        return d

    def inverse(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            info = self.get_most_recent_transform(d, key)
            if info["extra_info"]["added_axis"] and d[key].ndim == 4 and d[key].shape[-1] == 1:
                d[key] = d[key].squeeze(-1)
            self.pop_transform(d, key)
        return d
