"""benchmarks/bench.py --quick runs end to end and writes every number it promises.

No timing is asserted: the machine may be busy. PyTorch columns are checked only when
torch is installed."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
CONFIGS = {("lstm", 256), ("gru", 256), ("rnn", 256), ("lstm", 128), ("lstm", 512)}


def has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    run = subprocess.run([sys.executable, str(BENCH), "--quick", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "charrnn ch/s" in run.stdout  # the table was printed
    return json.loads(out.read_text())


def test_top_level_numbers(results):
    assert results["threads"] >= 1
    assert results["vocab_size"] > 2
    assert (results["batch_size"], results["seq_len"]) == (32, 64)
    assert results["sgemm_gflops"] > 0
    assert results["startup_seconds"] is None or min(results["startup_seconds"].values()) > 0
    assert results["names_seconds"] > 0


def test_every_model_has_positive_rates(results):
    rows = results["train"]
    assert {(r["cell"], r["hidden"]) for r in rows} == CONFIGS
    for r in rows:
        name = f"{r['cell']}-{r['hidden']}"
        assert r["charrnn_chars_per_s"] > 0, name
        assert r["charrnn_sample_chars_per_s"] > 0, name
        assert 0 < r["charrnn_fraction_of_sgemm"], name
        assert len(r["charrnn_all"]) == results["reps"], name


@pytest.mark.skipif(not has_torch(), reason="PyTorch is not installed (benchmark comparison only)")
def test_torch_columns_when_installed(results):
    assert results["torch"]
    for r in results["train"]:
        assert r["torch_chars_per_s"] > 0
        assert r["torch_sample_chars_per_s"] > 0
        assert r["ratio"] == pytest.approx(r["charrnn_chars_per_s"] / r["torch_chars_per_s"])


def test_learning_curve_script_runs():
    curve = BENCH.parent / "curve.py"
    run = subprocess.run([sys.executable, str(curve), "--hidden", "16", "--steps", "4", "--window", "2"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line.split() for line in run.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == ["1-2", "3-4"]
    assert all(0 < float(r[1]) < 10 for r in rows)  # charrnn's loss; torch's column is "-" without torch


@pytest.mark.skipif(not (has_torch() and importlib.util.find_spec("numba")), reason="needs numba and torch")
def test_fused_lstm_experiment_agrees_with_the_numpy_cell():
    run = subprocess.run([sys.executable, str(BENCH.parent / "fused_lstm.py"), "--hidden", "16", "--reps", "1"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    row = next(line.split() for line in run.stdout.splitlines() if line.startswith("lstm-16"))
    assert float(row[1]) < 1e-4  # outputs and gradients of the two cells agree


def test_backend_candidates_script_runs():
    """benchmarks/backends.py --quick times every candidate it can find on this machine."""
    run = subprocess.run([sys.executable, str(BENCH.parent / "backends.py"), "--quick", "--threads", "1"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    rates = [float(line.split()[-2].replace(",", "")) for line in run.stdout.splitlines() if "chars/s" in line]
    assert len(rates) == 2 and min(rates) > 0  # the two thread placements of a whole training step
    assert "whole" in run.stdout and "charrnn LSTM cell" in run.stdout


def test_neighbours_experiment_gradients_agree_with_finite_differences():
    run = subprocess.run([sys.executable, str(BENCH.parent / "neighbors.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "largest error" in run.stdout


@pytest.mark.skipif(not importlib.util.find_spec("numba"), reason="needs numba (the fast extra)")
def test_row_groups_experiment_agrees_with_the_whole_batch():
    run = subprocess.run([sys.executable, str(BENCH.parent / "row_groups.py"), "--check"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "largest difference" in run.stdout


def test_lean_sampling_step_matches_the_stepper():
    run = subprocess.run([sys.executable, str(BENCH.parent / "sample_step.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert run.stdout.count("bit-identical") == 2


@pytest.mark.skipif(not importlib.util.find_spec("numba"), reason="needs numba (the fast extra)")
def test_scatter_experiment_runs():
    run = subprocess.run([sys.executable, str(BENCH.parent / "scatter.py"), "--configs", "rnn-16", "--reps", "1",
                          "--block-seconds", "0.05", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "rnn-16" in run.stdout.splitlines()[-1]


@pytest.mark.skipif(not importlib.util.find_spec("numba"), reason="needs numba (the fast extra)")
def test_orientation_experiment_agrees_with_the_lstm_forward():
    """Its transposed forward is checked against fast.lstm_forward, and its (feature, batch) layer
    against the layer as trained (outputs and every gradient), before anything is timed."""
    run = subprocess.run([sys.executable, str(BENCH.parent / "orientation.py"), "--hidden", "24", "--reps", "1",
                          "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines()[-1].split()[0] == "24"


def test_compare_trees_times_the_version_it_was_given(tmp_path, monkeypatch):
    """Each child process imports the tree it is timing: run from the repository root,
    `python -c` put this checkout first on sys.path, and both versions were this one."""
    import shutil
    sys.path.insert(0, str(BENCH.parent))
    try:
        import compare_trees
    finally:
        sys.path.remove(str(BENCH.parent))
    shutil.copytree(BENCH.parents[1] / "charrnn", tmp_path / "charrnn")
    monkeypatch.chdir(BENCH.parents[1])
    rate = compare_trees.run_child(tmp_path, {**compare_trees.os.environ, "OPENBLAS_NUM_THREADS": "1"}, "sample",
                                   "gru", "8", "1", "20", str(BENCH.parents[1] / "corpora" / "shakespeare.txt"))
    assert rate > 0


@pytest.mark.skipif(not importlib.util.find_spec("numba"), reason="needs numba (the fast extra)")
def test_second_core_experiment_agrees_with_the_lstm_forward():
    """Its parallel kernel and its split batch are checked against fast.lstm_forward before timing."""
    run = subprocess.run([sys.executable, str(BENCH.parent / "second_core.py"), "--hidden", "24", "--reps", "1",
                          "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "threading layer" in run.stdout.splitlines()[-1]
