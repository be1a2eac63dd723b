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
from types import ModuleType

from charrnn.errors import CharrnnError

ENV = "CHARRNN_BACKEND"  # numpy or numba; unset: numba when it imports
_active: list[ModuleType | None] = []  # [charrnn.fast or None] while chosen; NumPy otherwise


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
    except ImportError as e:
        if name == "numba":
            raise CharrnnError(f"{ENV}=numba, but numba does not import ({e}): pip install 'charrnn[fast]'") from None
        return None
    return fast


def use(name: str | None = None) -> ModuleType | None:
    """Run float32 `cells.forward` and `cells.backward` on `load(name)` from now on, training
    included (benchmarks and tests compare backends this way); returns it."""
    _active[:] = [load(name)]
    return _active[0]


def active() -> ModuleType | None:
    """charrnn.fast while the compiled cells are in use, else None (NumPy)."""
    return _active[0] if _active else None


def for_training() -> ModuleType | None:
    """The backend a Trainer runs on: the one `use` put in use, or else the one `load` chooses
    (numba when it imports, unless $CHARRNN_BACKEND says numpy)."""
    return _active[0] if _active else load()


@contextmanager
def running_on(fast: ModuleType | None) -> Iterator[None]:
    """Float32 `cells.forward` and `cells.backward` run on `fast` (None: NumPy) in the block."""
    before = _active[:]
    _active[:] = [fast]
    try:
        yield
    finally:
        _active[:] = before


def describe(fast: ModuleType | None) -> str:
    """A backend in words, for the training summary and `inspect`."""
    if fast is not None:
        return f"numba {fast.VERSION} (fused cells)"
    return f"numpy ({ENV}=numpy)" if os.environ.get(ENV) == "numpy" else "numpy"
