"""charrnn: character-level recurrent language models in plain NumPy."""

__version__ = "0.1.0"
