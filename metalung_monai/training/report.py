"""Thesis-style evaluation of whole volumes during a MONAI evaluator run.

:class:`SegmentationReport` is an ignite handler for a ``SupervisedEvaluator`` that runs a network
on whole test volumes (oriented ``PLS``, see :mod:`.workflow`). For every volume it scores

* every **tumour slice** as an image (the thesis' protocol: DICE, IoU, Precision, Recall per
  image, pixel-wise on the whole slice, then averaged over images), with the patient's Lung-RADS
  class (Table 8);
* the **whole volume** (per-patient 3D DICE, false-positive components, false positives on
  calcified nodules: predicted components holding a voxel above 200 HU inside the lungs).

When the evaluator completes it writes ``slices.csv/.md``, ``volumes.csv/.md``,
``per_class.csv/.md``, ``summary.json`` and ``predictions.npz`` (the tumour slices with their HU,
truth and prediction, for figures; see :func:`load_predictions`) to ``output_dir``. Scoring conventions (empty masks):
``metalung_monai.evaluation.metrics``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..utils.atomic import write_json_atomic
from ..utils.paths import safe_name

__all__ = ["SegmentationReport", "volume_rows", "load_predictions"]


def load_predictions(path) -> dict[str, dict[int, dict[str, np.ndarray]]]:
    """``{case_id: {slice_index: {"pred", "truth", "hu", "lungs"}}}`` from a ``predictions.npz``.

    Slices are canonical ``(y, x)`` (radiological display), on the evaluated grid (cropped to the
    lungs when the evaluation was); ``lungs`` is None when the evaluation had no lung mask.
    """
    out: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    with np.load(path) as z:
        cases = {k[:-3] for k in z.files if k.endswith("__z")}
        # member names are file-name-safe versions of the case ids; the ids themselves are listed
        names = dict(z[_CASE_IDS].tolist()) if _CASE_IDS in z.files else {}
        for cid in cases:
            zs = z[f"{cid}__z"]
            h, w, n = (int(v) for v in z[f"{cid}__shape"])

            def planes(key, packed=True, n=n, h=h, w=w):
                if key not in z.files:
                    return [None] * n
                a = z[key]
                return np.unpackbits(a)[: n * h * w].reshape(n, h, w).astype(bool) if packed else a

            pred, truth = planes(f"{cid}__pred"), planes(f"{cid}__truth")
            hu, lungs = planes(f"{cid}__hu", packed=False), planes(f"{cid}__lung", packed=False)
            out[names.get(cid, cid)] = {
                int(zi): {"pred": pred[i], "truth": truth[i], "hu": hu[i], "lungs": lungs[i]}
                for i, zi in enumerate(zs)
            }
    return out


#: ``predictions.npz`` member listing ``(member name, case id)`` pairs (a string array: no pickle)
_CASE_IDS = "__case_ids__"


def _np(x) -> np.ndarray:
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _spacing(t) -> tuple[float, ...]:
    aff = np.asarray(t.affine, dtype=float) if hasattr(t, "affine") else np.eye(4)
    return tuple(float(v) for v in np.linalg.norm(aff[:3, :3], axis=0))


def volume_rows(
    pred: np.ndarray,
    truth: np.ndarray,
    hu: np.ndarray,
    lungs: np.ndarray | None,
    meta: dict,
    spacing_pls: tuple[float, float, float] | None = None,
) -> tuple[dict, list[dict]]:
    """Score one volume oriented ``PLS`` (axes posterior, left, superior): the volume and its tumour slices.

    Args:
        pred, truth: boolean ``(P, L, S)`` masks.
        hu: HU ``(P, L, S)``.
        lungs: lung labels ``(P, L, S)`` or None (then computed from ``hu`` by HU thresholds,
            which needs ``spacing_pls``).
        meta: ``patient_id``, ``case_id``, ``lung_rads`` copied into every row.
        spacing_pls: voxel size in mm along the three axes.

    Returns:
        ``(volume_row, slice_rows)``.
    """
    from ..anatomy import lung_mask
    from ..evaluation import image_scores

    if lungs is None and spacing_pls is not None:
        canon = np.transpose(hu, (2, 0, 1))  # (S, P, L) = canonical (z, y, x)
        sp = (spacing_pls[2], spacing_pls[0], spacing_pls[1])
        lungs = np.transpose(lung_mask(canon, sp, progress=False), (1, 2, 0))
    base = {k: meta.get(k) for k in ("patient_id", "case_id", "lung_rads")}
    vol = dict(base, level="volume", slice_index=None)
    vol.update(
        image_scores(
            np.transpose(pred, (2, 0, 1)),
            np.transpose(truth, (2, 0, 1)),
            np.transpose(hu, (2, 0, 1)),
            None if lungs is None else np.transpose(lungs, (2, 0, 1)),
        )
    )
    rows = []
    for z in np.flatnonzero(truth.any(axis=(0, 1))):
        r = dict(base, level="slice", slice_index=int(z))
        r.update(
            image_scores(
                pred[:, :, z],
                truth[:, :, z],
                hu[:, :, z],
                None if lungs is None else lungs[:, :, z],
            )
        )
        rows.append(r)
    return vol, rows


class SegmentationReport:
    """Ignite handler: score each evaluated volume, write the tables when the evaluator completes.

    Args:
        output_dir: where the tables go.
        compute_lungs: compute lung masks by HU thresholds for volumes without a ``lung`` key (so
            calcified false positives are counted inside the lungs only); otherwise any voxel
            above 200 HU counts.
    """

    def __init__(
        self, output_dir: str, compute_lungs: bool = True, save_predictions: bool = True
    ) -> None:
        self.output_dir = Path(output_dir)
        self.compute_lungs = compute_lungs
        self.save_predictions = save_predictions
        self.volumes: list[dict] = []
        self.slices: list[dict] = []
        self.predictions: dict[str, np.ndarray] = {}
        self.case_ids: dict[str, str] = {}

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine) -> None:
        self.volumes, self.slices, self.predictions, self.case_ids = [], [], {}, {}

    def _collect(self, engine) -> None:
        outputs = engine.state.output
        batch = engine.state.batch
        if isinstance(outputs, dict):
            outputs, batch = [outputs], [batch]
        for out, item in zip(outputs, batch):
            if "label" not in out or out["label"] is None:
                continue
            pred = _np(out["pred"])
            pred = (pred[1] if pred.shape[0] == 2 else pred[0]) > 0
            truth = _np(out["label"])
            truth = (truth[1] if truth.shape[0] == 2 else truth[0]) > 0
            hu = _np(item["hu"])[0]
            lungs = _np(item["lung"])[0].astype(np.uint8) if "lung" in item else None
            meta = {k: item.get(k) for k in ("patient_id", "case_id", "lung_rads")}
            sp = _spacing(item["hu"]) if self.compute_lungs else None
            vol, rows = volume_rows(pred, truth, hu, lungs, meta, sp)
            self.volumes.append(vol)
            self.slices.extend(rows)
            if self.save_predictions:  # the tumour slices, for figures (canonical (y, x))
                zs = np.flatnonzero(truth.any(axis=(0, 1)))
                # a case id is data: it names a member of the .npz (a zip archive, which anyone may
                # unpack), so it becomes a safe file name; the id itself is listed beside it
                cid = safe_name(str(meta.get("case_id")))
                self.case_ids[cid] = str(meta.get("case_id"))
                p = self.predictions
                p[f"{cid}__z"] = zs
                p[f"{cid}__shape"] = np.array(pred.shape[:2] + (len(zs),))
                p[f"{cid}__pred"] = np.packbits(np.moveaxis(pred[:, :, zs], -1, 0))
                p[f"{cid}__truth"] = np.packbits(np.moveaxis(truth[:, :, zs], -1, 0))
                p[f"{cid}__hu"] = np.moveaxis(hu[:, :, zs], -1, 0).round().astype(np.int16)
                if lungs is not None:
                    p[f"{cid}__lung"] = np.moveaxis(lungs[:, :, zs], -1, 0).astype(np.uint8)

    def _write(self, engine) -> None:
        from ..evaluation import per_class, results_frame, summarize, write_table

        self.output_dir.mkdir(parents=True, exist_ok=True)
        slices = results_frame(self.slices)
        volumes = results_frame(self.volumes)
        write_table(slices, self.output_dir / "slices")
        write_table(volumes, self.output_dir / "volumes")
        summary = {
            "slices": summarize(slices) if len(slices) else {},
            "volumes": summarize(volumes) if len(volumes) else {},
        }
        if len(slices):
            pc = per_class(slices)
            write_table(pc, self.output_dir / "per_class")
            summary["per_class_dice"] = {
                str(r["lung_rads"]): _clean(r.get("dice")) for _, r in pc.iterrows()
            }
        summary["patient_dice_3d"] = {str(r["patient_id"]): _clean(r["dice"]) for r in self.volumes}
        if self.save_predictions and self.predictions:
            from ..utils.atomic import atomic_path

            ids = np.array(sorted(self.case_ids.items()), dtype=str).reshape(-1, 2)
            with atomic_path(self.output_dir / "predictions.npz") as tmp:
                np.savez_compressed(tmp, **self.predictions, **{_CASE_IDS: ids})
        write_json_atomic(_clean(summary), self.output_dir / "summary.json")


def _clean(v):
    """JSON-safe copy: NaN and infinity -> None, numpy scalars -> Python numbers, recursively."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, (np.integer, np.bool_)):
        return v.item()
    return v
