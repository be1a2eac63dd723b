"""The optional numba backend (charrnn/fast.py) against the NumPy cells, the reference.

Needs the extra: `pip install -e '.[fast]'` (CI installs it after the main test run). In
float32 the two agree to float32 rounding, not bit for bit (the kernels' tanh is a rational
function; see fast.py); in float64 the kernels use the exact tanh and agree to 1e-12, so the
finite-difference checks of the NumPy cells (test_gradients.py) vouch for them too."""

import importlib.abc
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from helpers import ENV, TEN_NAMES_X3, arrays_of, run, small_trainer

pytest.importorskip("numba", reason="the fast backend's extra is not installed: pip install -e '.[fast]'")

from charrnn import backend, cells, fast, model  # noqa: E402
from charrnn.errors import CharrnnError  # noqa: E402
from charrnn.trainer import Trainer  # noqa: E402

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]


@pytest.fixture(autouse=True)
def restore_backend(monkeypatch):
    """Each test may choose a backend; the next one finds the choice it was left. Tests set
    CHARRNN_BACKEND themselves where they need it."""
    monkeypatch.delenv(backend.ENV, raising=False)
    active = backend._active[:]
    yield
    backend._active[:] = active


def run_cell(module, cell, activation, dtype, T=9, B=5, H=24, seed=0):
    """Everything a forward and backward pass of `module`'s cell produce, by name, on random
    inputs with random upstream gradients."""
    rng = np.random.default_rng(seed)
    G = cells.GATES[cell] * H
    W_h = (rng.standard_normal((H, G)) / np.sqrt(H)).astype(dtype)
    A = (1.5 * rng.standard_normal((T, B, G))).astype(dtype)  # wide enough to saturate some gates
    h0, c0 = (0.5 * rng.standard_normal((2, B, H))).astype(dtype)
    dH = rng.standard_normal((T, B, H)).astype(dtype)
    Hs, final, trace = module.forward(cell, A.copy(), W_h, h0, c0 if cell == "lstm" else None, activation)
    dA, dW_h, dstate = module.backward(dH.copy(), trace)
    out = {"Hs": Hs, "h_T": final[0], "dA": dA, "dW_h": dW_h, "dh0": dstate[0]}
    if cell == "lstm":
        out.update(c_T=final[1], dc0=dstate[1], cs=trace.cs, TCs=trace.TCs)
    if trace.gates is not None:
        out["gates"] = trace.gates
    return out


def assert_close(ours, reference, tol):
    assert set(ours) == set(reference)
    for name, ref in reference.items():
        err = float(np.abs(ours[name] - ref).max() / max(1.0, float(np.abs(ref).max())))
        assert err < tol, f"{name} differs from the NumPy cell: {err:.2e}"


@pytest.mark.parametrize("cell,activation", CELLS)
def test_float32_cells_agree_with_numpy(cell, activation):
    backend.use("numpy")
    reference = run_cell(cells, cell, activation, np.float32)
    assert_close(run_cell(fast, cell, activation, np.float32), reference, 2e-6)


@pytest.mark.parametrize("cell,activation", CELLS)
def test_float64_cells_agree_with_numpy_exactly(cell, activation):
    backend.use("numpy")
    reference = run_cell(cells, cell, activation, np.float64)
    assert_close(run_cell(fast, cell, activation, np.float64), reference, 1e-12)


@pytest.mark.parametrize("cell,activation", CELLS)
def test_every_parameter_gradient_agrees(cell, activation):
    """Through the whole model (2 layers, the dispatch in cells.forward / backward)."""
    cfg = model.ModelConfig(11, cell, 20, 2, activation)
    rng = np.random.default_rng(1)
    params = model.init_params(cfg, rng)
    x, y = rng.integers(0, 11, size=(2, 12, 4))
    state = [tuple((0.3 * rng.standard_normal((4, 20))).astype(np.float32) for _ in s)
             for s in model.zero_state(cfg, 4)]
    results = {}
    for name in ("numpy", "numba"):
        backend.use(name)
        loss, grads, final = model.loss_and_grads(params, cfg, x, y, None, state)
        results[name] = {"loss": np.array(loss), **grads, **{f"state{k}.{j}": s for k, layer in enumerate(final)
                                                             for j, s in enumerate(layer)}}
    assert_close(results["numba"], results["numpy"], 1e-5)


def test_tanh_is_float32_accurate():
    x = np.linspace(-12, 12, 1_000_001, dtype=np.float32)
    y = np.empty_like(x)
    fast.tanh_array(x, y)
    exact = np.tanh(x.astype(np.float64))
    assert np.abs(y - exact).max() < 4e-7
    small = np.abs(x) < 0.1
    assert (np.abs(y[small] - exact[small]) / np.maximum(np.abs(exact[small]), 1e-30)).max() < 4e-7  # relative
    assert np.abs(y).max() <= 1
    special = np.array([np.nan, np.inf, -np.inf, 0.0, 1e-30, 100.0], dtype=np.float32)
    out = np.empty_like(special)
    fast.tanh_array(special, out)
    assert np.isnan(out[0]) and list(out[1:]) == [1, -1, 0, np.float32(1e-30), 1]


@pytest.mark.parametrize("relu", [False, True])
def test_a_nan_stays_nan(relu):
    """As in NumPy: a diverged run must not go on with finite numbers made from NaN. 64 units, so
    that the vectorised loop (8 lanes) runs, not only its scalar tail."""
    a = np.linspace(-3, 3, 2 * 64, dtype=np.float32).reshape(2, 64)
    a[0, 5] = a[1, 40] = np.nan
    h = np.empty_like(a)
    fast.rnn_forward_step(a, np.zeros_like(a), h, relu)
    assert np.isnan(h[0, 5]) and np.isnan(h[1, 40]) and np.isfinite(h).sum() == h.size - 2


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_training_gives_the_same_losses(cell):
    losses = {}
    for name in ("numpy", "numba"):
        backend.use(name)
        trainer = small_trainer(TEN_NAMES_X3, "lines", cell, steps=15)
        losses[name] = np.array([trainer.train_step() for _ in range(15)])
    assert losses["numba"][-1] < losses["numba"][0]  # it learned
    np.testing.assert_allclose(losses["numba"], losses["numpy"], rtol=1e-4)


def test_the_environment_variable_chooses(monkeypatch):
    monkeypatch.setenv(backend.ENV, "numpy")
    assert backend.use() is None
    assert backend.describe(backend.active()) == "numpy (CHARRNN_BACKEND=numpy)"
    monkeypatch.setenv(backend.ENV, "numba")
    assert backend.use() is fast
    assert backend.describe(backend.active()) == f"numba {fast.VERSION} (fused cells)"
    monkeypatch.delenv(backend.ENV)
    assert backend.use() is fast  # installed, so chosen
    monkeypatch.setenv(backend.ENV, "cuda")
    with pytest.raises(CharrnnError, match="CHARRNN_BACKEND must be numpy or numba, not 'cuda'"):
        backend.use()


def test_only_training_runs_on_the_compiled_cells(monkeypatch):
    """A Trainer's steps and evaluations run on numba; everything else in the process stays
    NumPy (what `eval` computes must not depend on a training run before it), and a short
    `eval` or `sample --prime` would not win back the second that loading the kernels takes."""
    backend._active.clear()  # as a fresh process starts
    calls = []
    forward = fast.forward
    monkeypatch.setattr(fast, "forward", lambda *a: calls.append(a[0]) or forward(*a))
    trainer = small_trainer(TEN_NAMES_X3, "lines")
    assert trainer.fast is fast and trainer.backend == f"numba {fast.VERSION} (fused cells)"
    trainer.train_step()
    assert calls == ["lstm", "lstm"]  # two layers
    assert trainer.evaluate() is not None and len(calls) > 2
    n = len(calls)
    assert backend.active() is None
    model.forward(trainer.params, trainer.model_cfg, np.zeros((3, 2), dtype=np.int32))
    assert len(calls) == n  # NumPy
    backend.use("numpy")
    assert small_trainer(TEN_NAMES_X3, "lines").fast is None  # a choice made stands


def imports_numba(*code: str, **env: str) -> bool:
    """Whether a fresh Python running `code` (lines) ends with numba imported."""
    program = "\n".join([*code, "import sys; print('numba' in sys.modules)"])
    base = {k: v for k, v in ENV.items() if k != backend.ENV}
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120,
                         env=dict(base, **env), check=True).stdout
    return out.split()[-1] == "True"


FORWARD = ("import numpy as np; from charrnn import backend, model", "backend.use()",
           "cfg = model.ModelConfig(5, 'lstm', 8, 1); p = model.init_params(cfg, np.random.default_rng(0))",
           "model.forward(p, cfg, np.zeros((3, 2), dtype=np.int32))")


def test_forced_numpy_never_imports_numba():
    assert imports_numba(*FORWARD)  # the check can see it
    assert not imports_numba(*FORWARD, CHARRNN_BACKEND="numpy")


def test_start_up_does_not_import_numba(tmp_path, capsys, names_ckpt):
    """--help, --version, sampling, scoring (NumPy: see the test above) and inspect pay nothing for
    the extra; each command runs to its end (exit 0), so none of them is skipped by an error."""
    text = tmp_path / "t.txt"
    text.write_text("anna\nbob\n")
    for args in (["--help"], ["--version"], ["sample", str(names_ckpt), "-n", "1", "--prime", "an"],
                 ["eval", str(names_ckpt), str(text)], ["inspect", str(names_ckpt)]):
        assert not imports_numba("import contextlib, io", "from charrnn.cli import main",
                                 "with contextlib.redirect_stdout(io.StringIO()):",
                                 "    try:",
                                 f"        main({args!r})",
                                 "    except SystemExit as e:",
                                 "        assert e.code in (0, None), e.code"), args


def test_a_training_thread_leaves_other_threads_on_numpy():
    """The Python API may train in one thread while another scores or fills: those cells stay
    NumPy, and nothing is left on numba when the blocks end in any order."""
    backend._active.clear()
    inside, release = threading.Event(), threading.Event()

    def train():
        with backend.running_on(fast):
            assert backend.active() is fast
            inside.set()
            release.wait(10)

    worker = threading.Thread(target=train)
    worker.start()
    try:
        assert inside.wait(10)
        assert backend.active() is None  # this thread, while the other one trains
        with backend.running_on(None):  # interleaved: this block ends after the other one's
            release.set()
            worker.join(10)
            assert backend.active() is None
    finally:
        release.set()
        worker.join(10)
    assert backend.active() is None


def test_a_numba_that_fails_to_import_falls_back_to_numpy(monkeypatch):
    """numba raises RuntimeError at import when it has nowhere to write its cache (read-only
    package and home): training then runs NumPy, unless CHARRNN_BACKEND=numba asked for it."""
    import charrnn

    class Broken(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "charrnn.fast":
                raise RuntimeError("cannot cache function 'tanh_array': no locator available")
            return None

    monkeypatch.delitem(sys.modules, "charrnn.fast")
    monkeypatch.delattr(charrnn, "fast")
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    assert backend.load() is None
    monkeypatch.setenv(backend.ENV, "numba")
    with pytest.raises(CharrnnError, match="CHARRNN_BACKEND=numba, but numba does not import"):
        backend.load()


def test_float64_models_say_they_run_numpy(tmp_path, capsys, names_x4_file):
    backend._active.clear()
    c = small_trainer(TEN_NAMES_X3, "lines")
    cfg = model.ModelConfig(c.model_cfg.vocab_size, "lstm", 8, 1, dtype="float64")
    assert Trainer(c.corpus, cfg, c.cfg).backend == "numpy (float64 models always do)"
    ckpt = tmp_path / "m.npz"
    code, _, _ = run(capsys, "train", names_x4_file, "--out", ckpt, "--hidden-size", "8", "--steps", "2",
                     "--dtype", "float64")
    assert code == 0
    code, out, _ = run(capsys, "inspect", ckpt)
    assert "backend training here runs on numpy (float64 models always do)" in out
    assert "trained on numpy (float64 models always do)" in out.splitlines()


def test_the_training_summary_and_inspect_show_the_backend(tmp_path, capsys, names_x4_file, monkeypatch):
    backend._active.clear()  # as a fresh process starts: numba when it imports
    ckpt = tmp_path / "m.npz"
    code, out, _ = run(capsys, "train", names_x4_file, "--out", ckpt, "--hidden-size", "8", "--steps", "2")
    assert code == 0
    line = next(s for s in out.splitlines() if s.startswith("backend"))
    assert line == f"backend      numba {fast.VERSION} (fused cells)"
    code, out, _ = run(capsys, "inspect", ckpt)
    assert f"backend training here runs on numba {fast.VERSION} (fused cells)" in out
    assert f"trained on numba {fast.VERSION} (fused cells)" in out.splitlines()  # kept in the checkpoint
    code, as_json, _ = run(capsys, "inspect", ckpt, "--json")
    assert json.loads(as_json)["training"]["backend"] == f"numba {fast.VERSION} (fused cells)"
    assert max(map(len, out.splitlines())) <= 80
    monkeypatch.setenv(backend.ENV, "numpy")
    code, out, _ = run(capsys, "inspect", ckpt)
    assert "backend training here runs on numpy (CHARRNN_BACKEND=numpy)" in out


@pytest.mark.parametrize("cell,mode", [("lstm", "stream"), ("gru", "lines")])
def test_resume_is_bit_for_bit(tmp_path, capsys, good, cell, mode):
    """As tests/test_train.py's, on the compiled cells: one run of 10 steps, and one of 5
    steps resumed to 10, end with the same arrays."""
    backend.use("numba")
    text = good / ("names.txt" if mode == "lines" else "prose.txt")
    common = ["--mode", mode, "--cell", cell, "--hidden-size", "12", "--layers", "2", "--dropout", "0.2",
              "--seq-len", "16", "--batch-size", "4", "--eval-every", "5", "--quiet"]
    whole, halves = tmp_path / "whole.npz", tmp_path / "halves.npz"
    assert run(capsys, "train", text, "--out", whole, "--steps", "10", *common)[0] == 0
    assert run(capsys, "train", text, "--out", halves, "--steps", "5", *common)[0] == 0
    assert run(capsys, "train", text, "--resume", halves, "--steps", "10", "--quiet")[0] == 0
    assert backend.active() is fast  # the choice stood through all three runs
    a, b = arrays_of(whole), arrays_of(halves)
    assert set(a) == set(b)
    for k in a:
        if k.split(".")[0] in ("param", "opt", "state", "best", "history"):
            assert np.array_equal(a[k], b[k]), k
    ma, mb = (json.loads(x["meta"].tobytes()) for x in (a, b))
    assert ma["progress"] == mb["progress"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write to a read-only directory")
def test_kernels_are_cached_where_the_package_is_read_only(tmp_path):
    """numba writes compiled kernels next to fast.py, or in the user's cache where it cannot."""
    import shutil

    import charrnn

    pkg = tmp_path / "site" / "charrnn"
    shutil.copytree(os.path.dirname(charrnn.__file__), pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for d in (pkg, *pkg.rglob("*")):
        d.chmod(0o555 if d.is_dir() else 0o444)
    env = {"PYTHONPATH": str(tmp_path / "site"), "NUMBA_CACHE_DIR": "", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    try:
        for _ in range(2):  # compiles and saves, then loads
            assert imports_numba(*FORWARD, **env)
        assert not (pkg / "__pycache__").exists()
        assert list((tmp_path / "cache").rglob("*lstm_forward_step*.nbc"))
    finally:
        for d in (pkg, *pkg.rglob("*")):
            d.chmod(0o755)


def test_kernels_load_before_the_first_step_is_timed(monkeypatch):
    """A kernel's first call compiles or loads it (0.5-2 s). That must not fall on the first
    training steps, whose pace fits the automatic --eval-every to --time: a 30-second run once
    evaluated every 7 steps instead of every ~90 and trained a third as many steps."""
    backend.use("numba")
    tr = small_trainer(TEN_NAMES_X3, "lines", steps=30)
    tr.cfg.time_minutes, tr.auto_eval_every = 0.05, 200  # 3 s; steps of this model take ~2 ms
    calls = []

    def first_call_is_slow(*args, **kwargs):
        if not calls:
            time.sleep(1.0)  # what compiling or loading the kernels costs
        calls.append(1)
        return real(*args, **kwargs)

    real = fast.forward
    monkeypatch.setattr(fast, "forward", first_call_is_slow)
    tr.fit()
    assert len(calls) > 30  # the kernels ran
    assert tr.cfg.eval_every >= 20, f"the load was counted as a training step: --eval-every {tr.cfg.eval_every}"


def test_inspect_says_what_training_would_do(monkeypatch):
    """backend.planned, without importing numba, agrees with what a Trainer would run on."""
    assert backend.planned("float32") == f"numba {fast.VERSION} (fused cells)"
    assert backend.planned("float64") == "numpy (float64 models always do)"
    monkeypatch.setenv(backend.ENV, "numpy")
    assert backend.planned() == "numpy (CHARRNN_BACKEND=numpy)"
    monkeypatch.setenv(backend.ENV, "cuda")
    assert backend.planned() == "numpy (CHARRNN_BACKEND='cuda' is not numpy or numba: training would refuse it)"
    monkeypatch.setenv(backend.ENV, "numba")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # as where the extra is not installed
    assert backend.planned() == "numpy (CHARRNN_BACKEND=numba, but numba is not installed: training would refuse it)"


@pytest.mark.parametrize("n", [67, 300])  # the one-hot product and the sorting path of model.scatter_rows
def test_the_input_gradient_agrees(n):
    """The lookup layer's weight gradient (model.scatter_rows) as one compiled pass."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, n, 2048).astype(np.int32)
    ids[:5] = n - 1  # the last row gets some, and some rows none
    rows = rng.standard_normal((2048, 96)).astype(np.float32)
    want = model.scatter_rows(ids, rows, n)
    got = fast.scatter_rows(ids, rows, n)
    assert got.dtype == np.float32 and got.shape == (n, 96)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)
    backend.use("numba")
    np.testing.assert_array_equal(model.scatter_rows(ids, rows, n), got)  # the dispatch
    with pytest.raises(IndexError):
        fast.scatter_rows(np.array([0, n], dtype=np.int32), rows[:2], n)  # never past the end
    for bad in (ids[:3], np.zeros(0, np.int32), ids[:6].reshape(3, 2)):  # one id per row, or no reading past ids
        with pytest.raises(ValueError):
            fast.scatter_rows(bad, rows[:4], n)
