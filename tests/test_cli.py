"""The CLI as a user runs it: `charrnn.cli.main(argv)` in process, output captured. Each
command end to end, what it prints, exit codes, one-line errors for bad options and usage,
--help, `python -m charrnn`, and what `charrnn sample` imports at start-up.

What the commands do in depth is in the file of their subject: test_train.py (resume),
test_sample.py, test_checkpoint.py, test_text_input.py, test_signals.py."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import TINY_H16_12STEPS, error_line, run

from charrnn import checkpoint, data, sample
from charrnn.config import plural
from charrnn.errors import CharrnnError
from charrnn.model import ModelConfig
from charrnn.trainer import TrainConfig

# ---------------------------------------------------------------- each command


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("mode", ["lines", "stream"])
def test_train_each_cell_and_mode_then_sample(tmp_path, capsys, names_x4_file, prose_file, cell, mode):
    text = names_x4_file if mode == "lines" else prose_file
    out = tmp_path / f"{cell}-{mode}.npz"
    code, stdout, err = run(capsys, "train", text, "--out", out, "--cell", cell, "--mode", mode, *TINY_H16_12STEPS)
    assert code == 0, err
    ck = checkpoint.load(out)
    assert ck.cfg.cell == cell and ck.meta.mode == mode and ck.meta.progress.step == 12
    code, stdout, err = run(capsys, "sample", out, "-n", 3, "--length", 40, "--seed", 1)
    assert code == 0, err
    lines = stdout.rstrip("\n").split("\n")
    if mode == "lines":
        assert len(lines) == 3 and all(len(s) <= 40 for s in lines)
    else:
        assert re.findall(r"^=== sample (\d) of 3 ===$", stdout, re.M) == ["1", "2", "3"]


def test_train_prints_config_and_progress(tmp_path, capsys, names_x4_file):
    code, stdout, err = run(capsys, "train", names_x4_file, "--out", tmp_path / "m.npz", "--hidden-size", "8",
                            "--steps", "4", "--eval-every", "2")
    assert code == 0
    assert "lines mode" in stdout and "21 (19 chars + <UNK> + <EOS>)" in stdout
    assert "parameters" in stdout and "saved" in stdout
    assert "step      2" in err and "val" in err


def test_default_output_path_is_stem_in_cwd(tmp_path, capsys, names_x4_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "train", names_x4_file, *TINY_H16_12STEPS)
    assert code == 0, err
    assert (tmp_path / "names.npz").exists()


def test_inspect_rich_and_json(capsys, names_ckpt):
    code, out, _ = run(capsys, "inspect", names_ckpt)
    assert code == 0
    for word in ("lstm", "vocabulary 21", "W_h0", "matches the textbook formula", "best val", "loss"):
        assert word in out
    code, out, _ = run(capsys, "inspect", names_ckpt, "--json")
    s = json.loads(out)
    assert s["vocab"]["size"] == 21
    assert s["parameters"]["total"] == s["parameters"]["textbook_total"]
    assert s["parameters"]["arrays"]["W_h0"]["shape"] == [16, 64]
    assert s["training"]["steps"] == 12 and len(s["training"]["history"]["val"]) == 2
    assert s["training"]["best_val_loss"] == pytest.approx(min(v for _, v in s["training"]["history"]["val"]))
    assert s["config"]["model"]["cell"] == "lstm"


def test_eval_json(tmp_path, capsys, names_ckpt):
    held = tmp_path / "held.txt"
    held.write_text("anna\nzoë\n")
    code, out, err = run(capsys, "eval", names_ckpt, held, "--json")
    assert code == 0, err
    r = json.loads(out)
    assert set(r) >= {"loss", "bits_per_char", "perplexity", "chars", "unk_chars"}
    assert r["unk_chars"] == 2 and r["chars"] == 9  # 7 letters + 2 <EOS>
    assert r["bits_per_char"] == pytest.approx(r["loss"] / np.log(2))
    assert r["perplexity"] == pytest.approx(np.exp(r["loss"]))
    code, out, _ = run(capsys, "eval", names_ckpt, held)
    assert code == 0 and "nats/char" in out and "perplexity" in out


# ---------------------------------------------------------------- user errors: one line, exit code 1 or 2


@pytest.mark.parametrize("args,message", [
    (["train", "missing.txt"], "Error: missing.txt: no such file"),
    (["sample", "missing.npz"], "Error: missing.npz: no such file"),
    (["train", "{names}", "--cell", "transformer"], "Error: --cell must be one of rnn, gru, lstm, not 'transformer'"),
    (["sample", "{ckpt}", "--top-p", "1.5"], "Error: --top-p must be in (0, 1], not 1.5"),
    (["sample", "{ckpt}", "--temperature", "-1"], "Error: --temperature must be 0 or more, not -1.0"),
    (["train", "{names}", "--val-fraction", "1"], "Error: --val-fraction must be in [0, 1), not 1.0"),
    (["train", "{names}", "--dropout", "1"], "Error: --dropout must be in [0, 1), not 1.0"),
    (["train", "{names}", "--hidden-size", "-3"], "Error: --hidden-size must be at least 1, not -3"),
    (["eval", "{ckpt}", "{names}", "--encoding", "no-such-codec"], "Error: unknown encoding 'no-such-codec'"),
    (["inspect", "{names}"], "Error: {names}: not a usable charrnn checkpoint"),
])
def test_user_errors_are_one_line(capsys, names_x4_file, names_ckpt, args, message):
    args = [a.format(names=names_x4_file, ckpt=names_ckpt) for a in args]
    code, out, err = run(capsys, *args)
    assert code in (1, 2)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message.format(names=names_x4_file)), err
    assert "Traceback" not in err
    if message.startswith("Error: --"):  # an option value that cannot work is a usage error
        assert code == 2, (code, err)


@pytest.mark.parametrize("args", [["train", "--bogus"], ["sample"], ["frobnicate"], ["eval", "only-one-arg.npz"],
                                  ["inspect", "a.npz", "b.npz"]])
def test_usage_errors_are_one_line(capsys, args):
    code, _, err = run(capsys, *args)
    error_line(code, err)


# ---------------------------------------------------------------- bad options, refused by name before any work


BAD_TRAIN_OPTIONS = [
    (["--hidden-size", "-1"], "--hidden-size"),
    (["--layers", "0"], "--layers"),
    (["--batch-size", "-5"], "--batch-size"),
    (["--seq-len", "0"], "--seq-len"),
    (["--steps", "-1"], "--steps"),
    (["--epochs", "-2"], "--epochs"),
    (["--time", "-1"], "--time"),
    (["--eval-every", "0"], "--eval-every"),
    (["--patience", "-1"], "--patience"),
    (["--min-count", "0"], "--min-count"),
    (["--max-vocab", "-1"], "--max-vocab"),
    (["--clip", "-1"], "--clip"),
    (["--cell", "transformer"], "--cell"),
    (["--mode", "words"], "--mode"),
    (["--optimizer", "lbfgs"], "--optimizer"),
    (["--dtype", "float16"], "--dtype"),
    (["--seed", "-1"], "--seed"),
    (["--lr", "abc"], "--lr"),
    (["--val-fraction", "1"], "Error: --val-fraction must be in [0, 1), not 1.0"),
    (["--val-fraction", "-0.1"], "--val-fraction"),
    (["--dropout", "1"], "Error: --dropout must be in [0, 1), not 1.0"),
    (["--dropout", "-0.5"], "--dropout"),
    (["--lr", "0"], "Error: --lr must be positive, not 0.0"),
    (["--lr", "-1"], "--lr"),
    (["--lr", "inf"], "Error: --lr must be positive, not inf"),
    (["--lr", "nan"], "--lr"),
    (["--lr-decay", "0"], "Error: --lr-decay must be in (0, 1], not 0.0"),
    (["--encoding", "no-such-codec"], "Error: unknown encoding 'no-such-codec'"),
    (["--errors", "sloppy"], "--errors"),
]


@pytest.mark.parametrize("args,expected", BAD_TRAIN_OPTIONS, ids=lambda a: " ".join(a) if isinstance(a, list) else "")
def test_train_refuses_bad_options_by_name_before_reading(tmp_path, capsys, monkeypatch, names_x3_file, args, expected):
    def no_work(*a, **k):
        raise AssertionError("the text was read before the options were checked")

    monkeypatch.setattr(data, "read_text", no_work)
    code, _, err = run(capsys, "train", names_x3_file, "--out", tmp_path / "m.npz", *args)
    line = error_line(code, err)
    assert line.startswith(expected) if expected.startswith("Error:") else expected in line
    assert not (tmp_path / "m.npz").exists()


BAD_SAMPLE_OPTIONS = [
    (["--top-p", "1.5"], "--top-p"),
    (["--top-p", "0"], "Error: --top-p must be in (0, 1], not 0.0"),
    (["--top-p", "-1"], "--top-p"),
    (["--top-p", "nan"], "--top-p"),
    (["--temperature", "-1"], "--temperature"),
    (["--temperature", "inf"], "Error: --temperature must be 0 or more, not inf"),
    (["--temperature", "nan"], "--temperature"),
    (["--top-k", "-1"], "--top-k"),
    (["-n", "0"], "--num"),
    (["--length", "0"], "--length"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "x"], "--seed"),
]


@pytest.mark.parametrize("args,expected", BAD_SAMPLE_OPTIONS, ids=lambda a: " ".join(a) if isinstance(a, list) else "")
def test_sample_refuses_bad_options_by_name_before_loading(capsys, monkeypatch, good, args, expected):
    def no_work(*a, **k):
        raise AssertionError("the checkpoint was loaded before the options were checked")

    monkeypatch.setattr(checkpoint, "load", no_work)
    code, _, err = run(capsys, "sample", good / "names.npz", *args)
    line = error_line(code, err)
    assert line.startswith(expected) if expected.startswith("Error:") else expected in line


def test_bad_configs_are_refused_by_name():
    with pytest.raises(CharrnnError, match="--cell"):
        ModelConfig(10, "transformer")
    with pytest.raises(CharrnnError, match="--hidden-size"):
        ModelConfig(10, "lstm", -1)
    with pytest.raises(CharrnnError, match="--val-fraction"):
        TrainConfig(val_fraction=1.0).check()
    with pytest.raises(CharrnnError, match="--top-p"):
        sample.check_options(1.0, 0, 1.5)


# ---------------------------------------------------------------- help, entry point, start-up


def test_every_command_has_help_with_an_example(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("train", "sample", "inspect", "eval"):
        assert command in out
        code, out_c, _ = run(capsys, command, "--help")
        assert code == 0 and "Example: charrnn" in out_c and "--help" in out_c


def test_module_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "charrnn", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "sample" in r.stdout


def test_sample_imports_only_what_sampling_needs(names_ckpt):
    """Start-up is part of every `charrnn sample`: no training code, no numpy.ma (np.isin), no rich, and
    no pydantic (typer's coercion: a plain command line is read by cli.quick_parse)."""
    probe = ("import sys; from charrnn.cli import main\n"
             "sys.argv = ['charrnn', 'sample', sys.argv[1], '-n', '2', '--temperature=0.5', '--allow-seen']\n"
             "try: main()\nexcept SystemExit: pass\n"
             "print(sorted(m for m in ('charrnn.trainer', 'charrnn.data', 'numpy.ma', 'tqdm', 'rich', 'pydantic')\n"
             "             if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", probe, str(names_ckpt)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.hostile(5)
def test_version_and_short_help(capsys):
    from charrnn import __version__

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"charrnn {__version__}"
    code, out, _ = run(capsys, "train", "-h")
    assert code == 0 and "--bidirectional" in out and "Example: charrnn train" in out


def test_checkpoints_are_written_with_the_users_umask(tmp_path, capsys, names_x4_file):
    import os

    old = os.umask(0o027)
    try:
        code, _, err = run(capsys, "train", names_x4_file, "--out", tmp_path / "m.npz", *TINY_H16_12STEPS)
    finally:
        os.umask(old)
    assert code == 0, err
    assert (tmp_path / "m.npz").stat().st_mode & 0o777 == 0o640


def test_blas_threads_default_to_one_and_follow_threads(tmp_path, names_x4_file):
    from charrnn.cli import blas_threads

    assert blas_threads(["sample", "x.npz"]) == 1 and blas_threads(["train", "t", "--threads", "4"]) == 4
    assert blas_threads(["train", "t", "--threads=3"]) == 3 and blas_threads(["train", "t", "--threads", "x"]) == 1
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                            "MKL_NUM_THREADS")}
    r = subprocess.run([sys.executable, "-m", "charrnn", "train", str(names_x4_file), "-o", str(tmp_path / "m.npz"),
                        "--steps", "2", "--hidden-size", "8", "--threads", "2"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert re.search(r"threads\s+2 BLAS", r.stdout), r.stdout
    code = "import sys; from charrnn.cli import main; main(sys.argv[1:])"
    r = subprocess.run([sys.executable, "-c", code, "train", str(names_x4_file), "-o", str(tmp_path / "m.npz"),
                        "--steps", "2", "--hidden-size", "8", "--force"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert re.search(r"threads\s+1 BLAS", r.stdout), r.stdout


@pytest.mark.hostile(4)
def test_paths_and_strings_from_files_are_printed_as_text(tmp_path, capsys, names_x4_file):
    """rich markup in a file name or in a checkpoint's metadata is shown, not interpreted (nor
    allowed to crash), and control characters never reach the terminal raw."""
    text = tmp_path / "names[v2].txt"
    text.write_text(names_x4_file.read_text())
    ck = tmp_path / "m[red]x.npz"
    code, out, err = run(capsys, "train", text, "--out", ck, "--steps", "2", "--hidden-size", "8")
    assert code == 0, err
    assert "names[v2].txt" in out and f"saved {ck}" in out
    arrays = dict(np.load(ck))
    meta = json.loads(arrays["meta"].tobytes())
    meta.update(source="[/evil]\x1b[2Jgone", stop_reason="[bold]x[/bold]\x1b]0;title\x07")
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    evil = tmp_path / "evil.npz"
    np.savez(evil, **arrays)
    for args in (["inspect", evil], ["eval", evil, text], ["sample", evil, "-n", "2"]):
        code, out, err = run(capsys, *args)
        assert code == 0 and "\x1b" not in out + err and "\x07" not in out + err, (args, err)
    code, out, _ = run(capsys, "inspect", evil)
    assert "[/evil]\\x1b[2Jgone" in out and "[bold]x[/bold]\\x1b]0;title\\x07" in out
    code, _, err = run(capsys, "inspect", tmp_path / "no\x1b[2Jsuch.npz")
    assert error_line(code, err).endswith("no\\x1b[2Jsuch.npz: no such file") and "\x1b" not in err


# ---------------------------------------------------------------- everyday output


def test_quiet_still_says_how_it_ended_and_where_the_model_is(tmp_path, capsys, names_x4_file):
    code, out, err = run(capsys, "train", names_x4_file, "--out", tmp_path / "m.npz", *TINY_H16_12STEPS)
    assert code == 0 and err == ""
    assert out.splitlines()[0].startswith("done: reached --steps 12; 12 steps in")
    assert out.splitlines()[-1] == f"saved {tmp_path / 'm.npz'}: try  charrnn sample {tmp_path / 'm.npz'} -n 10"


def test_inspect_without_validation_shows_no_validation(tmp_path, capsys, names_x4_file):
    ck = tmp_path / "m.npz"
    assert run(capsys, "train", names_x4_file, "--out", ck, "--val-fraction", "0", *TINY_H16_12STEPS)[0] == 0
    code, out, _ = run(capsys, "inspect", ck)
    assert code == 0 and "final train" in out
    assert "best val" not in out and "× validation" not in out and "no validation split" in out
    code, out, _ = run(capsys, "inspect", ck, "--json")
    assert json.loads(out)["training"]["best_val_loss"] is None


def test_counts_have_their_plurals_and_thousands_separators(tmp_path, capsys, names_x4_file):
    assert [plural(1, "minute"), plural(0.5, "minute"), plural(2000, "step"), plural(1, "evaluation")] == [
        "1 minute", "0.5 minutes", "2,000 steps", "1 evaluation"]
    code, out, _ = run(capsys, "train", names_x4_file, "--out", tmp_path / "m.npz", "--hidden-size", "8",
                       "--steps", "2", "--patience", "1", "--eval-every", "1", "--time", "1")
    assert code == 0
    assert "2 steps, 1 minute, 1 evaluation without improvement" in out and "every 1 step," in out


def test_output_fits_80_columns_without_padding(tmp_path, capsys, monkeypatch, names_x4_file):
    """In a pipe (as here) rich assumes 80 columns: every line fits, none is padded with spaces."""
    monkeypatch.chdir(tmp_path)  # short paths
    ck = "m.npz"
    code, out, err = run(capsys, "train", names_x4_file, "--out", ck, "--hidden-size", "8", "--steps", "4",
                         "--eval-every", "2", "--seq-len", "200")
    assert code == 0 and "step      2" in err
    code, out2, _ = run(capsys, "inspect", ck)
    assert code == 0 and out2.splitlines()[1].startswith("model  lstm")
    for line in (out + err + out2).splitlines():
        assert len(line) <= 80 and line == line.rstrip(), repr(line)


@pytest.mark.parametrize("total, postfix", [
    (123_456, "loss 2.167 val 2.125, 10.7k chars/s"),
    (None, "loss 2.167 val 2.125, 10.7k chars/s, patience 3/5"),
])
def test_the_progress_bar_fits_80_columns(total, postfix):
    from tqdm import tqdm

    from charrnn.commands import BAR, ENDLESS_BAR

    line = tqdm.format_meter(100_000, total, 4000.0, ncols=80, bar_format=BAR if total else ENDLESS_BAR,
                             postfix=postfix, unit="step")
    assert len(line) <= 80 and line.endswith(postfix + "]") and "100,000" in line


@pytest.mark.parametrize("args", [
    ["m.npz"],
    ["m.npz", "-n", "3", "--temperature", "0.2,1", "--top-p=0.9", "--seed", "7", "--prime", "-x"],
    ["--length", "40", "m.npz", "--allow-seen", "--allow-unk", "--json", "--prime-file", "p.txt", "--top-k", "5"],
    ["m.npz", "--novel", "--prime", ""],
])
def test_quick_parse_reads_sample_lines_as_typer_does(args):
    import typer

    from charrnn.cli import app, quick_parse

    command = typer.main.get_command(app).commands["sample"]
    assert quick_parse(command, args) == command.make_context("sample", list(args)).params


@pytest.mark.parametrize("args", [[], ["--help"], ["m.npz", "-n", "x"], ["m.npz", "--nope"], ["m.npz", "-n"],
                                  ["m.npz", "n.npz"], ["m.npz", "--json=1"], ["m.npz", "-n3"]])
def test_quick_parse_leaves_the_unusual_to_typer(args):
    import typer

    from charrnn.cli import app, quick_parse

    assert quick_parse(typer.main.get_command(app).commands["sample"], args) is None


@pytest.mark.parametrize("given, minutes", [("90s", 1.5), ("2m", 2.0), ("0.5h", 30.0), ("0.25", 0.25)])
def test_time_takes_minutes_or_a_duration_with_a_unit(tmp_path, capsys, names_x4_file, given, minutes):
    """#19 item 11: `--time 2m` was the validation library's 'Input should be a valid number'."""
    out = tmp_path / "m.npz"
    code, _, err = run(capsys, "train", names_x4_file, "--out", out, "--time", given, "--steps", 1,
                       "--hidden-size", 8, "-q")
    assert code == 0, err
    assert checkpoint.load(out).meta.train.time_minutes == minutes


def test_time_that_is_no_duration_says_what_is(capsys, names_x4_file):
    code, _, err = run(capsys, "train", names_x4_file, "--time", "2x")
    assert code == 2
    want = "Error: --time must be minutes (2.5) or a duration with a unit (90s, 2m, 1h), not '2x'"
    assert error_line(code, err) == want


def test_eval_with_its_arguments_swapped_says_so(capsys, names_ckpt, names_x4_file):
    code, _, err = run(capsys, "eval", names_x4_file, names_ckpt)
    assert error_line(code, err).endswith(f"the arguments look swapped; try  charrnn eval {names_ckpt} {names_x4_file}")
