"""The resumable cohort driver: many synthetic patients, their datalist, manifest and overview.

A patient is fully determined by ``(seed, index)`` and its Lung-RADS class (:mod:`.params`), so a
cohort is byte-identical whatever the number of workers or the order of generation. Each patient
is drawn (:func:`~.params.sample_patient_params`), rendered (:func:`~.generate.generate_patient`)
and written (:func:`~.write.write_patient`) by one job of
:func:`metalung_monai.utils.runner.run_pool`; the manifest, the configuration fingerprint and
the clean-up of a killed run are the shared runner's too (:mod:`metalung_monai.utils.runner`).

Output layout of :func:`generate_cohort` (paths relative to ``out_dir``)::

    images/<pid>.nii.gz            int16 HU, canonical LPS grid, padding already mapped to -1024
    masks/<pid>.nii.gz             uint8 tumour mask {0, 1}
    truth/<pid>_anatomy.nii.gz     uint8 anatomy labels (table in metalung_monai.phantom.body)
    dicom/<pid>/                   with dicom=True: the same image as a vendor-like DICOM series
    datalist.json                  training / test sections (patient-level split, 5 folds)
    cohort.csv                     one row per patient
    overview.png                   slices per class + HU histograms
    .phantom-manifest.json         generation parameters and finished patients (resume)

Hardening (issue 9): every request is checked before anything is written (the options name
themselves in the errors of ``metalung phantom``), including the free disk space for the
estimated output; patient ids become file names only through
:func:`metalung_monai.utils.paths.safe_name` / :func:`~metalung_monai.utils.paths.child_path`;
``overwrite`` deletes only the files this generator writes (listed by its manifest: the
recorded patients' files and the names derived from its parameters), never anything else in the
folder; partial files left by a killed run are removed on the next run.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.datalist import assign_folds, patient_split, write_datalist
from ..utils.paths import check_free_space, safe_name
from ..utils.runner import Manifest, describe_diff, fingerprint, remove_stale_partials, run_pool
from ..utils.runner import progress as progress_bar
from .figures import OVERVIEW_CACHE, cohort_overview
from .generate import generate_patient
from .params import (
    MAX_PIXEL_MM,
    PatientParams,
    _check_thickness_spec,
    _thickness_values,
    cohort_classes,
    min_size_for_fov,
    sample_patient_params,
)
from .write import DICOM_NAME, _refuse_foreign_dicom_files, write_cohort_csv, write_patient

__all__ = [
    "GENERATOR_VERSION",
    "MANIFEST_NAME",
    "MAX_SIZE",
    "MAX_PATIENTS",
    "MAX_WORKERS",
    "generate_cohort",
    "estimate_patient_bytes",
]

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # 2: gastric wall under the diaphragm (gas >= 9 mm below the lung base)
MANIFEST_NAME = ".phantom-manifest.json"

#: largest axial matrix of a cohort
MAX_SIZE = 1024
#: most patients in one cohort (the manifest, rewritten after every patient, holds them all)
MAX_PATIENTS = 10_000
#: most worker processes
MAX_WORKERS = 256
#: mean scan length (mm): lung height 200-265 mm plus 15-35 mm below and 12-30 mm above
_MEAN_SCAN_MM = 285.0
#: bytes per voxel of the written files (gzip NIfTI; measured on 64-512 px cohorts: image 1.0-1.1,
#: truth 0.05-0.07, lung mask 0.02, tumour mask < 0.01) and of a DICOM series (16 bit + headers)
_BYTES_PER_VOXEL = {"image": 1.1, "mask": 0.01, "truth": 0.07, "lung_mask": 0.02, "dicom": 2.0}
_OUTPUT_DIRS = ("images", "masks", "truth", "lungs", "dicom")


def estimate_patient_bytes(
    size: int, slice_thickness=(2.5, 5.0), dicom: bool = False, lung_masks: bool = True
) -> float:
    """Estimated bytes one patient adds to a cohort folder (mean over the possible thicknesses).

    About 1.2 bytes per voxel of gzip NIfTI (the image's noise does not compress) plus 2 per voxel
    with DICOM, for a scan of about 285 mm: 6.4 MB at 256 x 256 and 2.5-5 mm, 25 MB at 512.
    """
    slices = float(
        np.mean([math.ceil(_MEAN_SCAN_MM / t) for t in _thickness_values(slice_thickness)])
    )
    voxels = float(size) * float(size) * slices
    per_voxel = _BYTES_PER_VOXEL["image"] + _BYTES_PER_VOXEL["mask"] + _BYTES_PER_VOXEL["truth"]
    if lung_masks:
        per_voxel += _BYTES_PER_VOXEL["lung_mask"]
    if dicom:
        per_voxel += _BYTES_PER_VOXEL["dicom"]
    overview = 1.5 * float(size) * float(size)
    manifest = 2 * 20_000.0  # its summary, twice while the manifest is rewritten
    return voxels * per_voxel + overview + manifest + (slices * 2_000.0 if dicom else 0.0)


def _int_arg(value, name: str) -> int:
    """``value`` as an int, refusing bools, non-integral and non-finite numbers."""
    if isinstance(value, bool):
        raise InputError(name, f"must be an integer, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if (
        isinstance(value, (float, np.floating))
        and math.isfinite(value)
        and float(value).is_integer()
    ):
        return int(value)
    raise InputError(name, f"must be an integer, got {value!r}")


def _check_cohort_args(
    n_patients, seed, size, slice_thickness, n_test_per_class, workers, fov_range, n_folds
) -> dict:
    """Check every argument of :func:`generate_cohort` that could fail later; normalised values."""
    n = _int_arg(n_patients, "n_patients")
    if n < 1:
        raise InputError("n_patients", f"must be >= 1, got {n}")
    if n > MAX_PATIENTS:
        raise InputError(
            "n_patients",
            f"at most {MAX_PATIENTS} patients per cohort, got {n}; generate several "
            "cohorts with different seeds",
        )
    seed_ = _int_arg(seed, "seed")
    if seed_ < 0:
        raise InputError("seed", f"must be >= 0, got {seed_}")
    try:
        lo_f, hi_f = (float(v) for v in fov_range)
    except (TypeError, ValueError) as e:
        raise InputError("fov_range", f"must be two numbers (mm), got {fov_range!r}") from e
    if not (200.0 <= lo_f <= hi_f <= 500.0):
        raise InputError("fov_range", f"field of view must lie in 200..500 mm, got {fov_range}")
    size_ = _int_arg(size, "size")
    smallest = min_size_for_fov(hi_f)
    if not (smallest <= size_ <= MAX_SIZE):
        raise InputError(
            "size",
            f"must be {smallest}..{MAX_SIZE}, got {size_}: below {smallest} pixels across a "
            f"field of view of up to {hi_f:g} mm the pixels reach {MAX_PIXEL_MM} mm and the "
            "smallest Lung-RADS classes (LR2 nodules of 4-6 mm) cannot be drawn",
        )
    thickness = _check_thickness_spec(slice_thickness)
    k = _int_arg(n_test_per_class, "n_test_per_class")
    if k < 0:
        raise InputError("n_test_per_class", f"must be >= 0, got {k}")
    w = _int_arg(workers, "workers")
    if not (1 <= w <= MAX_WORKERS):
        raise InputError("workers", f"must be >= 1 and at most {MAX_WORKERS}, got {w}")
    folds = _int_arg(n_folds, "n_folds")
    if folds < 1:
        raise InputError("n_folds", f"must be >= 1, got {folds}")
    return {
        "n_patients": n,
        "seed": seed_,
        "size": size_,
        "thickness": thickness,
        "n_test_per_class": k,
        "workers": w,
        "fov_range": (lo_f, hi_f),
        "n_folds": folds,
    }


def _params_hash(d: dict) -> str:
    return fingerprint(d, algorithm="sha256")


def _worker(params_dict: dict, out_dir: str, dicom: bool, lung_masks: bool = True) -> dict:
    params = PatientParams.from_dict(params_dict)
    t = time.perf_counter()
    vol = generate_patient(params)
    summary = write_patient(vol, out_dir, dicom=dicom, lung_masks=lung_masks)
    summary["time_s"] = round(time.perf_counter() - t, 3)
    return summary


def _inside(out: Path, rel) -> Path | None:
    """``out / rel`` when ``rel`` (from a manifest) is a relative path that stays inside ``out``."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel):
        return None
    p = out / rel
    base = out.resolve()
    return p if base in p.resolve().parents else None


def _pid_name(pid) -> str:
    return safe_name(pid, fallback="patient")


def _default_pid(index: int) -> str:
    return f"P{index + 1:04d}"  # as sample_patient_params names patient ``index``


def _summary_files(entry) -> tuple[dict, dict]:
    """``(summary, files)`` of a manifest entry; empty dicts for anything malformed."""
    summary = entry.get("summary") if isinstance(entry, dict) else None
    summary = summary if isinstance(summary, dict) else {}
    files = summary.get("files")
    return summary, files if isinstance(files, dict) else {}


def _complete(
    out: Path, entry: dict | None, phash: str, dicom: bool, lung_masks: bool = True
) -> bool:
    if not isinstance(entry, dict) or entry.get("hash") != phash:
        return False
    summary, files = _summary_files(entry)
    for key in ("image", "mask", "truth") + (("lung_mask",) if lung_masks else ()):
        p = _inside(out, files.get(key))
        if p is None or not p.is_file():
            return False
    if dicom:
        d = out / "dicom" / _pid_name(summary.get("patient_id"))
        if not d.is_dir() or not any(d.glob("*.dcm")):
            return False
    return True


def _owned_files(out: Path, manifest: dict) -> list[str]:
    """Files (relative to ``out``) that the phantom run of ``manifest`` wrote or may have written.

    The recorded patients' files, plus the names derived from the manifest's parameters (a
    patient being written when a run was killed is not recorded yet): image, mask, truth, lung
    mask, overview slice and the ``IM#####.dcm`` files of ``dicom/<pid>/``; then the datalist,
    ``cohort.csv``, ``overview.png`` and the manifest itself. Nothing else in ``out`` is ever listed.
    """
    rels: list[str] = []
    patients = manifest.get("patients") if isinstance(manifest.get("patients"), dict) else {}
    params = manifest.get("params") if isinstance(manifest.get("params"), dict) else {}
    pids = [str(pid) for pid in patients]
    try:
        n = min(int(params.get("n_patients", 0)), MAX_PATIENTS)
    except (TypeError, ValueError, OverflowError):
        n = 0
    pids += [_default_pid(i) for i in range(max(n, 0))]
    for entry in patients.values():
        _, files = _summary_files(entry)
        rels += [rel for key, rel in files.items() if key != "dicom" and isinstance(rel, str)]
    for name in dict.fromkeys(_pid_name(p) for p in pids):
        rels += [
            f"images/{name}.nii.gz",
            f"masks/{name}.nii.gz",
            f"truth/{name}_anatomy.nii.gz",
            f"lungs/{name}.nii.gz",
            f"{OVERVIEW_CACHE}/{name}_overview.npz",
        ]
        d = out / "dicom" / name
        if d.is_dir():
            rels += [f"dicom/{name}/{p.name}" for p in d.iterdir() if DICOM_NAME.fullmatch(p.name)]
    rels += ["datalist.json", "cohort.csv", "overview.png", MANIFEST_NAME]
    return list(dict.fromkeys(rels))


def _owned_bytes(out: Path, rels: list[str]) -> int:
    total = 0
    for rel in rels:
        p = _inside(out, rel)
        if p is not None and p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def _holds_files(p: Path) -> bool:
    if p.is_dir():
        return any(p.iterdir())
    return p.exists()


def generate_cohort(
    out_dir: str | os.PathLike,
    n_patients: int = 40,
    seed: int = 0,
    size: int = 512,
    slice_thickness=(2.5, 5.0),
    n_test_per_class: int = 4,
    workers: int = 1,
    dicom: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    fov_range: tuple[float, float] = (330.0, 380.0),
    n_folds: int = 5,
    figure: bool = True,
    lung_masks: bool = True,
) -> Path:
    """Generate (or complete) a synthetic cohort and return the path of its ``datalist.json``.

    Composition: :func:`cohort_classes` (40 patients: 4 healthy LR1 + 9 per class LR2..LR4B);
    :func:`metalung_monai.io.datalist.patient_split` holds out ``n_test_per_class`` patients per
    class LR2..LR4B (the thesis held out 4 per class); training patients get ``n_folds`` folds.

    Resumable: patients already written with the same parameters (manifest
    ``.phantom-manifest.json``) are skipped; a folder generated with other parameters raises
    :class:`InputError` unless ``overwrite``. Every file is written atomically; the datalist,
    ``cohort.csv`` and ``overview.png`` last. Partial files of a killed run are removed.

    Every argument is checked, and the output's size (:func:`estimate_patient_bytes`) compared
    with the free disk space, before anything is written. Patients are planned and generated one
    at a time (memory does not grow with ``n_patients``).

    Args:
        out_dir: output folder (created).
        n_patients: number of patients (1..:data:`MAX_PATIENTS`).
        seed: cohort seed (>= 0; patient ``i`` is seeded by ``(seed, i)`` only).
        size: axial matrix size (:func:`min_size_for_fov` of the largest field of view, 127 for
            380 mm, up to :data:`MAX_SIZE`): smaller matrices cannot draw LR2 nodules.
        slice_thickness: see :func:`sample_patient_params`.
        n_test_per_class: held-out patients per class LR2..LR4B (>= 0; a class keeps at least
            one patient in training).
        workers: processes (``ProcessPoolExecutor`` when > 1); results do not depend on it.
        dicom: also write each image as a DICOM series under ``dicom/<pid>/``.
        progress: tqdm progress bar (only on a terminal).
        overwrite: replace a cohort generated with other parameters. Only the files that
            cohort's manifest lists (and the names its parameters give) are deleted; other files
            in ``out_dir`` are kept. A folder without a manifest is never cleared.
        fov_range: reconstruction field-of-view range (mm).
        n_folds: cross-validation folds of the training patients.
        figure: write ``overview.png``.
        lung_masks: also write HU-threshold lung masks (``lungs/``, datalist key ``lung_mask``).

    Returns:
        Path of ``datalist.json``.

    Raises:
        InputError: bad arguments (the source names the argument: ``n_patients``, ``size``, ...),
            not enough free disk space (``n_patients``), ``out_dir`` is a file (``out_dir``), or
            ``out_dir`` holds a different cohort (without ``overwrite``) or files without a
            phantom manifest.
    """
    out = Path(out_dir)
    a = _check_cohort_args(
        n_patients, seed, size, slice_thickness, n_test_per_class, workers, fov_range, n_folds
    )
    n_patients, seed, size, fov_range = a["n_patients"], a["seed"], a["size"], a["fov_range"]
    if out.exists() and not out.is_dir():
        raise InputError("out_dir", f"{out} exists and is not a folder")
    classes = cohort_classes(n_patients, seed)
    gen_params = {
        "generator": "metalung-monai phantom",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "n_patients": n_patients,
        "size": size,
        "slice_thickness": list(a["thickness"]),
        "fov_range": [float(v) for v in fov_range],
    }
    chash = _params_hash(gen_params)
    store = Manifest(out, MANIFEST_NAME, what="phantom")
    manifest = store.read(required=("patients",)) if out.is_dir() else None
    if manifest is not None:
        manifest.setdefault("patients", {})
    replaced = None
    if manifest is not None and manifest.get("params_hash") != chash:
        if not overwrite:
            raise InputError(
                out,
                "holds a phantom cohort generated with other parameters "
                f"({describe_diff(manifest.get('params', {}), gen_params)}); use --overwrite to replace it",
            )
        replaced, manifest = manifest, None
    if manifest is None and replaced is None and out.is_dir():
        stale = [n for n in (*_OUTPUT_DIRS, "datalist.json") if _holds_files(out / n)]
        if stale:
            raise InputError(
                out,
                f"holds {', '.join(stale)} but no phantom manifest: phantom did not write them "
                "(or its manifest is gone) and --overwrite deletes only what a manifest lists; "
                "use another folder or move them",
            )

    def plan(i: int) -> PatientParams:
        return sample_patient_params(
            seed, i, classes[i], size=size, slice_thickness=slice_thickness, fov_range=fov_range
        )

    def patient_hash(prm: PatientParams) -> str:
        return _params_hash({"cohort": chash, "patient": prm.to_dict()})

    # plan: indices still to generate (parameters are drawn again when generated: flat memory)
    todo: list[int] = []
    for i in range(n_patients):
        entry = manifest["patients"].get(_default_pid(i)) if manifest is not None else None
        if entry is not None and _complete(out, entry, patient_hash(plan(i)), dicom, lung_masks):
            continue
        todo.append(i)
    if dicom and out.is_dir():
        for i in todo:
            _refuse_foreign_dicom_files(out / "dicom" / _pid_name(_default_pid(i)))
    owned = _owned_files(out, replaced) if replaced is not None else []
    per_patient = estimate_patient_bytes(size, slice_thickness, dicom, lung_masks)
    check_free_space(
        out,
        len(todo) * per_patient - _owned_bytes(out, owned),
        f"{len(todo)} patients of {size} x {size} pixels",
        option="n_patients",
    )

    # from here on files are written
    if replaced is not None:
        n_removed = store.remove_owned(owned)
        log.info("%s: removed %d files of the previous cohort", out, n_removed)
    out.mkdir(parents=True, exist_ok=True)
    if remove_stale_partials(out, ("", *_OUTPUT_DIRS, OVERVIEW_CACHE)):
        log.info("%s: removed partial files of an interrupted run", out)
    if manifest is None:
        manifest = {"params": gen_params, "params_hash": chash, "patients": {}}
    manifest["params"] = gen_params
    manifest["params_hash"] = chash
    store.write(manifest)  # a killed run resumes even before its first patient
    t0 = time.perf_counter()
    generated: list[str] = []

    def record(prm, summary):
        manifest["patients"][prm.patient_id] = {"hash": patient_hash(prm), "summary": summary}
        store.write(manifest)
        generated.append(prm.patient_id)

    def jobs():  # parameters are drawn when a patient is submitted, not all held at once
        for i in todo:
            prm = plan(i)
            yield prm, (prm.to_dict(), str(out), dicom, lung_masks)

    bar = progress_bar(
        total=len(todo),
        desc="phantom patients",
        enabled=progress and bool(todo),
        leave=False,
        terminal_only=True,
    )

    def finished(prm: PatientParams, summary: dict) -> None:
        record(prm, summary)  # finished patients stay in the manifest whatever happens next
        bar.update(1)

    try:
        run_pool(_worker, jobs(), min(a["workers"], len(todo)), on_result=finished)
    finally:
        bar.close()
    gen_time = time.perf_counter() - t0

    summaries = [manifest["patients"][_default_pid(i)]["summary"] for i in range(n_patients)]
    patient_classes = {s["patient_id"]: s["lung_rads"] for s in summaries}
    train_ids, test_ids = patient_split(
        patient_classes, n_test_per_class=a["n_test_per_class"], seed=seed
    )
    folds = assign_folds(train_ids, n_folds=a["n_folds"], seed=seed)
    test_set = set(test_ids)
    dl = {
        "name": "metalung-phantom",
        "description": (
            f"synthetic chest CT cohort (metalung-monai phantom v{GENERATOR_VERSION}, seed {seed}, "
            f"{n_patients} patients, {size}x{size})"
        ),
        "version": 1,
        "modality": "CT",
        "hu_convention": "int16 HU, air -1024 after padding is mapped, water 0",
        "labels": {"0": "background", "1": "tumour"},
        "training": [],
        "test": [],
    }
    for s in summaries:
        pid = s["patient_id"]
        entry = {
            "image": s["files"]["image"],
            "mask": s["files"]["mask"],
            "patient_id": pid,
            "case_id": pid,
            "lung_rads": s["lung_rads"],
            "split": "test" if pid in test_set else "train",
            "fold": None if pid in test_set else int(folds[pid]),
            "manufacturer": s["scanner"]["manufacturer"],
            "spacing": [float(v) for v in s["spacing"]],
            "shape": [int(v) for v in s["shape"]],
            "source": f"metalung phantom (seed {seed}, patient index {s['index']})",
        }
        if lung_masks and s["files"].get("lung_mask"):
            entry["lung_mask"] = s["files"]["lung_mask"]
        dl["test" if pid in test_set else "training"].append(entry)
        s["split"] = entry["split"]
        s["fold"] = entry["fold"]
    write_cohort_csv(summaries, out / "cohort.csv")
    if figure:
        cohort_overview(out, summaries, out / "overview.png")
    path = write_datalist(dl, out / "datalist.json")
    manifest["last_run"] = {
        "generated": sorted(generated),
        "time_s": round(gen_time, 2),
        "workers": int(workers),
    }
    store.write(manifest)
    return path
