"""Per-request balancing over several model servers through ONE gateway channel.

Production gives the gateway a `dns:///` name of a headless Service (every pod's address)
and the round_robin policy. Here three model servers listen on three loopback addresses
behind one multi-address target, which is what the DNS answer becomes inside gRPC. With
gRPC's default pick_first the same traffic all lands on one server: the problem a
ClusterIP Service has (one long-lived connection, one pod)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.conftest import ClientFactory
from tests.support.fake_model_server import FakeModel, serve
from tests.support.image_host import FIXTURES

ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
REQUESTS = 300
IMAGE = (FIXTURES / "hat.jpg").read_bytes()


@pytest.fixture
def three_servers() -> Iterator[tuple[list[FakeModel], str]]:
    models, servers, targets = [], [], []
    for address in ADDRESSES:
        model = FakeModel(record=False)
        server, port = serve(model, host=address)
        models.append(model)
        servers.append(server)
        targets.append(f"{address}:{port}")
    yield models, "ipv4:" + ",".join(targets)
    for server in servers:
        server.stop(None)


def _spread(
    make_client: ClientFactory, models: list[FakeModel], target: str, policy: str
) -> list[int]:
    client = make_client(TF_SERVING_HOST=target, GRPC_LB_POLICY=policy)
    for _ in range(30):  # connect every sub-channel and learn the signature first
        assert client.post("/predict", data=IMAGE, content_type="image/jpeg").status_code == 200
    before = [m.predict_calls for m in models]
    for _ in range(REQUESTS):
        assert client.post("/predict", data=IMAGE, content_type="image/jpeg").status_code == 200
    return [m.predict_calls - b for m, b in zip(models, before, strict=True)]


def test_round_robin_spreads_requests_evenly(
    make_client: ClientFactory, three_servers: tuple[list[FakeModel], str]
) -> None:
    models, target = three_servers
    counts = _spread(make_client, models, target, "round_robin")
    assert sum(counts) == REQUESTS
    fair = REQUESTS / len(ADDRESSES)
    assert all(abs(c - fair) <= 0.15 * fair for c in counts), counts
    print(f"round_robin: {counts}")


def test_pick_first_pins_everything_to_one_server(
    make_client: ClientFactory, three_servers: tuple[list[FakeModel], str]
) -> None:
    models, target = three_servers
    counts = _spread(make_client, models, target, "pick_first")
    assert sorted(counts) == [0, 0, REQUESTS], counts
    print(f"pick_first: {counts}")


def test_dns_target_as_in_production(
    make_client: ClientFactory, fake_model: tuple[FakeModel, int]
) -> None:
    """The production target form (`dns:///name:port`) resolves and serves; in the cluster
    the name is the headless Service."""
    _, port = fake_model
    client = make_client(TF_SERVING_HOST=f"dns:///localhost:{port}", GRPC_LB_POLICY="round_robin")
    assert client.post("/predict", data=IMAGE, content_type="image/jpeg").status_code == 200
