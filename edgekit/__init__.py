"""edgekit: turn trained PyTorch models into validated, signed edge artifacts.

Importing this package is cheap: no torch, no converters, no runtimes. Heavy
frameworks load inside the functions that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
