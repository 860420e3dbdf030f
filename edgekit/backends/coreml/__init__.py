"""Core ML backend: ML Program ``.mlpackage`` export and compression with
coremltools, validated on any OS by edgekit's numpy emulator (``emulator/``).

- ``build.py``        candidates per precision, their coverage and fidelity records.
- ``export.py``       torch → ML Program: conversion routes, rewrites, fixed batches, module paths.
- ``mil_fixes.py``    MIL passes that repair what coremltools converts wrongly.
- ``compress.py``     weight compression (linear, palettization, pruning) with coremltools.optimize.
- ``sensitivity.py``  the fidelity fallback search (which weights to keep float or int8), emulated.
- ``runtime.py``      sessions: the real Core ML runtime on macOS, the emulator elsewhere.
- ``inspect.py``      I/O, op histogram and weight census read from the package's bytes.
- ``census.py``       the weight census of a saved package (shared by build and inspect).
"""
