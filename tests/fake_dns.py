"""A tiny authoritative DNS server on loopback for the egress tests (A and AAAA only).

Names map to lists of answers; a name mapped to several lists cycles through them, one
list per query, which is how a rebinding attacker answers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import struct
from collections.abc import Iterator


def parse_question(packet: bytes) -> tuple[int, str, int, int]:
    """(id, name, qtype, end of question) of a query."""
    (qid,) = struct.unpack(">H", packet[:2])
    i, labels = 12, []
    while packet[i]:
        n = packet[i]
        labels.append(packet[i + 1 : i + 1 + n].decode())
        i += n + 1
    qtype, _ = struct.unpack(">HH", packet[i + 1 : i + 5])
    return qid, ".".join(labels).lower(), qtype, i + 5


def answer(packet: bytes, addrs: list[str], known: bool = True) -> bytes:
    qid, _, qtype, end = parse_question(packet)
    want = 1 if qtype == 1 else 28 if qtype == 28 else 0
    records = []
    for a in addrs:
        ip = ipaddress.ip_address(a)
        rtype = 1 if ip.version == 4 else 28
        if rtype == want:
            records.append(struct.pack(">HHHIH", 0xC00C, rtype, 1, 0, len(ip.packed)) + ip.packed)
    rcode = 0 if known else 3  # NXDOMAIN for names we do not know
    header = struct.pack(">HHHHHH", qid, 0x8180 | rcode, 1, len(records), 0, 0)
    return header + packet[12:end] + b"".join(records)


class FakeDNS(asyncio.DatagramProtocol):
    def __init__(self, names: dict[str, list[list[str]]]) -> None:
        self.cycles: dict[str, Iterator[list[str]]] = {
            k: itertools.cycle(v) for k, v in names.items()
        }
        self.transport: asyncio.DatagramTransport | None = None
        self.queries: list[str] = []
        self.last: dict[str, list[str]] = {}
        self.names = names

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        _, name, qtype, _ = parse_question(data)
        self.queries.append(name)
        cycle = self.cycles.get(name.rstrip("."))
        # Only A queries advance a rebinding name's answers; AAAA sees the same turn's v6.
        addrs = next(cycle) if cycle is not None and qtype == 1 else []
        if cycle is not None and qtype == 28:
            turn = self.last.get(name) or self.names[name.rstrip(".")][0]
            addrs = [a for a in turn if ":" in a]
        self.last[name] = addrs if qtype == 1 else self.last.get(name, [])
        assert self.transport is not None
        self.transport.sendto(answer(data, addrs, cycle is not None), addr)


async def start_dns(names: dict[str, list[list[str]]]) -> tuple[FakeDNS, str]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: FakeDNS(names), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    return proto, f"127.0.0.1:{port}"
