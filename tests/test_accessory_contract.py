"""Contract: `FakeAccessoryWorld` behaves like `DockerAccessories` (a real dockerd, the real Redis test image) as far
as the accessory loop observes. ONE scenario, the same calls and assertions on both; when they disagree the
fake (controller/testing_accessories.py) is what gets fixed, never the assertion.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from controller.accessory_world import LABEL_ACCESSORY, LABEL_ONEOFF, AccessoryRequest, AccessoryWorld, OneOff
from controller.errors import DockerError
from controller.facts import LABEL_MANAGED, MANAGED_BY
from controller.testing_accessories import FakeAccessoryWorld
from tests.support.net import free_port
from tests.support.redis_image import RedisImageUnavailable, build_redis_image


@pytest.fixture(params=["fake", "host"])
def rig(request: pytest.FixtureRequest) -> Iterator[tuple[AccessoryWorld, str, str]]:
    """(world, accessory name, image); the host one removes its container, volume and network afterwards."""
    name = f"ctr{uuid.uuid4().hex[:8]}"
    if request.param == "fake":
        yield FakeAccessoryWorld(), name, "bgtest-redis:fake"
        return
    client: Any = request.getfixturevalue("docker_client")
    try:
        image = build_redis_image(client)
    except RedisImageUnavailable as e:
        pytest.skip(str(e))
    from controller.drivers.accessories import DockerAccessories
    from controller.drivers.containers import DockerDriver

    try:
        yield DockerAccessories(DockerDriver()), name, image
    finally:
        for c in client.containers.list(all=True, filters={"name": name}):
            c.remove(force=True)  # (<name>-retired too: the filter matches a part of the name)
        for v in client.volumes.list(filters={"name": name}):
            v.remove(force=True)
        for n in client.networks.list(names=[f"{name}-net"]):
            n.remove()


def test_accessory_world_contract(rig: tuple[AccessoryWorld, str, str]) -> None:
    w, name, image = rig
    net, vol = f"{name}-net", f"{name}-data"
    own = {LABEL_MANAGED: MANAGED_BY, LABEL_ACCESSORY: name}
    req = AccessoryRequest(
        name=name,
        image=image,
        labels=own,
        env={"A": "1"},
        ports={6379: free_port()},
        host_ip="127.0.0.1",
        volumes={vol: "/data"},
        command=["/usr/bin/redis-server", "--dir", "/data"],
        network=net,
        aliases=(name,),
    )
    # A missing network: the create fails and leaves no container.
    with pytest.raises(DockerError):
        w.create_accessory(req)
    assert [c.name for c in w.list_accessories(frozenset({name}))] == []

    assert net not in w.list_networks()
    w.create_network(net, own)
    assert net in w.list_networks()
    with pytest.raises(DockerError):
        w.create_network(net, own)  # a second network of that name is refused, not made twice
    w.create_volume(vol, own)
    w.create_volume(vol, own)  # creating an existing volume is a no-op
    assert vol in w.list_volumes()

    w.create_accessory(req)
    (fact,) = w.list_accessories(frozenset({name}))
    assert fact.ours(name) and fact.running and net in fact.networks
    assert fact.mounts == ((vol, "/data"),) and fact.anonymous_volumes({}) == {}
    assert w.image_volumes(image) == () and w.image_volumes(f"{name}-absent:1") is None  # (this image declares no VOLUME)
    with pytest.raises(DockerError):
        w.create_accessory(req)  # the name is taken

    w.stop(name, 5)
    (fact,) = w.list_accessories(frozenset({name}))
    assert not fact.running and fact.state == "exited"
    w.rename(name, f"{name}-retired")
    assert [(c.name, c.mounts) for c in w.list_accessories(frozenset({name}))] == [(f"{name}-retired", ((vol, "/data"),))]  # by its label
    with pytest.raises(DockerError):
        w.rename(name, f"{name}-other")  # no container of that name any more
    w.rename(f"{name}-retired", name)
    assert not w.check_command(name, ["/usr/bin/redis-cli", "ping"], 2).ok
    w.start(name)

    ok = w.run_oneoff(OneOff(f"{name}-backup", image, ["/bin/busybox", "true"], {vol: "/data"}, {**own, LABEL_ONEOFF: "backup"}, {}), 20)
    assert ok.exit_code == 0
    assert [c.name for c in w.list_accessories(frozenset({name, f"{name}-backup"}))] == [name]  # the one-off is gone

    w.remove(name)
    assert w.list_accessories(frozenset({name})) == []
    assert vol in w.list_volumes()  # removing the container never removes its volume
    w.remove(name)  # removing a missing container is fine
