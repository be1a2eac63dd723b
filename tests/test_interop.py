"""`charrnn export` / `charrnn import` (charrnn.interop): the round trip is exact for every cell,
the tensors mean in PyTorch what the weights mean in charrnn (skipped without torch, as in CI),
and hostile or foreign files are refused with one `Error:` line."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import error_line, run

from charrnn import cells, checkpoint, interop, model
from charrnn.config import Mode, ModelConfig, TrainConfig
from charrnn.vocab import Vocab

ROOT = Path(__file__).resolve().parent.parent
CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]
VOCAB = Vocab("abcdefgh")  # V = 10
TEXT = "abc\nbad\ncafe\nhead\ngab\nface\ndeed\n" * 8


def make_checkpoint(path: Path, cell: str = "lstm", activation: str = "tanh", layers: int = 1,
                    dtype: str = "float32", mode: Mode = Mode.LINES, seed: int = 0) -> checkpoint.Checkpoint:
    """A small checkpoint whose best weights differ from its current ones and have non-zero biases."""
    cfg = ModelConfig(len(VOCAB), cell, 5, layers, activation, dtype=dtype)
    rng = np.random.default_rng(seed)
    params = model.init_params(cfg, rng)
    best = {k: (v + 0.3 * rng.standard_normal(v.shape)).astype(dtype) for k, v in params.items()}
    meta = checkpoint.Meta(mode=mode, source="toy.txt", train=TrainConfig(seq_len=12))
    ck = checkpoint.Checkpoint(cfg, VOCAB, params, best, meta=meta)
    checkpoint.save(path, ck)
    return ck


def exported(tmp_path: Path, capsys, **kw) -> tuple[Path, checkpoint.Checkpoint]:
    ck = make_checkpoint(tmp_path / "model.npz", **kw)
    code, _, err = run(capsys, "export", tmp_path / "model.npz", tmp_path / "model.safetensors")
    assert code == 0, err
    return tmp_path / "model.safetensors", ck


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("cell,activation", CELLS)
def test_export_then_import_gives_the_same_weights_and_samples(tmp_path, capsys, cell, activation, layers, dtype):
    path, ck = exported(tmp_path, capsys, cell=cell, activation=activation, layers=layers, dtype=dtype)
    code, _, err = run(capsys, "import", path, "--out", tmp_path / "back.npz")
    assert code == 0, err
    back = checkpoint.load(tmp_path / "back.npz")
    assert back.cfg == ck.cfg and back.vocab == ck.vocab and back.meta.mode == ck.meta.mode
    assert back.meta.source == "toy.txt" and back.meta.stop_reason == "imported from model.safetensors"
    assert back.opt == {} and len(back.train_losses) == 0 and back.meta.train.seq_len == 12
    assert ck.best is not None
    for name, a in ck.best.items():
        assert back.sampling_params[name].dtype == a.dtype and np.array_equal(back.sampling_params[name], a), name
    samples = [run(capsys, "sample", tmp_path / f, "-n", "3", "--seed", "1") for f in ("model.npz", "back.npz")]
    assert samples[0][0] == 0 and samples[0][1] == samples[1][1] and samples[0][1].count("\n") == 3


def test_tensor_names_shapes_and_gate_order():
    cfg = ModelConfig(len(VOCAB), "lstm", 5, 2)
    params = model.init_params(cfg, np.random.default_rng(0))
    t = interop.to_torch(params, cfg)
    assert {k: v.shape for k, v in t.items()} == {
        "weight_ih_l0": (20, 10), "weight_hh_l0": (20, 5), "bias_ih_l0": (20,), "bias_hh_l0": (20,),
        "weight_ih_l1": (20, 5), "weight_hh_l1": (20, 5), "bias_ih_l1": (20,), "bias_hh_l1": (20,),
        "out.weight": (10, 5), "out.bias": (10,)}
    H = 5  # charrnn [i, f, o, g] -> PyTorch [i, f, g, o]: blocks 2 and 3 swap, as PyTorch's docs order them
    assert np.array_equal(t["weight_hh_l1"][2 * H : 3 * H], params["W_h1"][:, 3 * H :].T)
    assert np.array_equal(t["bias_ih_l0"][:H], params["b0"][:H])
    reverse = model.Layer(1, "gru", 5, 5, reverse=True)
    assert interop.layer_names(reverse)["weight_hh"] == "weight_hh_l1_reverse"


def test_recurrent_biases_fold_into_one():
    cfg = ModelConfig(len(VOCAB), "gru", 4, 1)
    t = interop.to_torch(model.init_params(cfg, np.random.default_rng(0)), cfg)
    t["bias_hh_l0"][: 2 * 4] = 0.5  # r and u: representable
    p = interop.from_torch(t, cfg)
    assert np.array_equal(p["b0"][: 2 * 4], t["bias_ih_l0"][: 2 * 4] + np.float32(0.5))


def test_sample_does_not_import_safetensors():
    code = "import sys, charrnn.cli, charrnn.commands; assert 'safetensors' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_resuming_an_imported_checkpoint_says_the_optimizer_starts_fresh(tmp_path, capsys):
    path, _ = exported(tmp_path, capsys)
    assert run(capsys, "import", path, "--out", tmp_path / "back.npz")[0] == 0
    (tmp_path / "toy.txt").write_text(TEXT)
    code, _, err = run(capsys, "train", tmp_path / "toy.txt", "--resume", tmp_path / "back.npz", "--steps", "1", "-q")
    assert code == 0, err
    assert "Note: the checkpoint has no optimizer state" in err and "adam starts fresh" in err


def test_export_refuses_to_overwrite_other_files(tmp_path, capsys):
    make_checkpoint(tmp_path / "model.npz")
    (tmp_path / "notes.txt").write_text("keep me")
    code, _, err = run(capsys, "export", tmp_path / "model.npz", tmp_path / "notes.txt")
    assert code == 1 and err.startswith("Error: ") and "not a .safetensors file" in err
    assert (tmp_path / "notes.txt").read_text() == "keep me"



@pytest.mark.hostile(1)
def test_export_replaces_only_its_own_exports(tmp_path, capsys):
    """#18 class 1 for exports: a .safetensors name is not enough; the file must be a charrnn export."""
    import safetensors.numpy

    make_checkpoint(tmp_path / "model.npz")
    text = tmp_path / "text.safetensors"
    text.write_text("keep me")
    other = tmp_path / "other.safetensors"
    safetensors.numpy.save_file({"w": np.ones(3, np.float32)}, str(other), metadata={"format": "pt"})
    kept = other.read_bytes()
    for target in (text, other):
        code, _, err = run(capsys, "export", tmp_path / "model.npz", target)
        assert error_line(code, err) == f"Error: {target}: refusing to overwrite a file that is not a charrnn " \
                                        "export; choose another OUT"
    assert text.read_text() == "keep me" and other.read_bytes() == kept
    ours = tmp_path / "ours.safetensors"
    assert run(capsys, "export", tmp_path / "model.npz", ours)[0] == 0
    assert run(capsys, "export", tmp_path / "model.npz", ours)[0] == 0  # an export of ours: replaced
    ours.chmod(0o444)
    code, _, err = run(capsys, "export", tmp_path / "model.npz", ours)
    assert error_line(code, err) == f"Error: {ours}: refusing to overwrite a write-protected file; choose another OUT"


# ---------------------------------------------------------------- hostile files


def save_tensors(path: Path, tensors: dict[str, np.ndarray], meta: dict[str, str]) -> Path:
    from safetensors.numpy import save_file

    save_file(tensors, str(path), metadata=meta)
    return path


def good_parts(cell: str = "lstm") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    cfg = ModelConfig(len(VOCAB), cell, 5, 1)
    export = interop.Export(cfg, VOCAB, Mode.LINES, checkpoint.Objective.NEXT, "toy.txt", 12)
    return interop.to_torch(model.init_params(cfg, np.random.default_rng(0)), cfg), interop.metadata(export)


def hostile(name: str, tmp_path: Path) -> Path:
    p = tmp_path / f"{name}.safetensors"
    t, meta = good_parts("gru" if name == "gru_n_bias" else "lstm")
    if name == "truncated":
        save_tensors(p, t, meta)
        p.write_bytes(p.read_bytes()[:-100])
    elif name == "random_bytes":
        p.write_bytes(np.random.default_rng(0).bytes(2000))
    elif name == "not_json":
        p.write_bytes(struct.pack("<Q", 100) + np.random.default_rng(0).bytes(100))
    elif name == "huge_header":
        p.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    elif name == "wrong_shape":
        t["weight_hh_l0"] = np.zeros((20, 6), np.float32)
    elif name == "wrong_dtype":
        t["out.weight"] = t["out.weight"].astype(np.float64)
    elif name == "missing_out_bias":
        del t["out.bias"]
    elif name == "extra_tensor":
        t["weight_ih_l1"] = np.zeros((20, 5), np.float32)
    elif name == "nan":
        t["weight_ih_l0"][3, 2] = np.nan
    elif name == "gru_n_bias":
        t["bias_hh_l0"][-1] = 0.25  # the last block is n
    elif name == "no_vocab":
        del meta["vocab"]
    elif name == "unknown_cell":
        meta["model"] = meta["model"].replace('"lstm"', '"transformer"')
    elif name == "no_metadata":
        meta = {}
    elif name == "head_in_version_1":  # a charrnn before heads would read this file without its head
        meta["model"] = meta["model"].replace('"batch_first"', '"head_size": 4, "batch_first"')
    elif name == "trailing_data":
        save_tensors(p, t, meta)
        p.write_bytes(p.read_bytes() + b"\0" * 64)
    if not p.exists():
        save_tensors(p, t, meta)
    return p


HOSTILE = {
    "truncated": "truncated", "random_bytes": "hostile one", "not_json": "not JSON", "huge_header": "1,099,511,627,776",
    "wrong_shape": "weight_hh_l0 has shape [20, 6], the config says [20, 5]",
    "wrong_dtype": "out.weight is F64, the config says float32", "missing_out_bias": "missing tensor out.bias",
    "extra_tensor": "unexpected tensor weight_ih_l1", "nan": "weight_ih_l0 has NaN",
    "gru_n_bias": "recurrent bias of n is not zero", "no_vocab": "no 'vocab' in the metadata",
    "unknown_cell": "unknown cell 'transformer'", "no_metadata": "format marker", "trailing_data": "trailing data",
    "head_in_version_1": "model.head_size is 4",
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_files_are_refused_with_one_error_line(tmp_path, capsys, name):
    p = hostile(name, tmp_path)
    code, out, err = run(capsys, "import", p, "--out", tmp_path / "x.npz")
    assert code == 1 and out == ""
    assert err.startswith(f"Error: {p}: ") and err.count("\n") == 1, err
    assert HOSTILE[name] in err, err
    assert not (tmp_path / "x.npz").exists()


# ---------------------------------------------------------------- PyTorch (skipped where torch is missing)


def torch_model(tensors: dict[str, np.ndarray], cfg: ModelConfig):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)  # tiny matrices: on a busy machine extra threads only wait on each other (seconds)
    kind = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cfg.cell]
    extra = {"nonlinearity": cfg.activation} if cfg.cell == "rnn" else {}
    rnn = kind(cfg.vocab_size, cfg.hidden_size, cfg.layers, batch_first=False, **extra)
    out = torch.nn.Linear(cfg.hidden_size, cfg.vocab_size)
    dtype = getattr(torch, cfg.dtype)
    rnn.to(dtype).load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items() if not k.startswith("out.")})
    out.to(dtype).load_state_dict({"weight": torch.from_numpy(tensors["out.weight"]),
                                   "bias": torch.from_numpy(tensors["out.bias"])})
    return rnn, out


def max_logit_difference(cell: str, activation: str, dtype: str, layers: int = 2, chunks: int = 2) -> float:
    """Largest |logit| difference between PyTorch and charrnn on 500 characters read in `chunks`
    pieces with the state carried, with non-zero (representable) recurrent biases in PyTorch."""
    torch = pytest.importorskip("torch")
    cfg = ModelConfig(len(VOCAB), cell, 16, layers, activation, dtype=dtype)
    rng = np.random.default_rng(1)
    params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in model.init_params(cfg, rng).items()}
    if activation == "relu":  # an identity recurrence plus noise grows without bound over 500 steps
        params.update({k: v * 0.5 for k, v in params.items() if k.startswith("W_h")})
    tensors = interop.to_torch(params, cfg)
    for name in tensors:
        if name.startswith("bias_hh"):
            tensors[name] = rng.standard_normal(tensors[name].shape).astype(dtype)
            if cell == "gru":
                tensors[name][2 * 16 :] = 0  # n: charrnn has no such bias
    params = interop.from_torch(tensors, cfg)
    rnn, out = torch_model(tensors, cfg)
    x = rng.integers(0, cfg.vocab_size, size=(500, 3))  # (T, B)
    state, t_state, worst = None, None, 0.0
    with torch.no_grad():
        for piece in np.array_split(x, chunks):
            fwd = model.forward(params, cfg, piece, state)
            state = fwd.state
            onehot = torch.nn.functional.one_hot(torch.from_numpy(piece), cfg.vocab_size).to(getattr(torch, dtype))
            h, t_state = rnn(onehot, t_state)
            worst = max(worst, float(np.abs(out(h).numpy() - fwd.logits).max()))
    return worst


@pytest.mark.parametrize("cell,activation", CELLS)
def test_pytorch_computes_the_same_logits(cell, activation):
    assert max_logit_difference(cell, activation, "float32") < 1e-5
    assert max_logit_difference(cell, activation, "float64") < 1e-12


def test_pytorch_ddp_training_step_imports_back(tmp_path, capsys):
    pytest.importorskip("torch")
    path, _ = exported(tmp_path, capsys, cell="gru", mode=Mode.LINES)
    (tmp_path / "toy.txt").write_text(TEXT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "examples" / "torch_train.py"), str(tmp_path / "toy.txt"), "--init", str(path), "--steps", "2",
           "--batch-size", "2", "--seq-len", "8", "--out", str(tmp_path / "trained.safetensors")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "step      2  loss" in r.stdout
    code, _, err = run(capsys, "import", tmp_path / "trained.safetensors", "--out", tmp_path / "trained.npz")
    assert code == 0, err  # the GRU's recurrent n bias stayed zero
    before, after = checkpoint.load(tmp_path / "model.npz"), checkpoint.load(tmp_path / "trained.npz")
    assert after.cfg == before.cfg and after.vocab == before.vocab
    assert before.best is not None and not np.array_equal(after.params["W_h0"], before.best["W_h0"])  # it trained
    meta = json.loads(interop.metadata(interop.Export(after.cfg, after.vocab, after.meta.mode, after.meta.objective,
                                                      after.meta.source, after.meta.train.seq_len))["data"])
    assert meta == {"mode": "lines", "objective": "next", "source": "toy.txt", "seq_len": 12}


# ---------------------------------------------------------------- bidirectional models


def bidirectional_checkpoint(path: Path, cell: str, activation: str) -> checkpoint.Checkpoint:
    cfg = ModelConfig(len(VOCAB), cell, 5, 2, activation, bidirectional=True)
    rng = np.random.default_rng(2)
    params = {k: v + 0.2 * rng.standard_normal(v.shape).astype(v.dtype) for k, v in model.init_params(cfg, rng).items()}
    meta = checkpoint.Meta(mode=Mode.LINES, objective=cfg.objective, source="toy.txt", train=TrainConfig(seq_len=12))
    ck = checkpoint.Checkpoint(cfg, VOCAB, params, dict(params), meta=meta)
    checkpoint.save(path, ck)
    return ck


@pytest.mark.parametrize("cell,activation", CELLS)
def test_bidirectional_export_is_pytorchs_bidirectional_layout_and_comes_back(tmp_path, capsys, cell, activation):
    ck = bidirectional_checkpoint(tmp_path / "bi.npz", cell, activation)
    code, out, err = run(capsys, "export", tmp_path / "bi.npz", tmp_path / "bi.safetensors")
    assert code == 0 and "bidirectional=True" in out, err
    tensors = interop.read_file(tmp_path / "bi.safetensors")[1]
    assert set(tensors) == set(ck.params)  # back in charrnn's names: W_x0_rev ...
    code, _, err = run(capsys, "import", tmp_path / "bi.safetensors", "--out", tmp_path / "back.npz")
    assert code == 0, err
    back = checkpoint.load(tmp_path / "back.npz")
    assert back.cfg == ck.cfg and back.meta.objective == ck.meta.objective and back.format_version == 2
    for name, a in ck.params.items():
        assert np.array_equal(back.sampling_params[name], a), name
    fills = [run(capsys, "fill", tmp_path / f, "b_d", "--top", "3", "--json") for f in ("bi.npz", "back.npz")]
    assert fills[0][0] == 0 and fills[0][1] == fills[1][1]


def test_pytorch_example_refuses_a_bidirectional_export_by_name(tmp_path, capsys):
    """examples/torch_train.py trains forward models: a bidirectional --init is refused in words, not
    with load_state_dict's unexpected keys or a misleading "not a charrnn export"."""
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    import importlib.util

    bidirectional_checkpoint(tmp_path / "bi.npz", "lstm", "tanh")
    code, _, err = run(capsys, "export", tmp_path / "bi.npz", tmp_path / "bi.safetensors")
    assert code == 0, err
    spec = importlib.util.spec_from_file_location("torch_train", ROOT / "examples" / "torch_train.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    with pytest.raises(SystemExit, match="a bidirectional model; this example trains forward models only"):
        example.load(tmp_path / "bi.safetensors")
    path, _ = exported(tmp_path, capsys, cell="gru")
    meta, net = example.load(path)  # a forward export still loads
    assert meta["format_version"] == "1" and net.rnn.bidirectional is False


@pytest.mark.parametrize("cell,activation", CELLS)
def test_pytorch_bidirectional_computes_the_same_logits(cell, activation):
    """nn.LSTM/GRU/RNN(bidirectional=True) on one-hot inputs of V + 1 (the last is <MASK>) gives
    charrnn's logits, with <MASK> among the inputs."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    cfg = ModelConfig(len(VOCAB), cell, 16, 2, activation, bidirectional=True)
    rng = np.random.default_rng(3)
    params = {k: v + 0.1 * rng.standard_normal(v.shape).astype(v.dtype) for k, v in model.init_params(cfg, rng).items()}
    if activation == "relu":
        params.update({k: v * 0.5 for k, v in params.items() if k.startswith("W_h")})
    tensors = interop.to_torch(params, cfg)
    assert tensors["weight_ih_l1_reverse"].shape == (16 * cells.GATES[cell], 32)  # reads [h→; h←]
    kind = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    extra = {"nonlinearity": activation} if cell == "rnn" else {}
    rnn = kind(len(VOCAB) + 1, 16, 2, bidirectional=True, **extra)
    rnn.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items() if not k.startswith("out.")})
    out = torch.nn.Linear(32, len(VOCAB))
    out.load_state_dict({"weight": torch.from_numpy(tensors["out.weight"]),
                         "bias": torch.from_numpy(tensors["out.bias"])})
    x = rng.integers(0, len(VOCAB) + 1, size=(60, 3))  # (T, B), <MASK> (id V) among them
    with torch.no_grad():
        h, _ = rnn(torch.nn.functional.one_hot(torch.from_numpy(x), len(VOCAB) + 1).float())
        theirs = out(h).numpy()
    assert np.abs(theirs - model.forward(params, cfg, x).logits).max() < 1e-5


@pytest.mark.parametrize("layers,head", [(1, 0), (2, 0), (1, 7)])
@pytest.mark.parametrize("cell,activation", CELLS)
def test_pytorch_computes_the_same_neighbors_logits(cell, activation, layers, head):
    """The neighbors objective written in PyTorch, from charrnn's weights: one nn.LSTM/GRU/RNN stack
    per direction (the right-to-left one on the flipped text), and nn.Linear on [h→_{t-1} ; h←_{t+1}]
    (through nn.Linear and tanh first, with a head)."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    cfg = ModelConfig(len(VOCAB), cell, 16, layers, activation, bidirectional=True, objective="neighbors",
                      head=head)
    rng = np.random.default_rng(4)
    params = {k: v + 0.1 * rng.standard_normal(v.shape).astype(v.dtype) for k, v in model.init_params(cfg, rng).items()}
    if activation == "relu":
        params.update({k: v * 0.5 for k, v in params.items() if k.startswith("W_h")})
    tensors = interop.to_torch(params, cfg)
    kind = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    extra = {"nonlinearity": activation} if cell == "rnn" else {}
    stacks = [kind(len(VOCAB) + 1, 16, layers, **extra) for _ in range(2)]
    for k, rnn in enumerate(stacks):  # layer l of direction k: its tensors without the _reverse suffix
        own = {n.replace("_reverse", ""): v for n, v in tensors.items()
               if not n.startswith(("out.", "head.")) and n.endswith("_reverse") == (k == 1)}
        rnn.load_state_dict({n: torch.from_numpy(v) for n, v in own.items()})
    x = rng.integers(0, len(VOCAB) + 1, size=(40, 3))  # (T, B), <MASK> (id V) among them
    with torch.no_grad():
        x1 = torch.nn.functional.one_hot(torch.from_numpy(x), len(VOCAB) + 1).float()
        right, left = stacks[0](x1)[0], stacks[1](x1.flip(0))[0].flip(0)
        zero = torch.zeros(1, 3, 16)
        s = torch.cat([torch.cat([zero, right[:-1]]), torch.cat([left[1:], zero])], dim=2)
        if head:
            s = torch.tanh(s @ torch.from_numpy(tensors["head.weight"]).T + torch.from_numpy(tensors["head.bias"]))
        theirs = (s @ torch.from_numpy(tensors["out.weight"]).T + torch.from_numpy(tensors["out.bias"])).numpy()
    assert np.abs(theirs - model.forward(params, cfg, x).logits).max() < 1e-5


@pytest.mark.parametrize("head", [0, 4])
def test_a_neighbors_model_exports_with_one_layer_and_says_why_not_with_more(tmp_path, capsys, head):
    for layers in (2, 1):
        cfg = ModelConfig(len(VOCAB), "gru", 5, layers, bidirectional=True, objective="neighbors", head=head)
        params = model.init_params(cfg, np.random.default_rng(2))  # the 1-layer model's, after the loop
        meta = checkpoint.Meta(mode=Mode.LINES, objective=cfg.objective, source="toy.txt",
                               train=TrainConfig(seq_len=12))
        checkpoint.save(tmp_path / f"n{layers}.npz", checkpoint.Checkpoint(cfg, VOCAB, params, dict(params), meta=meta))
    code, out, err = run(capsys, "export", tmp_path / "n1.npz", tmp_path / "n1.safetensors")
    assert code == 0 and "bidirectional=True" in out and "h→ at t-1" in out, err
    assert ("nn.Linear(10, 4) as 'head', tanh + nn.Linear(4, " in out) == bool(head)
    header = interop.read_header(tmp_path / "n1.safetensors")[0]["__metadata__"]
    assert header["format_version"] == ("2" if head else "1")  # a charrnn before heads still reads those without
    code, _, err = run(capsys, "import", tmp_path / "n1.safetensors", "--out", tmp_path / "back.npz")
    back = checkpoint.load(tmp_path / "back.npz")
    assert code == 0 and back.cfg.objective.value == "neighbors" and back.format_version == (4 if head else 3)
    assert back.cfg.head == head
    assert set(back.params) == set(params)
    assert all(np.array_equal(back.sampling_params[k], v) for k, v in params.items())
    code, _, err = run(capsys, "export", tmp_path / "n2.npz", tmp_path / "n2.safetensors")
    assert "separate stacks" in error_line(code, err) and not (tmp_path / "n2.safetensors").exists()
    two = checkpoint.load(tmp_path / "n2.npz")  # such a file made by hand is refused on import too
    export = interop.Export(two.cfg, VOCAB, Mode.LINES, two.cfg.objective, "toy.txt", 12)
    interop.write_file(tmp_path / "n2.safetensors", interop.to_torch(two.params, two.cfg), interop.metadata(export))
    code, _, err = run(capsys, "import", tmp_path / "n2.safetensors", "--out", tmp_path / "n2back.npz")
    assert "separate stacks" in error_line(code, err) and not (tmp_path / "n2back.npz").exists()


@pytest.mark.hostile(1)
def test_import_and_show_html_never_replace_other_files(tmp_path, capsys):
    path, _ = exported(tmp_path, capsys)
    trained = tmp_path / "model.npz"  # the checkpoint it was exported from: must survive
    before = trained.read_bytes()
    code, _, err = run(capsys, "import", path, "--out", trained)
    assert "already exists" in error_line(code, err) and trained.read_bytes() == before
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    code, _, err = run(capsys, "show", trained, "--text", "abc", "--html", notes)
    assert "not an .html page" in error_line(code, err) and notes.read_text() == "mine"


def test_export_is_written_with_the_users_umask(tmp_path, capsys):
    import os

    make_checkpoint(tmp_path / "model.npz")
    old = os.umask(0o022)
    try:
        code, _, err = run(capsys, "export", tmp_path / "model.npz", tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert code == 0, err
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o644
