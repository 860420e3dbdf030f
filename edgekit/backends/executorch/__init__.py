"""ExecuTorch backend: ``.pte`` programs lowered to the XNNPACK delegate, run by ExecuTorch's runtime.

- ``build``    torch -> ``.pte`` candidates for one request: ``export`` lowers with
  ``to_edge_transform_and_lower`` and the XNNPACK partitioner; INT8 comes from
  PT2E with the XNNPACK quantizer (static, calibrated; or dynamic), INT4 from
  torchao's int4-weight / int8-activation config on linear layers, FP16 from
  a half-precision copy of the model behind float I/O casts.
- ``runtime``  runs a ``.pte`` with ``executorch.runtime`` (the Python binding of
  the C++ runtime apps embed, XNNPACK linked in). It takes torch tensors, so
  it imports torch: the ``executorch`` extra brings it on devices too.
- ``inspect``  reads a ``.pte`` without running it: I/O, operators, delegates.
- ``options``  ``max_batch``: the largest batch a program's memory is planned for.
"""
