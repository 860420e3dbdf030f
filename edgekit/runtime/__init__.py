"""The device runtime: serve the installed release of a model store, without torch.

- ``model``: ``Model.open(store)`` loads the current release for this device,
  picks an artifact whose runtime is installed, checks inputs against the
  interface the manifest records and returns outputs with their provenance.
- ``experiment``: a control and a candidate release in one store (A/B arms,
  gradual rollout by unit id, promote, abort, automatic abort).
- ``stats``: per-arm counts, errors, latency percentiles and output statistics.
- ``audit``: an append-only, hash-chained log of every prediction.
- ``cache``: a bounded LRU cache of outputs keyed by the input digest.
- ``batcher``: a micro-batcher (max batch, max wait) for gateways.
- ``server``: ``edgekit serve``, a local HTTP endpoint.

Only numpy and the runtimes (onnxruntime, LiteRT) are imported here; the
``runtime`` extra is all a device needs.
"""
