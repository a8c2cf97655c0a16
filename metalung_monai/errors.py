"""Typed errors raised by metalung-monai.

Every error that is caused by bad input names the offending file (or dictionary key) and the
problem, so that a message such as ``scan/IM0003.dcm: not a CT image (Modality 'MR')`` tells the
user what to fix. All of them derive from :class:`MetaLungError`; input errors are also
:class:`ValueError` so that generic callers can catch them as such.
"""

from __future__ import annotations

import os

__all__ = [
    "MetaLungError",
    "InputError",
    "DicomError",
    "NoSeriesError",
    "SliceSizeError",
    "GeometryMismatchError",
    "MaskError",
    "UnsafePickleError",
    "DatalistError",
    "UnsupportedFormatError",
    "LesionTooSmallError",
]


class MetaLungError(Exception):
    """Base class of every error raised on purpose by metalung-monai."""


class InputError(MetaLungError, ValueError):
    """A file, folder or dictionary entry that cannot be used, with the reason.

    Args:
        source: the file, folder or key that is wrong (a path or a string).
        problem: what is wrong with it, in words a user can act on.
    """

    def __init__(self, source: str | os.PathLike, problem: str) -> None:
        self.source = os.fspath(source) if isinstance(source, os.PathLike) else str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")

    def __reduce__(self):  # keep the two-argument constructor picklable (multiprocessing)
        return (type(self), (self.source, self.problem))


class UnsupportedFormatError(InputError):
    """The file's format is not one that metalung-monai reads."""


class DicomError(InputError):
    """A DICOM file or series that is unreadable, not CT, or inconsistent."""


class NoSeriesError(DicomError):
    """A folder holds no DICOM series (or not the one asked for)."""


class SliceSizeError(DicomError):
    """The slices of one series do not all have the same size."""


class GeometryMismatchError(InputError):
    """A mask (or other companion image) whose grid does not match its image."""


class MaskError(InputError):
    """A mask that is not binary, holds NaN, or is otherwise unusable."""


class UnsafePickleError(InputError):
    """A pickle that tries to build an object outside the allow-list."""


class DatalistError(InputError):
    """A datalist JSON that does not follow the documented schema."""


class LesionTooSmallError(InputError):
    """A lesion that vanishes when resampled to a target's voxel size (smaller than a voxel):
    the insertion transforms record it as a skip (``too small``)."""
