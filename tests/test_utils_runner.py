"""The shared resumable runner (metalung_monai.utils.runner): manifest, fingerprints, seeds, pool,
progress bar, completion records and the clean-up of killed runs."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from metalung_monai.errors import InputError
from metalung_monai.utils.runner import (
    Manifest,
    case_seed,
    case_streams,
    completed,
    describe_diff,
    file_fingerprint,
    fingerprint,
    mark_done,
    progress,
    remove_stale_partials,
    run_pool,
    seed_sequence,
    stale_partials,
)

#: a process id no process can have (above the kernel's largest, 2**22): a dead writer
DEAD_PID = 99_999_999


# --------------------------------------------------------------------------- fingerprints
def test_fingerprint_is_the_digest_of_the_canonical_json():
    cfg = {"seed": 0, "ops": ["mirror", "relocate"], "nested": {"b": 1, "a": 2.5}}
    text = json.dumps(cfg, sort_keys=True).encode()
    assert fingerprint(cfg) == hashlib.sha1(text).hexdigest()[:16]
    assert fingerprint(cfg, algorithm="sha256") == hashlib.sha256(text).hexdigest()[:16]
    assert fingerprint(cfg, length=40) == hashlib.sha1(text).hexdigest()
    reordered = {"nested": {"a": 2.5, "b": 1}, "ops": ["mirror", "relocate"], "seed": 0}
    assert fingerprint(reordered) == fingerprint(cfg)
    assert fingerprint({**cfg, "seed": 1}) != fingerprint(cfg)
    assert fingerprint({**cfg, "ops": ["relocate", "mirror"]}) != fingerprint(cfg)  # order counts


def test_fingerprint_refuses_what_json_cannot_hold_unless_told_how():
    with pytest.raises(TypeError):
        fingerprint({"path": Path("/x")})
    assert fingerprint({"path": Path("/x")}, default=str) == fingerprint({"path": "/x"})


def test_file_fingerprint_is_the_digest_of_the_bytes(tmp_path):
    p = tmp_path / "dl.json"
    p.write_bytes(b'{"training": []}\n' * 100_000)  # several read blocks
    assert file_fingerprint(p) == hashlib.sha1(p.read_bytes()).hexdigest()[:16]
    assert file_fingerprint(p, "sha256", 12) == hashlib.sha256(p.read_bytes()).hexdigest()[:12]


def test_describe_diff_names_the_changed_keys():
    old = {"seed": 0, "size": 128, "n": 4}
    assert describe_diff(old, {"seed": 1, "size": 128, "n": 4}) == "seed: 0 != 1"
    assert describe_diff(old, {"size": 256, "n": 4}) == "seed: 0 != None; size: 128 != 256"
    assert describe_diff(old, dict(old)) == "unknown difference"


# --------------------------------------------------------------------------- seeds
def test_case_seed_keeps_the_numbers_augment_has_always_used():
    """``SeedSequence([seed, first 32 bits of sha1(case id)])``: the derivation of ``augment``;
    pinned, since changing it changes every expanded dataset."""
    for seed, cid in [(0, "P0001"), (7, "../x"), (123, "C2")]:
        digest = int(hashlib.sha1(cid.encode()).hexdigest()[:8], 16)
        expected = int(np.random.SeedSequence([seed, digest]).generate_state(1)[0])
        assert case_seed(seed, cid) == expected
    assert case_seed(0, "P0001") == 799945359
    assert case_seed(7, "../x") == 3578801245
    assert case_seed(0, 3) == 2613022947  # an integer key is used as is
    assert case_seed(0, "P0001") != case_seed(1, "P0001") != case_seed(1, "P0002")


def test_case_streams_are_the_phantom_patient_streams():
    """Patient ``i`` of a cohort seeded ``s``: ``SeedSequence([s, i]).spawn(6)``, as always."""
    ours = case_streams(3, 5, 6)
    theirs = [np.random.default_rng(s) for s in np.random.SeedSequence([3, 5]).spawn(6)]
    assert len(ours) == 6
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.random(8), b.random(8))
    assert seed_sequence(3, np.int64(5)).entropy == seed_sequence(3, 5).entropy


def test_case_keys_must_be_ints_or_text():
    for bad in (True, 1.5, None, b"P0001"):
        with pytest.raises(TypeError):
            case_seed(0, bad)


# --------------------------------------------------------------------------- manifest
def test_manifest_round_trip_and_typed_errors(tmp_path):
    m = Manifest(tmp_path / "out", ".x-manifest.json", what="x", hint="move it away")
    assert m.read() is None and not m.exists()
    m.write({"key": "abc", "cases": {"C1": {}}})
    assert m.exists() and m.read(required=("cases",)) == {"key": "abc", "cases": {"C1": {}}}
    assert not any(p.name.startswith(".x-manifest.partial") for p in m.folder.iterdir())
    with pytest.raises(ValueError):  # strict JSON: nothing written
        m.write({"v": float("nan")})
    assert m.read()["key"] == "abc"

    m.path.write_text("{not json")
    with pytest.raises(InputError, match="unreadable x manifest.*move it away") as e:
        m.read()
    assert str(m.path) in str(e.value)
    m.path.write_text("[1, 2]")
    with pytest.raises(InputError, match="not a x manifest"):
        m.read()
    m.path.write_text('{"cases": [1]}')
    with pytest.raises(InputError, match="'cases' is not a table"):
        m.read(required=("cases",))
    m.path.unlink()
    m.path.mkdir()  # a folder under the manifest's name is no manifest
    with pytest.raises(InputError, match="unreadable"):
        m.read()


def test_manifest_remove_owned_deletes_only_the_listed_files_inside(tmp_path):
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "a.nii.gz").write_text("ours")
    (out / "notes.txt").write_text("theirs")
    (tmp_path / "victim.txt").write_text("outside")
    m = Manifest(out, ".m.json", what="m")
    n = m.remove_owned(["images/a.nii.gz", "../victim.txt", str(tmp_path / "victim.txt"), "gone"])
    assert n == 1
    assert not (out / "images").exists()  # left empty: removed
    assert (out / "notes.txt").read_text() == "theirs"
    assert (tmp_path / "victim.txt").read_text() == "outside"


# --------------------------------------------------------------------------- pool
def _jobs(n, drawn=None):
    for i in range(n):
        if drawn is not None:
            drawn.append(i)
        yield i, ({"case": i},)


@pytest.mark.parametrize("workers", [1, 2])
def test_run_pool_hands_every_result_to_the_callback(workers):
    got = {}
    n = run_pool(fingerprint, _jobs(7), workers, on_result=got.__setitem__)
    assert n == 7
    assert got == {i: fingerprint({"case": i}) for i in range(7)}


def test_run_pool_in_process_runs_in_order_and_reads_jobs_lazily():
    drawn, order = [], []

    def record(key, result):
        order.append(key)
        if key == 2:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        run_pool(fingerprint, _jobs(100, drawn), 1, on_result=record)
    assert order == [0, 1, 2] and drawn == [0, 1, 2]
    assert run_pool(fingerprint, iter(()), 4) == 0


def test_run_pool_keeps_a_bounded_window_and_stops_on_a_failure():
    drawn, got = [], []

    def record(key, result):
        got.append(key)
        assert len(drawn) <= 2 * 2 + len(got)  # at most window * workers in flight

    run_pool(fingerprint, _jobs(12, drawn), 2, on_result=record, window=2)
    assert sorted(got) == list(range(12))

    # a failing job: the exception reaches the caller, jobs not drawn yet are never started
    drawn.clear()
    jobs = ((i, (0, True if i == 1 else i)) for i in range(1000) if not drawn.append(i))
    with pytest.raises(TypeError, match="case key"):
        run_pool(case_seed, jobs, 2, window=1)
    assert len(drawn) < 1000


# --------------------------------------------------------------------------- progress
def test_progress_disabled_is_a_silent_bar_with_the_same_methods(capsys):
    bar = progress(range(3), desc="x", enabled=False)
    assert list(bar) == [0, 1, 2]
    with progress(total=5, enabled=False) as b:
        b.update(2)
        b.set_postfix_str("a / b")
        b.set_description("y")
    assert capsys.readouterr().err == ""
    # stderr is not a terminal under pytest: a terminal-only bar stays silent too
    assert list(progress([1, 2], terminal_only=True)) == [1, 2]
    assert capsys.readouterr().err == ""


def test_progress_enabled_is_a_tqdm_bar(capsys):
    from tqdm.auto import tqdm

    bar = progress(total=4, initial=1, desc="cases", unit="case")
    assert isinstance(bar, tqdm) and bar.n == 1 and bar.total == 4
    bar.update(3)
    bar.close()
    assert "cases" in capsys.readouterr().err


# --------------------------------------------------------------------------- completion records
def test_completed_needs_the_record_its_key_and_its_outputs(tmp_path):
    rec = tmp_path / "records" / "C1.json"
    heat = tmp_path / "records" / "C1.npz"
    assert completed(rec, "k1") is None  # no record
    mark_done(rec, {"config": "k1", "variants": [1, 2]})
    assert completed(rec, "k1", key_field="config") == {"config": "k1", "variants": [1, 2]}
    assert completed(rec, "k2", key_field="config") is None  # other settings: redo
    assert completed(rec, "k1") is None  # no "key" field
    assert completed(rec, "k1", "config", outputs=["C1.npz"]) is None  # an output is missing
    heat.write_bytes(b"x")
    assert completed(rec, "k1", "config", outputs=["C1.npz", heat])["variants"] == [1, 2]
    rec.write_text('{"config": "k1", ')  # damaged
    assert completed(rec, "k1", "config") is None
    rec.write_text('["config", "k1"]')  # not an object
    assert completed(rec, "k1", "config") is None


# --------------------------------------------------------------------------- killed runs
def test_stale_partials_of_dead_writers_are_removed_and_nothing_else(tmp_path):
    (tmp_path / "images").mkdir()
    dead = f".P0001.partial-{DEAD_PID}-0123abcd.nii.gz"
    alive = f".P0002.partial-{os.getpid()}-0123abcd.nii.gz"  # a concurrent writer: kept
    (tmp_path / "images" / dead).write_bytes(b"half")
    (tmp_path / "images" / alive).write_bytes(b"half")
    (tmp_path / "images" / "P0003.nii.gz").write_bytes(b"whole")
    series = tmp_path / f".P0004.partial-{DEAD_PID}-89abcdef"
    series.mkdir()
    (series / "IM00001.dcm").write_bytes(b"dicom")
    rels = [f"images/{dead}", f"images/{alive}", "images/P0003.nii.gz"]
    assert stale_partials(tmp_path, rels) == [f"images/{dead}"]
    assert remove_stale_partials(tmp_path, ("", "images", "missing")) == 2
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(
        [alive, "P0003.nii.gz"]
    )
    assert not series.exists()
