"""Hostile input that would exhaust memory or time (issue #18 class 2) and well-formed files or
options whose values are hostile (class 3): each ends in one `Error:` line, quickly, without a
traceback. Files are built here by hand, with the numpy format functions, to say what they say."""

import pytest
from helpers import error_line, run

from charrnn import commands


@pytest.mark.parametrize("exc,said", [(MemoryError("Unable to allocate 74.5 GiB"), "out of memory"),
                                      (RecursionError("maximum recursion depth"), "input nested too deeply"),
                                      (OverflowError("cannot convert float infinity"), "a number too large"),
                                      (UnicodeError("undefined encoding"), "cannot be encoded or decoded")])
def test_last_resort_errors_are_one_line(capsys, monkeypatch, good, exc, said):
    def fail(*args):
        raise exc

    monkeypatch.setattr(commands, "run_inspect", fail)
    line = error_line(*run(capsys, "inspect", good / "names.npz")[::2])
    assert said in line and str(exc) in line


# ---------------------------------------------------------------- hostile option values (class 3)


@pytest.mark.parametrize("args,said", [
    (["--epochs", "inf"], "--epochs must be 0 or more and finite, not inf"),
    (["--time", "inf"], "--time must be 0 or more and finite, not inf"),
    (["--seq-len", "100001"], "--seq-len must be at most 100,000"),
    (["--encoding", "undefined"], "the 'undefined' codec decodes no text"),
    (["--encoding", "rot13"], "'rot13' is not a text encoding"),
    (["--encoding", "base64"], "'base64' is not a text encoding"),
])
def test_unusable_option_values_are_refused_by_name(capsys, tmp_path, names_x3_file, args, said):
    line = error_line(*run(capsys, "train", names_x3_file, "--out", tmp_path / "m.npz", "--quiet", *args)[::2])
    assert said in line and not (tmp_path / "m.npz").exists()


def test_a_codec_that_fails_on_the_text_is_one_error_line(capsys, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"anna\nbob\n" * 3)  # punycode raises a bare UnicodeError here
    line = error_line(*run(capsys, "train", bad, "--out", tmp_path / "m.npz", "--encoding", "punycode")[::2])
    assert "not valid punycode" in line
