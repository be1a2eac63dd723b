"""Which cells run: NumPy's (charrnn/cells.py, the reference) or the optional compiled ones.

`pip install 'charrnn[fast]'` adds numba, and charrnn/fast.py runs `cells.forward` and
`cells.backward` with each time step's elementwise work compiled into one loop (the matrix
products stay NumPy): 1.1-1.6x faster training at 1 thread (benchmarks/README.md). The two
agree to float32 rounding (tests/test_fast.py).

Only training uses them. A Trainer runs its steps and evaluations `running_on` the backend
`for_training` chose; everything else runs NumPy, so what `eval` or `sample` compute never
depends on whether something trained earlier in the process, and a `charrnn sample --prime`
or the `eval` of a page does not pay the ~1 s that importing numba and loading the kernels
takes. float64 always runs NumPy: the kernels' exact float64 tanh is no faster, and float64
is for gradient checks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import ModuleType
from typing import cast

from charrnn.errors import CharrnnError

ENV = "CHARRNN_BACKEND"  # numpy or numba; unset: numba when it imports
_active: list[ModuleType | None] = []  # [charrnn.fast or None] once `use` chose; NumPy otherwise
_UNSET = object()
# What a `running_on` block chose, for this thread only: a Trainer stepping in one thread must not
# put the cells of another thread (scoring, filling) on numba, nor leave them there.
_running: ContextVar[object] = ContextVar("charrnn_backend", default=_UNSET)


def load(name: str | None = None) -> ModuleType | None:
    """The backend `name` ("numpy" or "numba"), else $CHARRNN_BACKEND's, else numba when it
    imports: charrnn.fast, or None for NumPy. Loads it without putting it in use."""
    name = name or os.environ.get(ENV) or None
    if name not in (None, "numpy", "numba"):
        raise CharrnnError(f"{ENV} must be numpy or numba, not {name!r}")
    if name == "numpy":
        return None
    try:
        from charrnn import fast
    except Exception as e:  # not installed, or broken: numba's cache can fail at import, with no place to write
        if name == "numba":
            raise CharrnnError(f"{ENV}=numba, but numba does not import ({e}): pip install 'charrnn[fast]'") from None
        return None
    return fast


def planned(dtype: str = "float32") -> str:
    """What training here would run on, in words, without importing numba (0.3-0.5 s): for
    `inspect`, which must show a checkpoint whatever the environment says."""
    from importlib import metadata, util

    name = os.environ.get(ENV) or None
    if name not in (None, "numpy", "numba"):
        return f"numpy ({ENV}={name!r} is not numpy or numba: training would refuse it)"
    if dtype != "float32":
        return describe(None, dtype)
    if name == "numba" and util.find_spec("numba") is None:
        return f"numpy ({ENV}=numba, but numba is not installed: training would refuse it)"
    if name == "numpy" or util.find_spec("numba") is None:
        return describe(None)
    return f"numba {metadata.version('numba')} (fused cells)"


def use(name: str | None = None) -> ModuleType | None:
    """Run float32 `cells.forward` and `cells.backward` on `load(name)` from now on, training
    included (benchmarks and tests compare backends this way); returns it."""
    _active[:] = [load(name)]
    return _active[0]


def active() -> ModuleType | None:
    """charrnn.fast while the compiled cells are in use in this thread, else None (NumPy)."""
    running = _running.get()
    if running is not _UNSET:
        return cast("ModuleType | None", running)  # only running_on sets it
    return _active[0] if _active else None


def for_training() -> ModuleType | None:
    """The backend a Trainer runs on: the one `use` put in use, or else the one `load` chooses
    (numba when it imports, unless $CHARRNN_BACKEND says numpy)."""
    return _active[0] if _active else load()


@contextmanager
def running_on(fast: ModuleType | None) -> Iterator[None]:
    """Float32 `cells.forward` and `cells.backward` run on `fast` (None: NumPy) in the block, in
    this thread only."""
    token = _running.set(fast)
    try:
        yield
    finally:
        _running.reset(token)


def describe(fast: ModuleType | None, dtype: str = "float32") -> str:
    """A backend in words, for the training summary and `inspect`: what a model of `dtype` runs on."""
    if dtype != "float32":
        return f"numpy ({dtype} models always do)"
    if fast is not None:
        return f"numba {fast.VERSION} (fused cells)"
    return f"numpy ({ENV}=numpy)" if os.environ.get(ENV) == "numpy" else "numpy"
