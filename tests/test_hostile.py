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
