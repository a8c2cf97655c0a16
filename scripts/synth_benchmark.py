"""Train, sample and judge every lesion generator on one real lesion bank, then compare them.

For each generator (``--generators``, default all): train its bundle's stages with the chosen
preset (``python -m monai.bundle run``), sample ``--num-samples`` lesions (``sample.json``), run
``metalung lesion-realism`` on them, and finally ``metalung lesion-compare`` over all of them
(Table 6, the realism table and the picture grid per Lung-RADS class).

Layout written under ``OUT`` (one run folder per generator)::

    OUT/<generator>/models/       checkpoints (atomic; final ones hold training time and sizes)
    OUT/<generator>/generated/    the sampled lesions (bank-like folder)
    OUT/<generator>/realism/      realism.md, figures, realism.json
    OUT/<generator>/*.log         the bundle's output of each step
    OUT/comparison/               comparison.md, comparison.json, grid.png

Resumable: a step whose output exists is skipped (a stage's final checkpoint, ``generated/
bank.json``, ``realism/realism.json``), so rerunning after a kill continues where it stopped.
Every step is seeded (``--seed``: training, sampling and the realism report).

Usage::

    python scripts/synth_benchmark.py BANK OUT [--generators dcgan,vqvae] [--preset quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from metalung_monai.evaluation.realism import MIN_SET_SIZE

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ROOT / "bundles"

#: generator -> bundle, training stages (config stack, final checkpoint it writes), sample stack.
#: ``{preset}`` is replaced by the preset's override file. ``shared`` names a run folder whose
#: checkpoint a stage reuses instead of training it again (the VQ-VAE of both priors).
GENERATORS: dict[str, dict] = {
    "dcgan": {
        "bundle": "dcgan_lesion_synth",
        "stages": [(["train", "{preset}"], "model_final.pt")],
        "sample": ["train", "{preset}", "sample"],
    },
    "vqvae": {
        "bundle": "vqvae_lesion_synth",
        "stages": [
            (["train_autoencoder", "{preset}"], "autoencoder_final.pt"),
            (["train_autoencoder", "train_prior", "{preset}"], "pixelcnn_final.pt"),
        ],
        "sample": ["train_autoencoder", "train_prior", "{preset}", "sample"],
    },
    "vqvae_transformer": {
        "bundle": "vqvae_lesion_synth",
        "stages": [
            (["train_autoencoder", "{preset}"], "autoencoder_final.pt"),
            (
                ["train_autoencoder", "train_prior", "train_transformer", "{preset}"],
                "transformer_final.pt",
            ),
        ],
        "sample": ["train_autoencoder", "train_prior", "train_transformer", "{preset}", "sample"],
        "shared": {"autoencoder_final.pt": "vqvae"},
    },
    "diffusion": {
        "bundle": "diffusion_lesion_synth",
        "stages": [(["train", "{preset}"], "model_final.pt")],
        "sample": ["train", "{preset}", "sample"],
    },
}


def _stack(names: list[str], preset: str) -> str:
    return "[" + ",".join(f"'configs/{n.format(preset=preset)}.json'" for n in names) + "]"


def _run(cmd: list[str], cwd: Path, log: Path, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        res = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if res.returncode:
        sys.exit(f"synth_benchmark: step failed (exit {res.returncode}), see {log}")
    return time.perf_counter() - t0


def _bundle(args, run_dir: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        extra[0],
        "--bank_dir",
        os.fspath(args.bank),
        "--ckpt_dir",
        os.fspath(run_dir / "models"),
        "--output_dir",
        os.fspath(run_dir),
        "--seed",
        str(args.seed),
        *extra[1:],
        *shlex.split(args.bundle_args),
    ]


def _written(generated: Path) -> int:
    """How many 2D lesions a generator's sample step wrote (its ``bank.json`` counts)."""
    meta = json.loads((generated / "bank.json").read_text())
    return int(meta.get("counts", {}).get("2d", {}).get("lesions", 0))


def run_generator(args, gen: str) -> None:
    spec = GENERATORS[gen]
    cwd = BUNDLES / spec["bundle"]
    run_dir = args.out / gen
    (run_dir / "models").mkdir(parents=True, exist_ok=True)
    for i, (stack, final) in enumerate(spec["stages"]):
        target = run_dir / "models" / final
        shared = spec.get("shared", {}).get(final)
        if not target.exists() and shared and (args.out / shared / "models" / final).exists():
            shutil.copy2(args.out / shared / "models" / final, target)  # same stage, same seed
            print(f"[{gen}] stage {i + 1}: {final} reused from {shared}")
        if target.exists():
            print(f"[{gen}] stage {i + 1}: {final} exists, skipped")
            continue
        cmd = _bundle(args, run_dir, [_stack(stack, args.preset)])
        secs = _run(cmd, cwd, run_dir / f"train_{i + 1}.log", args.threads)
        print(f"[{gen}] stage {i + 1} trained in {secs:.0f} s -> {target}")
    if not (run_dir / "generated" / "bank.json").exists():
        cmd = _bundle(
            args,
            run_dir,
            [
                _stack(spec["sample"], args.preset),
                "--num_samples",
                str(args.num_samples),
                "--sample_seed",
                str(args.seed),
            ],
        )
        secs = _run(cmd, cwd, run_dir / "sample.log", args.threads)
        print(f"[{gen}] {args.num_samples} lesions sampled in {secs:.0f} s")
    written = _written(run_dir / "generated")
    if written < MIN_SET_SIZE:  # the report cannot be made; the comparison says so
        print(
            f"[{gen}] realism report skipped: {written} lesions written, the report needs at "
            f"least {MIN_SET_SIZE} (see {run_dir / 'generated' / 'bank.json'})"
        )
    elif not (run_dir / "realism" / "realism.json").exists():
        cmd = [
            os.fspath(Path(sys.executable).with_name("metalung")),
            "lesion-realism",
            os.fspath(args.bank),
            os.fspath(run_dir / "generated"),
            "--out",
            os.fspath(run_dir / "realism"),
            "--seed",
            str(args.seed),
            *shlex.split(args.realism_args),
        ]
        secs = _run(cmd, ROOT, run_dir / "realism.log", args.threads)
        print(f"[{gen}] realism report in {secs:.0f} s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bank", type=Path, help="real lesion bank (metalung lesion-bank)")
    p.add_argument("out", type=Path, help="output folder (one run folder per generator)")
    p.add_argument("--generators", default=",".join(GENERATORS), help="comma-separated")
    p.add_argument("--preset", default="quick", help="quick (CPU, default) or full (GPU)")
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each step (1)")
    p.add_argument(
        "--bundle-args",
        default="",
        help='extra overrides for every bundle command, e.g. "--epochs 1 --device cpu"',
    )
    p.add_argument(
        "--realism-args",
        default="",
        help='extra options of metalung lesion-realism, e.g. "--c2st-repeats 1"',
    )
    args = p.parse_args()
    args.bank = args.bank.resolve()
    args.out = args.out.resolve()
    gens = [g.strip() for g in args.generators.split(",") if g.strip()]
    unknown = sorted(set(gens) - set(GENERATORS))
    if unknown:
        p.error(f"unknown generators {unknown}; known: {sorted(GENERATORS)}")
    if not (args.bank / "bank.json").is_file():
        p.error(f"{args.bank}: not a lesion bank (no bank.json); run metalung lesion-bank first")
    t0 = time.perf_counter()
    for gen in gens:
        run_generator(args, gen)
    cmd = [
        os.fspath(Path(sys.executable).with_name("metalung")),
        "lesion-compare",
        os.fspath(args.bank),
        *[f"{g}={args.out / g}" for g in gens],
        "--out",
        os.fspath(args.out / "comparison"),
        "--seed",
        str(args.seed),
    ]
    _run(cmd, ROOT, args.out / "compare.log", args.threads)
    print((args.out / "compare.log").read_text().splitlines()[-1])
    print(f"synth_benchmark: {len(gens)} generators in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
