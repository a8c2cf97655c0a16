"""MONAI transforms of metalung-monai (array transforms and their dictionary ``...d`` twins).

* :mod:`.intensity`: HU windowing (:class:`HUWindow`) and CLAHE (:class:`CLAHE`) for display and
  network input (they do not preserve HU: apply them after every HU-based step).
"""

from .intensity import CLAHE, WINDOW_PRESETS, CLAHEd, HUWindow, HUWindowd

__all__ = ["WINDOW_PRESETS", "HUWindow", "HUWindowd", "CLAHE", "CLAHEd"]
