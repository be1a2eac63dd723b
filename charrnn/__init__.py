"""charrnn: character-level recurrent language models in plain NumPy.

From Python: `charrnn.load(path)` and `charrnn.train(text_file, ...)` (see charrnn.api); they are
imported on first use, so `import charrnn` (and the CLI's start-up) stays light."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load", "train", "Model"]


def __getattr__(name: str) -> Any:
    if name in ("load", "train", "Model"):
        from charrnn import api

        return getattr(api, name)
    raise AttributeError(f"module 'charrnn' has no attribute {name!r}")
