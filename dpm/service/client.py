"""A small Python client of the live service (tests, benchmarks, scripts).

>>> client = LiveClient("127.0.0.1:50051")           # doctest: +SKIP
>>> client.submit(Fill("alice", "BTC-PERPETUAL", 10.0))  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, Iterator

from dpm.live.events import Event
from dpm.service.protocol import event_to_proto, load

__all__ = ["LiveClient"]


def _to_proto(e: Any) -> Any:
    """An event, or an ``(event, client_id)`` pair, as an Event message."""
    return event_to_proto(*e) if isinstance(e, tuple) else event_to_proto(e)


class LiveClient:
    """Blocking client of one server; thread-safe (one channel shared by all calls).

    Errors are ``grpc.RpcError`` with the status code of the refusal (see ``docs/live.md``).
    """

    def __init__(self, target: str, *, timeout: float = 30.0) -> None:
        import grpc

        self.pb, services = load()
        self.channel = grpc.insecure_channel(target)
        self.stub = services.LiveMarginStub(self.channel)
        self.timeout = timeout

    def wait_ready(self, timeout: float = 30.0) -> None:
        import grpc

        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def submit(self, event: Event, client_id: str | None = None) -> Any:
        return self.stub.Submit(event_to_proto(event, client_id), timeout=self.timeout)

    def submit_stream(self, events: Any) -> Iterator[Any]:
        """Acks of ``events`` (an iterable of events or ``(event, client_id)`` pairs), in order."""
        return self.stub.SubmitStream(_to_proto(e) for e in events)

    def submit_batches(self, batches: Any) -> Iterator[list[Any]]:
        """The acks of each batch (a list of events or ``(event, client_id)`` pairs), in order: one
        message per batch each way (``SubmitBatches``)."""
        requests = (self.pb.EventBatch(events=[_to_proto(e) for e in batch]) for batch in batches)
        return (list(reply.acks) for reply in self.stub.SubmitBatches(requests))

    def margin(self, account: str) -> Any:
        return self.stub.GetMargin(self.pb.AccountRequest(account=account), timeout=self.timeout)

    def account(self, account: str) -> Any:
        return self.stub.GetAccount(self.pb.AccountRequest(account=account), timeout=self.timeout)

    def check(self, account: str, orders: list[tuple[str, float]]) -> Any:
        legs = [self.pb.OrderLeg(instrument=i, quantity=q) for i, q in orders]
        return self.stub.Check(self.pb.CheckRequest(account=account, orders=legs), timeout=self.timeout)

    def subscribe(self, from_seq: int = 0, account: str = "", max_queue: int = 0) -> Any:
        """A stream of alerts (iterate; ``.cancel()`` to stop)."""
        return self.stub.Subscribe(self.pb.SubscribeRequest(from_seq=from_seq, account=account,
                                                            max_queue=max_queue))

    def status(self) -> Any:
        return self.stub.Status(self.pb.StatusRequest(), timeout=self.timeout)

    def digest(self) -> Any:
        return self.stub.Digest(self.pb.DigestRequest(), timeout=self.timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "LiveClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
