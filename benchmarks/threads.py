"""How many BLAS threads charrnn should use: whole CLI runs with 1 thread against all cores, on an
idle machine and with one core kept busy by another process (as users' machines are).

    python benchmarks/threads.py            # ~3 min on 2 cores
    python benchmarks/threads.py --quick    # a smoke

Each case runs `python -m charrnn ...` with OPENBLAS_NUM_THREADS (and OMP_/MKL_) set to 1 or to
the core count, the two alternating, and reports median wall seconds. The busy case starts a
process that spins on one core for the duration.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLAS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def timed(args: list[str], threads: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in BLAS}
    env.update({v: str(threads) for v in BLAS})
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "charrnn", *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    steps, length = ("4", "50") if a.quick else ("40", "500")
    reps = 1 if a.quick else a.reps
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        ck = Path(tmp) / "names.npz"
        subprocess.run([sys.executable, "-m", "charrnn", "train", str(ROOT / "corpora" / "names.txt"), "-o", str(ck),
                        "--steps", "2", "--quiet"], check=True, capture_output=True)
        cases = {
            f"train names --steps {steps}": ["train", str(ROOT / "corpora" / "names.txt"), "-o",
                                             str(Path(tmp) / "t.npz"), "--steps", steps, "--quiet", "--force"],
            f"sample -n 10 --length {length}": ["sample", str(ck), "-n", "10", "--length", length, "--allow-seen"],
        }
        for load in ("idle", "one core busy"):
            busy = None
            if load != "idle":
                busy = multiprocessing.Process(target=spin, args=(3600,), daemon=True)
                busy.start()
            try:
                for name, args in cases.items():
                    times: dict[int, list[float]] = {1: [], cores: []}
                    for _ in range(reps):
                        for n in (cores, 1):
                            times[n].append(timed(args, n))
                    r = {f"{n} threads": statistics.median(v) for n, v in times.items()}
                    results[f"{name}, {load}"] = r
                    print(f"{name:<32} {load:<14} " + "  ".join(f"{k}: {v:6.2f} s" for k, v in r.items()), flush=True)
            finally:
                if busy is not None:
                    busy.terminate()
    print(f"medians of {reps}, {cores} cores")
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
