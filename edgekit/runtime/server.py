"""``edgekit serve``: a store's model over local HTTP, for apps that run the model in another process.

A small WSGI application served by waitress (pure Python, no dependencies,
a production server). It binds to localhost unless told otherwise and has
no authentication of its own: expose it beyond the device only behind
something that has.

    POST /v1/predict    {"inputs": {"x": [[...]]}, "unit_id": "user-42"}
                        -> {"outputs": {...}, "provenance": {...}, "input_digest": ..., "cached": ...}
    GET  /v1/stats      per-arm figures, aborts, cache
    GET  /v1/interface  the inputs (name, shape, dtype, calibrated range) and outputs
    GET  /v1/health     model and versions being served

Bad input answers 400 with the same message the Python API raises; a
runtime failure 500; a body over the limit 413 (waitress enforces it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from edgekit.errors import EdgekitError, InputError
from edgekit.runtime.model import Model

DEFAULT_MAX_BODY = 16 * 1024 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def make_app(model: Model) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI application serving ``model``."""
    routes: dict[str, tuple[str, Callable[[dict[str, Any]], Any]]] = {
        "/v1/predict": ("POST", lambda environ: _predict(model, environ)),
        "/v1/stats": ("GET", lambda environ: model.stats()),
        "/v1/interface": ("GET", lambda environ: _interface(model)),
        "/v1/health": ("GET", lambda environ: _health(model)),
    }

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        route = routes.get(environ.get("PATH_INFO", ""))
        if route is None:
            return _reply(start_response, 404, {"error": f"no endpoint {environ.get('PATH_INFO')}",
                                                "endpoints": sorted(routes)})
        method, handler = route
        if environ.get("REQUEST_METHOD") != method:
            return _reply(start_response, 405, {"error": f"{environ.get('PATH_INFO')} takes {method}"})
        try:
            return _reply(start_response, 200, handler(environ))
        except InputError as exc:
            return _reply(start_response, 400, {"error": exc.message})
        except EdgekitError as exc:
            return _reply(start_response, 500, {"error": exc.message})

    return app


def _predict(model: Model, environ: dict[str, Any]) -> dict[str, Any]:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length) or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"the request body is not JSON ({exc})", 'Send {"inputs": {"name": [[...]]}}') from None
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), (dict, list)):
        raise InputError("the request has no inputs", 'Send {"inputs": {"name": [[...]]}, "unit_id": "..."}')
    unknown = sorted(set(body) - {"inputs", "unit_id"})
    if unknown:
        raise InputError(f"unknown request field(s) {', '.join(unknown)}", "Send only inputs and unit_id")
    unit_id = body.get("unit_id")
    if unit_id is not None and not isinstance(unit_id, str):
        raise InputError("unit_id is not a string", "Send the user, session or request id as a string")
    return model.predict(body["inputs"], unit_id=unit_id).as_dict()


def _interface(model: Model) -> dict[str, Any]:
    interface = model.interface()
    return {"inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype.name,
                        "range": list(s.value_range) if s.value_range else None} for s in interface.inputs],
            "outputs": list(interface.outputs)}


def _health(model: Model) -> dict[str, Any]:
    arms = model.stats()["arms"]
    return {"ok": True, "model": model.stats()["model"],
            "versions": {name: arm["version"] for name, arm in arms.items()}}


def _reply(start_response: StartResponse, status: int, document: Any) -> list[bytes]:
    body = json.dumps(document, allow_nan=True, default=str).encode("utf-8")
    start_response(f"{status} {_REASONS[status]}", [("Content-Type", "application/json"),
                                                    ("Content-Length", str(len(body)))])
    return [body]


def create_server(model: Model, host: str = "127.0.0.1", port: int = 8080, threads: int = 4,
                  max_body: int = DEFAULT_MAX_BODY) -> Any:
    """A waitress server for ``model`` (not yet running: call ``.run()``; ``.effective_port`` after port 0)."""
    try:
        import waitress
    except ImportError:
        raise InputError("edgekit serve needs waitress, which is not installed",
                         "pip install 'edgekit[runtime]'") from None
    try:
        return waitress.create_server(make_app(model), host=host, port=port, threads=threads,
                                      max_request_body_size=max_body, ident="edgekit", clear_untrusted_proxy_headers=True)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc})",
                         "Pick another --port, or stop what uses it") from None
