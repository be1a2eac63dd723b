"""`charrnn` in a real process stopped from outside: Ctrl-C, SIGTERM and SIGHUP save a checkpoint
that resumes (exit 130, 143, 129), sampling into a pipe that closes early (`| head`) ends quietly
with exit 0, and Ctrl-C during a live sample ends its line and exits 130."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import ENV, flat, run

from charrnn import checkpoint


@pytest.mark.hostile(5)
@pytest.mark.parametrize("sig,code,name", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM"),
                                           (signal.SIGHUP, 129, "SIGHUP")])
def test_real_signal_saves_and_resumes(tmp_path, capsys, names_x3_file, sig, code, name):
    ck = tmp_path / "m.npz"
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "train", names_x3_file, "--out", ck, "--steps", "100000",
                             "--eval-every", "5", "--hidden-size", "8", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 60
        while not ck.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ck.exists(), "no checkpoint appeared"
        proc.send_signal(sig)
        stdout, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    stopped = checkpoint.load(ck)
    step = stopped.meta.progress.step
    assert step >= 5 and stopped.meta.stop_reason == "interrupted"
    assert f"{name}: saved {ck} at step {step:,}. Resume with:" in flat(err)
    assert f"charrnn train {names_x3_file} --resume {ck}" in err
    rc, _, err = run(capsys, "train", names_x3_file, "--resume", ck, "--steps", step + 3, "--quiet")
    assert rc == 0, err
    resumed = checkpoint.load(ck)
    assert resumed.meta.progress.step == step + 3
    assert np.array_equal(resumed.train_losses[:step], stopped.train_losses)


@pytest.mark.hostile(5)
def test_sample_into_a_closed_pipe_is_quiet(good):
    r = subprocess.run(f"{sys.executable} -m charrnn sample {good / 'prose.npz'} -n 50 --length 400 | head -c 10",
                       shell=True, capture_output=True, text=True, timeout=60, env=ENV)
    assert "Traceback" not in r.stderr and "Error" not in r.stderr


@pytest.mark.hostile(5)
def test_closed_pipe_exits_0_and_ctrl_c_during_a_live_sample_exits_130(tmp_path, good):
    r = subprocess.run(f"{sys.executable} -m charrnn sample {good / 'prose.npz'} --length 200000 | head -c 10; "
                       "exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", capture_output=True, text=True,
                       timeout=60, env=ENV)
    assert r.returncode == 0 and len(r.stdout) == 10, r.stderr
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "sample", good / "prose.npz", "--length", "100000000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and out.endswith("\n") and "Traceback" not in err, err
