"""Core ML backend: ML Program ``.mlpackage`` export and compression with
coremltools, validated on any OS by edgekit's numpy emulator (``emulator/``).

- ``build.py``    torch → ML Program (export.py), compression (compress.py).
- ``runtime.py``  sessions: the real Core ML runtime on macOS, the emulator elsewhere.
- ``inspect.py``  I/O, op histogram and weight census read from the package's bytes.
- ``census.py``   the weight census of a saved package (shared by build and inspect).
"""
