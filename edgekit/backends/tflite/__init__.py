"""TFLite / LiteRT backend.

- ``build``      torch -> .tflite candidates for one request (imports torch and converters):
  ``export`` (litert-torch, PT2E INT8), ``quantize`` (ai-edge-quantizer recipes),
  ``interface`` (float I/O around int8 models), ``micro`` (TFLite Micro checks).
- ``runtime``    runs a .tflite in the LiteRT interpreter inside a child process
  (``_worker``); imports only the runtime.
- ``inspect``    reads a .tflite flatbuffer without running it: I/O, ops, weight census.

Nothing heavy is imported here, so ``import edgekit.backends.tflite`` is cheap.
"""
