"""Amp's public actor routing token (``rvt-token``, SPEC §11) on the wire: added to ``/actors/*``
toward a non-loopback upstream, never toward a loopback one, and never shown in a log line.

The non-loopback upstream is a real host: the test makes a network namespace of its own, joins it
to this one with a veth pair on benchmark addresses (198.18.0.0/15, never routed anywhere), and
runs the fake actor gateway on a socket opened inside it. The gateway there wants the token, as
Amp's cloud does, so a turn only completes when ampbridge adds it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn

from ampbridge.logs import OWNED_LOGGERS, RedactSecrets
from ampbridge.settings import Settings

from .fake_actor_gateway import FakeActorGateway
from .servers import ServerThread, eventually
from .test_amp_cli import install_native
from .test_native_cli import (
    AMP_KEY,
    GATEWAY_PATH,
    PING,
    actor_query,
    create_thread,
    executor_session,
    import_thread,
    socket_params,
)

SETTING_TOKEN = "pk_settingRoutingToken0123456789"
INSTALLED_TOKEN = "pk_fakeRoutingToken0123456789"  # what install_native writes into the fake CLI
CLONE_NEWNET = 0x40000000


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)


def socket_in_namespace(namespace: str, address: str) -> socket.socket:
    """A TCP socket bound to ``address`` inside ``namespace``: opened by a thread that joins that
    namespace (a network namespace is per thread), then used from any thread."""
    made: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/var/run/netns/{namespace}") as handle:
                if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, 0))
            made.append(sock)
        except BaseException as error:  # handed to the test thread below
            made.append(error)

    worker = threading.Thread(target=make)
    worker.start()
    worker.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


@contextmanager
def serve_on(app: Any, sock: socket.socket, **config: Any) -> Iterator[tuple[str, int | None]]:
    """uvicorn serving ``app`` on an already bound socket, like ``ServerThread`` does."""
    host, port = sock.getsockname()[:2]
    options = {"log_config": None, "lifespan": "auto", "proxy_headers": False, **config}
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert eventually(lambda: server.started or not thread.is_alive(), timeout=15) and server.started
        yield f"http://{host}:{port}", thread.ident
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture(scope="module")
def remote_address() -> Iterator[tuple[str, str]]:
    """A network namespace reachable from here at a non-loopback address: (namespace, address)."""
    pid = os.getpid()
    namespace, here, there = f"art{pid}", f"vra{pid % 100000}", f"vrb{pid % 100000}"
    subnet = f"198.18.{pid % 256}.{(pid // 256) % 64 * 4}"
    base = subnet.rsplit(".", 1)
    near, far = f"{base[0]}.{int(base[1]) + 1}", f"{base[0]}.{int(base[1]) + 2}"
    try:
        run("ip", "netns", "add", namespace)
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"this machine cannot create network namespaces (needs root and iproute2): {error}")
    try:
        run("ip", "link", "add", here, "type", "veth", "peer", "name", there, "netns", namespace)
        run("ip", "addr", "add", f"{near}/30", "dev", here)
        run("ip", "link", "set", here, "up")
        run("ip", "netns", "exec", namespace, "ip", "addr", "add", f"{far}/30", "dev", there)
        run("ip", "netns", "exec", namespace, "ip", "link", "set", there, "up")
        run("ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        yield namespace, far
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


@contextmanager
def gateway_at(address: tuple[str, str] | None, token: str | None) -> Iterator[FakeActorGateway]:
    """The fake actor gateway in the namespace (``address``) or on this host's loopback (None)."""
    gateway = FakeActorGateway({AMP_KEY}, routing_token=token)
    if address is None:
        with ServerThread(gateway, **PING) as thread:
            gateway.url = thread.url  # type: ignore[attr-defined]
            gateway.thread_id = thread.thread.ident  # type: ignore[attr-defined]
            yield gateway
        return
    as_fake = {"http": "h11", "date_header": False, "server_header": False}  # as ServerThread runs fakes
    with serve_on(gateway, socket_in_namespace(*address), **as_fake, **PING) as (url, thread_id):
        gateway.url = url  # type: ignore[attr-defined]
        gateway.thread_id = thread_id  # type: ignore[attr-defined]
        yield gateway


def native_turn(base: str) -> tuple[str, dict[str, Any], int]:
    async def turn() -> tuple[str, dict[str, Any], int]:
        thread = await create_thread(base, None)
        seen = await executor_session(base, thread["threadId"], socket_params(thread["wsToken"]))
        imported = await import_thread(base, thread["threadId"], {"wsToken": thread["wsToken"]})
        return thread["threadId"], seen, imported.status_code

    return anyio.run(turn)


def shown_log_lines(
    caplog: pytest.LogCaptureFixture, upstream: FakeActorGateway, *, debug: bool
) -> list[str]:
    """Every line ampbridge's log handlers would print for the captured records (its own,
    uvicorn's and websockets' loggers from INFO up, or any level with ``debug: true``, masked as they mask them; anything else
    only from WARNING up, as Python's last-resort handler prints it), plus the raw messages of
    ampbridge's own loggers, which must not need the mask. The fake upstream's own lines (it runs
    in this process too) are not ampbridge's."""
    mask = RedactSecrets()
    lines = []
    for record in caplog.records:
        if record.thread == upstream.thread_id:  # type: ignore[attr-defined]
            continue
        if record.name.split(".")[0] in OWNED_LOGGERS and (debug or record.levelno >= logging.INFO):
            if record.name.startswith("ampbridge"):
                lines.append(record.getMessage())
            # the message, arguments and string extras (a websockets record's connection proxy is gone)
            fields = {k: v for k, v in record.__dict__.items() if k in ("name", "msg", "args", "levelno")}
            extras = {k: v for k, v in record.__dict__.items() if type(v) is str}
            copy = logging.makeLogRecord({**extras, **fields})
            mask.filter(copy)
            lines.append(copy.getMessage())
        elif record.levelno >= logging.WARNING:
            lines.append(record.getMessage())
    return lines


def fake_installed_cli(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH finds a fake native Amp CLI holding ``INSTALLED_TOKEN``."""
    bin_dir = tmp_path / "bin"
    install_native(bin_dir)
    return {"PATH": str(bin_dir), "HOME": str(tmp_path / "home")}


PARAMETERS = [
    ("setting", False),
    ("installed-cli", False),
    ("setting", True),  # debug: websockets' client logs its handshake request line
]


@pytest.mark.parametrize(("source", "debug"), PARAMETERS)
def test_routing_token_is_added_toward_a_non_loopback_upstream_and_never_logged(
    remote_address, bridge, tmp_path, caplog, source, debug
):
    caplog.set_level(logging.DEBUG)
    token = SETTING_TOKEN if source == "setting" else INSTALLED_TOKEN
    configured = {"amp_actor_routing_token": SETTING_TOKEN} if source == "setting" else {}
    environ = fake_installed_cli(tmp_path) if source == "installed-cli" else {}
    with gateway_at(remote_address, token) as gateway:
        settings = Settings(
            amp_upstream_url=gateway.url, amp_upstream_api_key=AMP_KEY, debug=debug, **configured
        )
        ampbridge = bridge(settings, environ=environ, **PING)
        thread, seen, imported = native_turn(ampbridge.url)
        assert seen["pong_after_idle"] == "pong" and imported == 200
        assert gateway.refusals == []
        (created,) = [r for r in gateway.requests if r.path == "/api/thread-actors"]
        (upgrade,) = gateway.websockets
        (call,) = [r for r in gateway.requests if r.path.startswith(GATEWAY_PATH)]
    assert gateway.url.split("//")[1].startswith("198.18.")
    # Appended to the CLI's own query, every other byte kept; only on the actor gateway.
    for request in (upgrade, call):
        assert request.query.decode() == f"{actor_query(thread)}&rvt-token={token}"
    assert created.query == b""
    lines = shown_log_lines(caplog, gateway, debug=debug)
    assert any("/actors/gateway/threadActor/websocket/" in line for line in lines)  # the lines were captured
    assert not [line for line in lines if token in line]


def test_a_routing_token_the_client_sent_is_kept_not_doubled(remote_address, bridge):
    with gateway_at(remote_address, "client-own-token") as gateway:
        settings = Settings(amp_upstream_url=gateway.url, amp_actor_routing_token=SETTING_TOKEN)
        ampbridge = bridge(settings)

        async def call() -> int:
            base = ampbridge.url + f"{GATEWAY_PATH}/request/import?rvt-key=T-1&rvt-token=client-own-token"
            async with httpx.AsyncClient() as client:
                reply = await client.post(
                    base, headers={"x-rivet-conn-params": '{"apiKey":"' + AMP_KEY + '"}'}
                )
            return reply.status_code

        assert anyio.run(call) == 200
        (request,) = gateway.requests
    assert request.query == b"rvt-key=T-1&rvt-token=client-own-token"


@pytest.mark.parametrize("source", ["setting", "installed-cli"])
def test_no_routing_token_toward_a_loopback_upstream(bridge, tmp_path, caplog, source):
    caplog.set_level(logging.DEBUG)
    configured = {"amp_actor_routing_token": SETTING_TOKEN} if source == "setting" else {}
    environ = fake_installed_cli(tmp_path) if source == "installed-cli" else {}
    with gateway_at(None, None) as gateway:
        settings = Settings(amp_upstream_url=gateway.url, amp_upstream_api_key=AMP_KEY, **configured)
        ampbridge = bridge(settings, environ=environ, **PING)
        thread, seen, imported = native_turn(ampbridge.url)
    assert seen["pong_after_idle"] == "pong" and imported == 200
    (upgrade,) = gateway.websockets
    (call,) = [r for r in gateway.requests if r.path.startswith(GATEWAY_PATH)]
    for request in (upgrade, call):
        assert request.query.decode() == actor_query(thread)
    token = SETTING_TOKEN if source == "setting" else INSTALLED_TOKEN
    assert not [line for line in shown_log_lines(caplog, gateway, debug=False) if token in line]
