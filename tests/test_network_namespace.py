"""The localhost gate against a real non-loopback peer. The test makes two network namespaces of
its own joined by a veth pair with TEST-NET-1 addresses: ampbridge serves in one, a client in the
other talks to it over real TCP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

SERVER_ADDRESS = "192.0.2.1"  # TEST-NET-1: documentation addresses, never routed anywhere
CLIENT_ADDRESS = "192.0.2.2"
PORT = 8317
DENIED = {"error": "Access denied: management routes restricted to localhost"}

CLIENT = """
import json, sys, time, httpx
base = sys.argv[1]
deadline = time.monotonic() + 20
while True:
    try:
        health = httpx.get(base + "/healthz", timeout=1).status_code
        break
    except httpx.TransportError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
spoofs = [{}, {"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1"}, {"X-Real-IP": "127.0.0.1"},
          {"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": "localhost", "Host": "localhost"}]
results = []
for path in ["/api/user", "/api/internal?getUserInfo", "/threads/T-1", "/actors/gateway/x"]:
    for headers in spoofs:
        response = httpx.get(base + path, headers=headers)
        results.append([path, headers, response.status_code, response.json()])
print(json.dumps({"results": results, "health": health}))
"""


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)


@pytest.fixture
def namespaces():
    suffix = str(os.getpid() % 100000)
    server, client = f"abs{suffix}", f"abc{suffix}"
    try:
        run("ip", "netns", "add", server)
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"this machine cannot create network namespaces (needs root and iproute2): {error}")
    try:
        run("ip", "netns", "add", client)
        run(
            "ip",
            "link",
            "add",
            f"vs{suffix}",
            "netns",
            server,
            "type",
            "veth",
            "peer",
            "name",
            f"vc{suffix}",
            "netns",
            client,
        )
        for namespace, link, address in (
            (server, f"vs{suffix}", SERVER_ADDRESS),
            (client, f"vc{suffix}", CLIENT_ADDRESS),
        ):
            run("ip", "netns", "exec", namespace, "ip", "addr", "add", f"{address}/24", "dev", link)
            run("ip", "netns", "exec", namespace, "ip", "link", "set", link, "up")
            run("ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        yield server, client
    finally:
        subprocess.run(["ip", "netns", "del", client], capture_output=True)
        subprocess.run(["ip", "netns", "del", server], capture_output=True)


def test_a_real_remote_peer_is_denied_with_and_without_spoofed_headers(namespaces, tmp_path):
    server_ns, client_ns = namespaces
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"amp-upstream-url": "http://127.0.0.1:9", "host": "0.0.0.0", "port": PORT})
    )
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            server_ns,
            sys.executable,
            "-m",
            "ampbridge.cli",
            "serve",
            "--config",
            str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        remote = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                client_ns,
                sys.executable,
                "-c",
                CLIENT,
                f"http://{SERVER_ADDRESS}:{PORT}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        local = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                server_ns,
                sys.executable,
                "-c",
                "import httpx; r = httpx.get('http://127.0.0.1:8317/api/user'); print(r.status_code, r.text)",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=15)
    assert remote.returncode == 0, remote.stderr + output
    report = json.loads(remote.stdout)
    assert report["health"] == 200  # the other namespace really reaches the server
    assert len(report["results"]) == 20
    for path, headers, status, body in report["results"]:
        assert (status, body) == (403, DENIED), (path, headers)
    # the control: on the server's own loopback the gate opens (and the dead upstream answers 502)
    assert local.stdout.startswith("502 "), local.stdout + local.stderr
    assert f"{CLIENT_ADDRESS}:" in output  # uvicorn's access log saw the real peer
