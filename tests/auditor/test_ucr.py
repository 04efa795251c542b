import subprocess
import sys

import numpy as np
import pytest

from auditor.data import DatasetError, load_dataset
from auditor.poisoning import stratified_split

aeon = pytest.mark.skipif(__import__("importlib").util.find_spec("aeon") is None,
                          reason="needs the data extra (aeon)")

SHAPES = {                                   # cases, length, channels, classes (TRAIN + TEST joined)
    "ItalyPowerDemand": (67 + 1029, 24, 1, 2),
    "GunPoint": (50 + 150, 150, 1, 2),
    "ArrowHead": (36 + 175, 251, 1, 3),
    "OSULeaf": (200 + 242, 427, 1, 6),
    "JapaneseVowels": (270 + 370, 29, 12, 9),
    "BasicMotions": (40 + 40, 100, 6, 4),
}


def _auditor(*args, prelude=""):
    code = f"import sys; {prelude}from auditor.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


@aeon
@pytest.mark.parametrize("name", list(SHAPES))
def test_bundled_sets_load_with_their_shapes_normalized(name):
    from auditor.ucr import load_ucr

    x, y = load_ucr(name)
    cases, length, channels, classes = SHAPES[name]
    assert x.shape == ((cases, length) if channels == 1 else (cases, length, channels))
    assert y.dtype == np.int64 and set(np.unique(y)) == set(range(classes))
    series = x.reshape(cases, length, channels)
    if name != "JapaneseVowels":                                   # unpadded: every series z-normalized
        assert np.allclose(series.mean(1), 0, atol=1e-9)
        assert np.allclose(series.std(1), 1, atol=1e-6)
    else:                                                          # padded at the front with zeros
        assert (series[:, 0] == 0).any() and not (series[:, -1] == 0).all()


@aeon
def test_resplit_is_stratified_disjoint_and_seeded():
    from auditor.ucr import load_ucr, split_sizes, split_ucr

    _, y = load_ucr("ItalyPowerDemand")
    sizes = split_sizes(len(y))
    assert sizes == {"train": 438, "trusted": 220, "attacker": 219}
    idx = stratified_split(y, sizes, seed=5)
    assert [len(idx[p]) for p in ("train", "trusted", "attacker", "test")] == [438, 220, 219, 219]
    joined = np.concatenate(list(idx.values()))
    assert len(np.unique(joined)) == len(joined) == len(y)                    # disjoint, all used
    share = np.bincount(y) / len(y)
    for part in idx.values():
        assert np.abs(np.bincount(y[part], minlength=2) - share * len(part)).max() <= 1.5
    parts = split_ucr("ItalyPowerDemand", seed=5)
    again = split_ucr("ItalyPowerDemand", seed=5)
    other = split_ucr("ItalyPowerDemand", seed=6)
    for p in parts:
        assert np.array_equal(parts[p][0], again[p][0]) and np.array_equal(parts[p][1], again[p][1])
    assert not np.array_equal(parts["train"][0], other["train"][0])
    with pytest.raises(ValueError):
        split_ucr("BasicMotions", n_train=78)                                  # too little left to split


@aeon
def test_gradient_matching_poisons_stay_in_budget_and_box():
    from auditor.ucr import make_ucr_benchmark, split_ucr

    arrays = make_ucr_benchmark("ItalyPowerDemand", attack="untargeted", seed=1, n_train=120, steps=3,
                                surrogates=1, fraction=0.05)
    parts = split_ucr("ItalyPowerDemand", seed=1, n_train=120)
    clean_x, clean_y = parts["train"]
    assert np.array_equal(arrays["y"], clean_y) and arrays["is_poison"].sum() == 6
    delta = arrays["x"] - clean_x
    assert set(np.flatnonzero(np.abs(delta).max(1) > 0)) <= set(np.flatnonzero(arrays["is_poison"]))
    assert np.abs(delta).max() <= 0.5 + 1e-9 and np.abs(delta).max() > 0          # eps 0.5 standard deviations
    seen = np.concatenate([clean_x, parts["attacker"][0]])
    assert seen.min() - 1e-9 <= arrays["x"].min() and arrays["x"].max() <= seen.max() + 1e-9
    assert np.array_equal(arrays["x_val"], parts["trusted"][0]) and "x_target" not in arrays


@aeon
@pytest.mark.slow
def test_cli_writes_clean_twin_and_collision_benchmarks(tmp_path):
    from auditor.ucr import split_ucr

    clean, poisoned = tmp_path / "clean.npz", tmp_path / "collision.npz"
    for out, attack in ((clean, "none"), (poisoned, "collision")):
        run = _auditor("make-benchmark", "--kind", "ucr", "--dataset", "ItalyPowerDemand", "--attack", attack,
                       "--seed", "2", "--n", "120", "--poison-fraction", "0.05", "--out", str(out))
        assert run.returncode == 0, run.stderr
    a, b = load_dataset(clean), load_dataset(poisoned)
    assert a.x.shape == (120, 24) and a.task == "classification" and a.is_poison.sum() == 0
    assert a.x_val.shape == (326, 24) and a.x_test.shape == (325, 24) and a.x_target is None
    assert np.array_equal(a.x_val, b.x_val) and np.array_equal(a.y, b.y)          # same split: a clean twin
    assert b.is_poison.sum() == 6 and b.x_target.shape == (1, 24)
    changed = np.flatnonzero(np.abs(a.x - b.x).max(1) > 0)
    assert set(changed) <= set(np.flatnonzero(b.is_poison))
    assert np.abs(a.x - b.x)[:, :6].max() == 0                                    # only the last 18 of 24 steps
    assert len(set(b.y[b.is_poison])) == 1 and b.y[b.is_poison][0] != b.y_target[0]
    target_rows = {r.tobytes() for r in split_ucr("ItalyPowerDemand", seed=2, n_train=120)["attacker"][0]}
    assert b.x_target[0].tobytes() in target_rows                                  # never the trusted split


@aeon
def test_multichannel_sets_clean_and_attacked(tmp_path):
    out = tmp_path / "bm.npz"
    run = _auditor("make-benchmark", "--kind", "ucr", "--dataset", "BasicMotions", "--attack", "none",
                   "--out", str(out))
    assert run.returncode == 0, run.stderr
    d = load_dataset(out)
    assert d.x.shape == (32, 100, 6) and d.x_val.shape == (16, 100, 6) and d.channels == 6
    attacked = tmp_path / "bm-collision.npz"
    run = _auditor("make-benchmark", "--kind", "ucr", "--dataset", "BasicMotions", "--attack", "collision",
                   "--out", str(attacked))
    assert run.returncode == 0, run.stderr
    a = load_dataset(attacked)
    assert a.x.shape == d.x.shape and a.is_poison.any() and a.x_target.shape == (1, 100, 6)
    changed = np.abs(a.x - d.x).max(axis=(1, 2)) > 0                                  # (n,)
    assert changed.any() and not changed[~a.is_poison].any()                          # only poisons move


TS = """# a hand-written file: comments and blank lines are ignored
@problemName Tiny
@timeStamps false
@missing false
@univariate true
@equalLength true
@seriesLength 4
@classLabel true up down

@data
0.0,1.0,2.0,3.5:up
3.0,2.0,1.0,0.25:down
1.0,1.5,2.0,2.5:up
"""


@aeon
def test_ts_files_load_as_datasets(tmp_path):
    path = tmp_path / "tiny.ts"
    path.write_text(TS)
    d = load_dataset(path)
    assert np.array_equal(d.x, [[0, 1, 2, 3.5], [3, 2, 1, 0.25], [1, 1.5, 2, 2.5]])
    assert d.y.tolist() == [1, 0, 1] and d.task == "classification" and d.x_val is None   # down=0, up=1
    assert len(d.sha256) == 64

    from aeon.datasets import save_to_ts_file

    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 2, 5)).round(6)                                # (n, channels, L): aeon's layout
    y = np.array(["3", "10", "3", "10", "2", "2", "3"])
    save_to_ts_file(x, y, label_type="classification", path=str(tmp_path), problem_name="multi")
    m = load_dataset(tmp_path / "multi.ts")
    assert np.allclose(m.x, x.transpose(0, 2, 1)) and m.x.shape == (7, 5, 2)
    assert m.y.tolist() == [1, 2, 1, 2, 0, 0, 1]                              # classes in numeric order

    (tmp_path / "ragged.ts").write_text(TS.replace("@equalLength true", "@equalLength false")
                                        .replace("1.0,1.5,2.0,2.5:up", "1.0,1.5:up"))
    with pytest.raises(DatasetError, match="unequal lengths"):
        load_dataset(tmp_path / "ragged.ts")
    (tmp_path / "broken.ts").write_text(TS.replace("2.0,3.5", "two,3.5"))
    with pytest.raises(DatasetError, match="unreadable .ts"):
        load_dataset(tmp_path / "broken.ts")


@aeon
def test_convert_numbers_the_classes_of_train_and_reference_together(tmp_path):
    (tmp_path / "train.ts").write_text(TS)
    (tmp_path / "ref.ts").write_text(TS.replace("@classLabel true up down", "@classLabel true flat up down")
                                     .replace("3.0,2.0,1.0,0.25:down", "1.0,1.0,1.0,1.0:flat"))
    out = tmp_path / "d.npz"
    run = _auditor("convert", str(tmp_path / "train.ts"), "--reference", str(tmp_path / "ref.ts"), "--out", str(out))
    assert run.returncode == 0, run.stderr
    d = load_dataset(out)
    assert d.y.tolist() == [2, 0, 2] and d.y_val.tolist() == [2, 1, 2]           # down 0, flat 1, up 2
    assert np.array_equal(d.x_val[1], [1.0, 1.0, 1.0, 1.0])
    bad = _auditor("convert", str(tmp_path / "missing.ts"), "--out", str(out))
    assert bad.returncode == 2 and "no such file" in bad.stderr


def test_without_aeon_ucr_and_ts_say_to_install_the_extra(tmp_path):
    block = "sys.modules['aeon'] = None; sys.modules['aeon.datasets'] = None; "
    run = _auditor("make-benchmark", "--kind", "ucr", "--dataset", "GunPoint", "--attack", "none",
                   "--out", str(tmp_path / "g.npz"), prelude=block)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == ["auditor: error: reading UCR/UEA data needs aeon: "
                                               "pip install 'auditor[data]'"]
    (tmp_path / "t.ts").write_text(TS)
    code = (f"import sys; {block}from auditor.data import DatasetError, load_dataset\n"
            f"try:\n    load_dataset({str(tmp_path / 't.ts')!r})\nexcept DatasetError as exc:\n    print(exc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "auditor[data]" in out.stdout and out.returncode == 0, out.stderr


def test_ucr_needs_dataset_and_attack(tmp_path):
    run = _auditor("make-benchmark", "--kind", "ucr", "--out", str(tmp_path / "x.npz"))
    assert run.returncode == 2 and "--dataset" in run.stderr
    run = _auditor("make-benchmark", "--kind", "clean", "--attack", "none", "--out", str(tmp_path / "x.npz"))
    assert run.returncode == 2 and "--kind ucr" in run.stderr


def test_cli_choices_match_the_library():
    from auditor.cli.data import UCR_ATTACKS, UCR_DATASETS
    from auditor.ucr import ATTACKS, DATASETS

    assert UCR_ATTACKS == ATTACKS and UCR_DATASETS == tuple(DATASETS)
