"""The gRPC protocol of the live service: generated modules and conversions to dpm.live events.

``live.proto`` is compiled when first needed, in memory, by ``grpc.protos_and_services`` (which
runs the protobuf compiler of ``grpcio-tools``): there is no generated code in the repository to
keep in sync, and the generated code always matches the installed protobuf runtime. To look at the
generated code, run ``python -m grpc_tools.protoc -I. --python_out=OUT --grpc_python_out=OUT
dpm/service/live.proto`` from the repository root.
"""
from __future__ import annotations

import functools
from typing import Any

from dpm.errors import DPMError, InvalidInputError
from dpm.live import events as ev

__all__ = ["event_from_proto", "event_to_proto", "load"]


@functools.lru_cache(maxsize=1)
def load() -> tuple[Any, Any]:
    """``(messages, services)``: the modules generated from ``live.proto`` (cached)."""
    try:
        import grpc  # noqa: F401
        import grpc_tools  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DPMError(f"the dpm service needs the optional extra 'service' (pip install 'dpm[service]'): "
                       f"{exc}") from None
    import grpc

    try:
        return grpc.protos_and_services("dpm/service/live.proto")
    except (AttributeError, NotImplementedError, ImportError):  # pragma: no cover - grpc drops the API
        return _compile_to_temp()


def _compile_to_temp() -> tuple[Any, Any]:  # pragma: no cover - fallback of an experimental gRPC API
    """Run the protobuf compiler of grpcio-tools into a temporary directory and import the result."""
    import importlib.util
    import sys
    import tempfile
    from pathlib import Path

    from grpc_tools import protoc

    root = Path(__file__).resolve().parents[2]
    out = Path(tempfile.mkdtemp(prefix="dpm-proto-"))
    args = ["protoc", f"-I{root}", f"--python_out={out}", f"--grpc_python_out={out}", "dpm/service/live.proto"]
    if protoc.main(args) != 0:
        raise DPMError("cannot compile dpm/service/live.proto with grpc_tools.protoc")
    mods = []
    for name in ("live_pb2", "live_pb2_grpc"):
        spec = importlib.util.spec_from_file_location(f"dpm.service.{name}", out / "dpm" / "service" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        mods.append(mod)
    return mods[0], mods[1]


def _opt(msg: Any, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


def event_from_proto(msg: Any) -> tuple[ev.Event, str | None]:
    """``(event, client_id)`` of a protobuf ``Event`` (raises InvalidInputError when malformed)."""
    kind = msg.WhichOneof("kind")
    if kind is None:
        raise InvalidInputError("event: no event in the message (set one of open_account, transfer, fill, ...)")
    m = getattr(msg, kind)
    client_id = msg.client_id or None
    if kind == "open_account":
        out: ev.Event = ev.OpenAccount(m.account)
    elif kind == "transfer":
        out = ev.Transfer(m.account, m.currency, m.amount)
    elif kind == "fill":
        out = ev.Fill(m.account, m.instrument, m.quantity, _opt(m, "price"), m.fee, _opt(m, "order_id"))
    elif kind == "place_order":
        out = ev.PlaceOrder(m.account, m.order_id, m.instrument, m.quantity, _opt(m, "price"), not m.skip_check)
    elif kind == "cancel_order":
        out = ev.CancelOrder(m.account, m.order_id)
    elif kind == "tick":
        unds = tuple(ev.UnderlyingTick(t.underlying, t.index_price, _opt(t, "perpetual_price"),
                                       _opt(t, "funding_rate")) for t in m.underlyings)
        out = ev.MarketTick(unds, _opt(m, "timestamp_ms"))
    elif kind == "funding":
        out = ev.Funding(m.instrument, m.rate)
    elif kind == "settle":
        out = ev.Settle(m.instrument, m.price)
    else:  # pragma: no cover - a newer client
        raise InvalidInputError(f"event: unknown kind {kind!r}")
    return out, client_id


def event_to_proto(event: ev.Event, client_id: str | None = None) -> Any:
    """The protobuf ``Event`` of a dpm.live event."""
    pb, _ = load()
    kw: dict[str, Any] = {}
    if client_id:
        kw["client_id"] = client_id
    if isinstance(event, ev.OpenAccount):
        kw["open_account"] = pb.OpenAccount(account=event.account)
    elif isinstance(event, ev.Transfer):
        kw["transfer"] = pb.Transfer(account=event.account, currency=event.currency, amount=event.amount)
    elif isinstance(event, ev.Fill):
        f = dict(account=event.account, instrument=event.instrument, quantity=event.quantity, fee=event.fee)
        if event.price is not None:
            f["price"] = event.price
        if event.order_id is not None:
            f["order_id"] = event.order_id
        kw["fill"] = pb.Fill(**f)
    elif isinstance(event, ev.PlaceOrder):
        f = dict(account=event.account, order_id=event.order_id, instrument=event.instrument,
                 quantity=event.quantity, skip_check=not event.check)
        if event.price is not None:
            f["price"] = event.price
        kw["place_order"] = pb.PlaceOrder(**f)
    elif isinstance(event, ev.CancelOrder):
        kw["cancel_order"] = pb.CancelOrder(account=event.account, order_id=event.order_id)
    elif isinstance(event, ev.MarketTick):
        unds = []
        for t in event.underlyings:
            f = dict(underlying=t.underlying, index_price=t.index_price)
            if t.perpetual_price is not None:
                f["perpetual_price"] = t.perpetual_price
            if t.funding_rate is not None:
                f["funding_rate"] = t.funding_rate
            unds.append(pb.UnderlyingTick(**f))
        f = {"underlyings": unds}
        if event.timestamp_ms is not None:
            f["timestamp_ms"] = event.timestamp_ms
        kw["tick"] = pb.MarketTick(**f)
    elif isinstance(event, ev.Funding):
        kw["funding"] = pb.Funding(instrument=event.instrument, rate=event.rate)
    elif isinstance(event, ev.Settle):
        kw["settle"] = pb.Settle(instrument=event.instrument, price=event.price)
    else:
        raise InvalidInputError(f"event: not a dpm.live event: {type(event).__name__}")
    return pb.Event(**kw)
