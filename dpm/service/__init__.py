"""Network front of the live book: a gRPC service (optional extra ``service``: grpcio, grpcio-tools).

- :func:`serve` (:mod:`dpm.service.server`) — run the service on a :class:`~dpm.live.runner.LiveRunner`
  until SIGTERM / SIGINT; ``python -m dpm serve`` is the command-line entry point.
- :class:`LiveClient` (:mod:`dpm.service.client`) — a small Python client.
- :class:`CheckChannel` / :class:`CheckClient` (:mod:`dpm.service.fastcheck`) — a binary TCP channel
  for pre-trade checks only, beside the gRPC service (``dpm serve --check-port``): a fraction of a
  gRPC call's latency.

The protocol is ``dpm/service/live.proto``; its Python modules are generated when first needed
(:func:`dpm.service.protocol.load`). See ``docs/live.md``.
"""
from __future__ import annotations

from dpm._util.lazy import lazy_exports

_EXPORTS = {
    "CheckChannel": "dpm.service.fastcheck",
    "CheckClient": "dpm.service.fastcheck",
    "LiveClient": "dpm.service.client",
    "LiveServicer": "dpm.service.server",
    "serve": "dpm.service.server",
    "start_server": "dpm.service.server",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
