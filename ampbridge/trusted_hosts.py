"""``TrustedHosts``: refuse any request whose ``Host`` is not a name ampbridge is reached at.

A web page that rebinds its own DNS name to 127.0.0.1 reaches ampbridge from a loopback peer,
so the localhost gate lets it in; only the ``Host`` header still names the attacker's site. This
gate answers such requests with 421 before any routing, WebSocket handshakes included (SPEC §10).

``HostAllowlist`` is the one place that decides whether a host name is ours; the cross-site gate
uses it too, for the host part of an ``Origin``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import struct
import sys
from collections.abc import Iterable
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import refuse
from .localhost import is_loopback_peer

ALL_INTERFACES = frozenset({"0.0.0.0", "::", ""})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
_PORT = re.compile(r"[0-9]{1,5}")
_SIOCGIFADDR = 0x8915  # Linux: the IPv4 address of one interface
_IF_INET6 = Path("/proc/net/if_inet6")


def split_host(value: str) -> str | None:
    """The host part of a ``Host`` header or URL authority, lowercase, brackets and one trailing
    dot removed; ``None`` when it is not a well-formed ``host[:port]``."""
    authority = split_authority(value)
    return None if authority is None else authority[0]


def split_authority(value: str) -> tuple[str, str | None] | None:
    """``split_host``'s host and the port as written (``None`` when there is none)."""
    value = value.strip().lower()
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket:
            return None
        port = rest[1:] if rest.startswith(":") else None
        if rest and port is None:
            return None
    else:
        host, colon, port_text = value.partition(":")
        port = port_text if colon else None
        if ":" in port_text:
            return None
    if port is not None and not (_PORT.fullmatch(port) and int(port) <= 65535):
        return None
    return host.removesuffix("."), port


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def is_host_name(host: str) -> bool:
    """A DNS name or an IP address (IPv6 without brackets), as ``split_host`` returns it."""
    return _address(host) is not None or _NAME.fullmatch(host) is not None


def _pattern(entry: str) -> str:
    """One ``allowed-hosts`` entry normalised (lowercase, IPv6 without brackets); ValueError
    naming the entry when it is not a host name, an IP address or ``*.suffix``."""
    text = entry.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if is_host_name(text.removeprefix("*.")):
        return text
    raise ValueError(
        f"allowed-hosts entry {entry!r} is not a host name, an IP address or '*.suffix' "
        "(give the name alone: no scheme, port or path)"
    )


def interface_addresses() -> frozenset[str]:
    """The machine's own addresses and host name: what a browser elsewhere on the network puts in
    ``Host`` when ampbridge listens on all interfaces. Best effort: a lookup that fails adds
    nothing."""
    found: set[str] = set()
    with contextlib.suppress(OSError):
        hostname = socket.gethostname().lower()
        found.add(hostname)
        for *_, sockaddr in socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP):
            found.add(str(sockaddr[0]))
    if sys.platform == "linux":
        found.update(_linux_interface_addresses())
    return frozenset(found)


def _linux_interface_addresses() -> set[str]:
    """IPv4 addresses asked of each interface with one ioctl, IPv6 ones read from /proc."""
    import fcntl

    found: set[str] = set()
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            with contextlib.suppress(OSError):  # an interface without an IPv4 address
                request = struct.pack("256s", name.encode()[:15])
                reply = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
                found.add(socket.inet_ntoa(reply[20:24]))
    with contextlib.suppress(OSError, ValueError):
        for line in _IF_INET6.read_text().splitlines():
            found.add(str(ipaddress.IPv6Address(bytes.fromhex(line.split()[0]))))
    return found


MAX_VERDICTS = 256  # Host headers whose verdict is kept: bounded, whatever names clients send
MAX_KEPT_HOST = 261  # the longest DNS name and a port; a longer Host is judged, never kept


class HostAllowlist:
    """Which host names are ampbridge's own: the loopback names and any 127.x address, the bind
    host, the configured ``allowed-hosts`` (names or ``*.suffix``) and, when bound to all
    interfaces and asked to, the machine's interface addresses. Ports never matter."""

    def __init__(
        self,
        allowed_hosts: Iterable[str] = (),
        *,
        bind_host: str | None = None,
        include_interface_addresses: bool = False,
    ) -> None:
        exact = set(LOOPBACK_NAMES)
        suffixes: list[str] = []
        for entry in allowed_hosts:
            pattern = _pattern(entry)
            if pattern.startswith("*."):
                suffixes.append(pattern[1:])  # keep the dot: "*.a.b" matches "x.a.b", not "a.b"
            else:
                exact.add(pattern)
        if bind_host is not None and bind_host.strip("[]") not in ALL_INTERFACES:
            exact.add(_pattern(bind_host))
        if include_interface_addresses and bind_host is not None and bind_host.strip("[]") in ALL_INTERFACES:
            exact.update(interface_addresses())
        self.exact = frozenset(exact)
        self.suffixes = tuple(suffixes)
        self._verdicts: dict[str, bool] = {}  # per Host header seen; a few names in practice

    def allows_name(self, host: str) -> bool:
        """``host`` is a bare host name or address, as ``split_host`` returns it."""
        if host in self.exact or (self.suffixes and host.endswith(self.suffixes)):
            return True
        address = _address(host)
        if address is None:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_loopback or str(address) in self.exact

    def allows(self, host_header: str) -> bool:
        """``host_header`` as a client sends it: ``name``, ``name:port``, ``[v6]:port``."""
        verdict = self._verdicts.get(host_header)
        if verdict is None:
            host = split_host(host_header)
            verdict = host is not None and self.allows_name(host)
            if len(self._verdicts) < MAX_VERDICTS and len(host_header) <= MAX_KEPT_HOST:
                self._verdicts[host_header] = verdict
        return verdict


def header_values(scope: Scope, name: bytes) -> list[bytes]:
    return [value for key, value in scope.get("headers", ()) if key == name]


class TrustedHosts:
    """421 JSON (the same status on a WebSocket handshake) for a ``Host`` that is not allowed,
    or for several ``Host`` headers; no ``Host`` at all passes only from a loopback peer."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: Iterable[str] | HostAllowlist = (),
        bind_host: str | None = None,
        include_interface_addresses: bool = False,
    ) -> None:
        self.app = app
        self.hosts = (
            allowed_hosts
            if isinstance(allowed_hosts, HostAllowlist)
            else HostAllowlist(
                allowed_hosts, bind_host=bind_host, include_interface_addresses=include_interface_addresses
            )
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        hosts = header_values(scope, b"host")
        if len(hosts) == 1:
            host = hosts[0].decode("latin-1")
            if self.hosts.allows(host):
                await self.app(scope, receive, send)
                return
            message = (
                f"ampbridge is not served under the host name {host[:100]!r}; "
                "add it to allowed-hosts if it is yours"
            )
        elif not hosts and is_loopback_peer(scope.get("client")):
            await self.app(scope, receive, send)
            return
        else:
            message = "a request needs exactly one Host header"
        await refuse(scope, receive, send, 421, "misdirected_request", message)
