"""How much of a U-Net training loop waits for the data loader: per arm, per ``sampler`` setting.

Trains the U-Net bundle (``quick`` preset, shortened to ``--epochs`` epochs of 25 iterations of 16
slices) once per arm and sampler, in one process, one after the other, and reads each run's
``history.json`` (``TrainingHistory``: the time between ignite's GET_BATCH_STARTED and
GET_BATCH_COMPLETED over the loop's wall time, validations included). Compares

* ``epoch``: torch's ``shuffle=True``, one pass over the training set per loader iterator (ignite
  restarts the iterator at the end of each pass: every 4 iterations for the cohort's 56 slices);
* ``stream``: :func:`metalung_monai.training.train_sampler`, one stream of shuffled passes for the
  whole run (the default),

for ``none`` (no augmentation) and ``copypaste`` (a real lesion inserted online into free lung in
half of the samples: the issue's target is a loader under 10 % of a training step), and prints the
ratios. Run it on an otherwise idle machine: the loader's single worker shares the 2 cores with
the training step.

Usage:
    python scripts/bench_loader.py [--epochs 6] [--arms none,copypaste] [--seed 1]
        [--bank outputs/synth/cohort/bank] [--out outputs/bench/loader]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datalist", type=Path, default=ROOT / "outputs/cohort/datalist.json")
    ap.add_argument("--bank", type=Path, default=ROOT / "outputs/synth/cohort/bank")
    ap.add_argument("--arms", default="none,copypaste")
    ap.add_argument("--samplers", default="epoch,stream")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "outputs/bench/loader")
    a = ap.parse_args(argv)

    from metalung_monai.training.bundle_run import default_bundles_dir, run_bundle
    from metalung_monai.training.workflow import bundle_configs

    for p, what in ((a.datalist, "--datalist"), (a.bank / "bank.json", "--bank")):
        if not p.is_file():
            ap.error(f"{what}: {p} not found (run the main job / scripts/synth_benchmark.sh first)")
    bundle = default_bundles_dir() / "unet_lung_tumor"
    rows = []
    for arm in a.arms.split(","):
        for sampler in a.samplers.split(","):
            overrides = {
                "epochs": a.epochs,
                "sampler": sampler,
                "lesion_banks": {"real": str(a.bank)},
            }
            with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
                t0 = time.perf_counter()
                run_bundle(
                    bundle,
                    bundle_configs(bundle, "train", arm, "quick"),
                    "train",
                    seed=a.seed,
                    dataset_dir=str(a.datalist.parent),
                    datalist=str(a.datalist),
                    preset_overrides=overrides,
                    ckpt_dir=f"{tmp}/models",
                    output_dir=f"{tmp}/eval",
                    progress=False,
                )
                h = json.loads(Path(f"{tmp}/eval/history.json").read_text())
            it = h["iterations"]
            rows.append(
                {
                    "arm": arm,
                    "sampler": sampler,
                    "iterations": it,
                    "train_samples": h["train_samples"],
                    "wall_s": round(time.perf_counter() - t0, 1),
                    "loop_ms_per_it": round(1000 * h["wall_s"] / it, 1),
                    "wait_ms_per_it": round(1000 * h["data_s"] / it, 1),
                    "data_share": h["data_share"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)

    lines = [
        f"U-Net quick preset, {a.epochs} epochs x 25 iterations x 16 slices, seed {a.seed}, "
        "1 loader worker",
        "",
        "| arm | sampler | loop ms / iteration | loader wait ms / iteration | data-loading share |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arm']} | {r['sampler']} | {r['loop_ms_per_it']} | {r['wait_ms_per_it']} | "
            f"{100 * r['data_share']:.1f} % |"
        )
    by = {(r["arm"], r["sampler"]): r for r in rows}
    lines.append("")
    for arm in a.arms.split(","):
        e, s = by.get((arm, "epoch")), by.get((arm, "stream"))
        if e and s and s["data_share"]:
            lines.append(
                f"- {arm}: the loader's share falls {100 * e['data_share']:.1f} % -> "
                f"{100 * s['data_share']:.1f} % with `stream` "
                f"(epoch / stream = {e['data_share'] / s['data_share']:.1f}x)"
            )
    text = "\n".join(lines) + "\n"
    a.out.mkdir(parents=True, exist_ok=True)
    tmp = a.out / ".bench_loader.md.part"
    tmp.write_text(text)
    shutil.move(tmp, a.out / "bench_loader.md")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
