"""Measure ampbridge against a direct connection, nginx and a naive Python proxy, interleaved in one run.

Run:  python -m benchmarks.run [--rounds 3] [--seconds 4] [--out benchmarks/results/latest.json]

Systems: ``direct`` (the fake backend itself), ``nginx`` (when installed: a reverse proxy to the
fake, one process), ``naive`` (benchmarks/naive_proxy.py), ``local`` (ampbridge serving a
configured model from the fake backend: LOCAL) and ``upstream`` (ampbridge forwarding an unknown
model to the fake as its Amp upstream: AMP_CREDITS). Every proxy runs on CPU 0; the fake backend,
``wrk`` and this script's clients on CPU 1. Every load runs on every system in turn, round after
round; the report gives medians and ratios within the run, and the load average of each round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
PATH = "/api/provider/anthropic/v1/messages"
LOCAL_MODEL, REMOTE_MODEL, TRANSLATED_MODEL = "bench-local", "bench-remote", "bench-translated"
SYSTEMS = ("direct", "nginx", "naive", "local", "upstream")
PROXY_CPU, LOAD_CPU = "0", "1"
BIG_BODY_BYTES = 10 * 1024 * 1024


def small_body(model: str, stream: bool = False) -> bytes:
    body = {
        "model": model,
        "max_tokens": 16,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def free_ports(count: int) -> list[int]:
    """``count`` different free ports (the probes stay open until all are found, so the kernel
    cannot hand out one port twice)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    url: str

    def rss(self) -> int:
        return _status_kib(self.process.pid, "VmRSS") * 1024

    def reset_peak(self) -> None:
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")  # resets VmHWM

    def peak(self) -> int:
        return _status_kib(self.process.pid, "VmHWM") * 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def start(name: str, command: list[str], port: int, stack: ExitStack, log_dir: Path, cpu: str) -> Server:
    """Run ``command`` pinned to ``cpu`` until ``/healthz`` answers."""
    log = (log_dir / f"{name}.log").open("w")
    stack.callback(log.close)
    process = subprocess.Popen(
        ["taskset", "-c", cpu, *command],  # taskset execs the command: the pid stays the server's
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=log_dir,
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},
    )

    def stop() -> None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()

    stack.callback(stop)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/healthz", timeout=1)
            return Server(name, process, url)
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {log_dir / (name + '.log')}") from None
            time.sleep(0.1)


NGINX_CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    fastcgi_temp_path {work}/nginx-fastcgi;
    uwsgi_temp_path {work}/nginx-uwsgi;
    scgi_temp_path {work}/nginx-scgi;
    upstream fake {{ server 127.0.0.1:{fake_port}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        client_max_body_size 64m;
        location / {{
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
}}
"""


def nginx_command(work: Path, port: int, fake_port: int) -> list[str] | None:
    """nginx as a plain streaming reverse proxy to the fake, one process, as the current user."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        return None
    config = work / "nginx.conf"
    config.write_text(NGINX_CONFIG.format(work=work, port=port, fake_port=fake_port))
    return [nginx, "-e", str(work / "nginx-error.log"), "-p", str(work), "-c", str(config)]


# --- wrk: request rates and latency --------------------------------------------------------


def wrk_script(directory: Path, body: bytes) -> Path:
    path = directory / f"post-{abs(hash(body))}.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return path


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, script: Path, connections: int, seconds: int, server: Server | None = None) -> dict:
    """wrk's throughput, latency and failures; with ``server``, also the CPU time that server's
    process spent per request (a measure other load on the machine hardly moves)."""
    threads = 1 if connections == 1 else 2
    cpu_before = cpu_seconds(server.process.pid) if server else 0.0
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    if server:
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        result["cpu_us"] = (cpu_seconds(server.process.pid) - cpu_before) / max(requests, 1) * 1e6
    for pct in ("50", "99"):
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)\b", out).groups()
        result[f"p{pct}_ms"] = float(value) * _UNITS[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["errors"] = (int(errors.group(1)) if errors else 0) + (
        sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    )
    return result


# --- SSE: time to first event and total, with a raw asyncio client ------------------------------


async def one_stream(host: str, port: int, body: bytes) -> tuple[float, float]:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"POST {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    first = None
    data = b""
    while chunk := await reader.read(65536):
        data += chunk
        if first is None and b"data:" in data:
            first = time.perf_counter() - started
    writer.close()
    if b" 200 " not in data[:20] or data.count(b"data:") < 50:
        raise RuntimeError(f"bad stream: {data[:200]!r}")
    return first or float("nan"), time.perf_counter() - started


async def streams(
    url: str, count: int, body: bytes, server: Server | None, *, one_by_one: bool = False
) -> dict:
    host, port = url.removeprefix("http://").split(":")
    peak = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            if server:
                peak = max(peak, server.rss())
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    before = server.rss() if server else 0
    if one_by_one:
        results = [await one_stream(host, int(port), body) for _ in range(count)]
    else:
        results = await asyncio.gather(*(one_stream(host, int(port), body) for _ in range(count)))
    done.set()
    await sampler
    ttfb = sorted(r[0] * 1000 for r in results)
    total = sorted(r[1] * 1000 for r in results)
    return {
        "ttfb_p50_ms": statistics.median(ttfb),
        "ttfb_p99_ms": ttfb[min(len(ttfb) - 1, int(len(ttfb) * 0.99))],
        "ttfb_last_ms": ttfb[-1],
        "total_p50_ms": statistics.median(total),
        "peak_rss_mib": peak / 2**20,
        "rss_growth_mib": (peak - before) / 2**20,
    }


# --- one large body ------------------------------------------------------------------------


def big_body(model: str) -> bytes:
    head = small_body(model)[:-1]
    return head + b',"metadata":{"padding":"' + b"x" * (BIG_BODY_BYTES - len(head) - 30) + b'"}}'


def upload(url: str, body: bytes, server: Server) -> dict:
    before = server.rss()
    server.reset_peak()
    started = time.perf_counter()
    response = httpx.post(url + PATH, content=body, headers={"Content-Type": "application/json"}, timeout=60)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return {
        "seconds": elapsed,
        "rss_growth_mib": (server.peak() - before) / 2**20,
        "growth_per_body": (server.peak() - before) / len(body),
    }


# --- the run


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk from Debian's packages ...", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    if not shutil.which("wrk"):
        sys.exit("benchmarks need wrk: apt-get install wrk")


def load_average() -> float:
    return os.getloadavg()[0]


@dataclass
class Setup:
    """The running systems: name -> (server, model asked for)."""

    targets: dict[str, tuple[Server, str]]
    fake: Server
    ampbridge: Server


def start_all(
    stack: ExitStack, work: Path, systems: tuple[str, ...] = ("nginx", "naive", "ampbridge")
) -> Setup:
    """Start the fake backend (CPU 1), then nginx, the naive proxy and ampbridge (CPU 0), those
    of them named in ``systems``."""
    fake_port, nginx_port, naive_port, amp_port = free_ports(4)
    python = sys.executable
    fake = start(
        "fake", [python, "-m", "benchmarks.fake_backend", str(fake_port)], fake_port, stack, work, LOAD_CPU
    )
    targets: dict[str, tuple[Server, str]] = {"direct": (fake, REMOTE_MODEL)}
    nginx = nginx_command(work, nginx_port, fake_port)
    if nginx is not None and "nginx" in systems:
        targets["nginx"] = (start("nginx", nginx, nginx_port, stack, work, PROXY_CPU), REMOTE_MODEL)
    if "naive" in systems:
        naive = start(
            "naive",
            [python, "-m", "benchmarks.naive_proxy", str(naive_port), fake.url],
            naive_port,
            stack,
            work,
            PROXY_CPU,
        )
        targets["naive"] = (naive, REMOTE_MODEL)
    (work / "config.yaml").write_text(
        json.dumps(
            {
                "amp-upstream-url": fake.url,
                "providers": [
                    {"name": "bench", "type": "anthropic", "base-url": fake.url, "models": [LOCAL_MODEL]},
                    # an Anthropic call for this model is translated to Chat Completions and back
                    {
                        "name": "bench-chat",
                        "type": "openai",
                        "base-url": fake.url + "/v1",
                        "models": [TRANSLATED_MODEL],
                    },
                ],
            }
        )
    )
    amp = start(
        "ampbridge",
        [
            python,
            "-m",
            "ampbridge.cli",
            "serve",
            "--port",
            str(amp_port),
            "--config",
            str(work / "config.yaml"),
        ],
        amp_port,
        stack,
        work,
        PROXY_CPU,
    )
    targets["local"] = (amp, LOCAL_MODEL)
    targets["upstream"] = (amp, REMOTE_MODEL)
    return Setup(targets, fake, amp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4, help="duration of each wrk run")
    parser.add_argument("--streams", type=int, default=256, help="concurrent SSE streams in the wide run")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    args = parser.parse_args()
    ensure_wrk()
    os.sched_setaffinity(0, {int(LOAD_CPU)})  # this script's clients and wrk share the fake's CPU
    work = Path(tempfile.mkdtemp(prefix="ampbridge-bench-"))
    samples: dict[str, dict[str, list[dict]]] = {}
    loads: list[float] = []
    with ExitStack() as stack:
        setup = start_all(stack, work)
        targets = setup.targets
        scripts = {name: wrk_script(work, small_body(model)) for name, (_, model) in targets.items()}

        def record(load: str, system: str, result: dict) -> None:
            for server, _ in targets.values():  # a server that died would make the numbers lie
                if server.process.poll() is not None:
                    raise RuntimeError(f"{server.name} exited; see {work / (server.name + '.log')}")
            samples.setdefault(load, {}).setdefault(system, []).append(result)
            print(f"  {load:<12} {system:<9} {json.dumps(result)}", flush=True)

        for name, (server, _) in targets.items():  # warm up every path once
            run_wrk(server.url + PATH, scripts[name], 8, 1)
        for round_number in range(1, args.rounds + 1):
            loads.append(load_average())
            print(f"round {round_number}/{args.rounds} (load average {loads[-1]:.2f})", flush=True)
            for name, (server, _) in targets.items():
                record("post_c1", name, run_wrk(server.url + PATH, scripts[name], 1, args.seconds))
            for name, (server, _) in targets.items():
                record("post_c64", name, run_wrk(server.url + PATH, scripts[name], 64, args.seconds, server))
            for name, (server, model) in targets.items():
                body = small_body(model, stream=True)
                record("sse_1", name, asyncio.run(streams(server.url, 5, body, server, one_by_one=True)))
            translated = small_body(TRANSLATED_MODEL, stream=True)
            amp = setup.ampbridge
            record("sse_1", "translated", asyncio.run(streams(amp.url, 5, translated, amp, one_by_one=True)))
            for name, (server, model) in targets.items():
                record(
                    "sse_32",
                    name,
                    asyncio.run(streams(server.url, 32, small_body(model, stream=True), server)),
                )
            for name, (server, model) in targets.items():
                body = small_body(model, stream=True)
                record(
                    f"sse_{args.streams}", name, asyncio.run(streams(server.url, args.streams, body, server))
                )
            # Fresh processes: memory an earlier load freed (256 streams) stays resident and would
            # take the body without any growth, hiding what the body costs.
            with ExitStack() as fresh:
                round_dir = work / f"fresh-{round_number}"
                round_dir.mkdir()
                for name, (server, model) in start_all(fresh, round_dir).targets.items():
                    httpx.post(server.url + PATH, content=small_body(model), timeout=10)  # starts the app
                    record("body_10mib", name, upload(server.url, big_body(model), server))
        loads.append(load_average())
    report = summarize(samples)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"samples": samples, "summary": report, "load_average": loads}, indent=2))
    print_report(report, args.streams, loads)
    print(f"\nresults: {args.out}")


def median_of(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def summarize(samples: dict) -> dict:
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for load, systems in samples.items():
        summary[load] = {
            system: {key: median_of(results, key) for key in results[0]}
            for system, results in systems.items()
        }
    return summary


def print_report(summary: dict, wide: int, loads: list[float]) -> None:
    rows = [
        ("post_c1", "p50_ms", "small POST, c=1, p50 latency (ms)"),
        ("post_c1", "p99_ms", "small POST, c=1, p99 latency (ms)"),
        ("post_c64", "rps", "small POST, c=64, requests/s"),
        ("post_c64", "p50_ms", "small POST, c=64, p50 latency (ms)"),
        ("post_c64", "p99_ms", "small POST, c=64, p99 latency (ms)"),
        ("post_c64", "cpu_us", "small POST, c=64, server CPU per request (us)"),
        ("sse_1", "ttfb_p50_ms", "SSE x1, time to first event (ms)"),
        ("sse_1", "total_p50_ms", "SSE x1, total (ms)"),
        ("sse_32", "ttfb_p50_ms", "SSE c=32, time to first event p50 (ms)"),
        (f"sse_{wide}", "ttfb_p50_ms", f"SSE x{wide}, time to first event p50 (ms)"),
        (f"sse_{wide}", "ttfb_last_ms", f"SSE x{wide}, last first event (ms)"),
        (f"sse_{wide}", "total_p50_ms", f"SSE x{wide}, total p50 (ms)"),
        (f"sse_{wide}", "peak_rss_mib", f"SSE x{wide}, server peak RSS (MiB)"),
        ("body_10mib", "seconds", "10 MiB body, seconds"),
        ("body_10mib", "growth_per_body", "10 MiB body, peak RSS growth / body size"),
    ]
    systems = [s for s in SYSTEMS if s in summary["post_c1"]]
    header = f"{'measure':<44}" + "".join(f"{s:>10}" for s in systems)
    header += f"{'local/naive':>12}{'up/naive':>10}{'local/dir':>10}{'up/dir':>8}"
    print(f"\nload average per round: {', '.join(f'{load:.2f}' for load in loads)}")
    print("\n" + header + "\n" + "-" * len(header))
    for load, key, label in rows:
        values = {s: summary[load][s][key] for s in systems}
        ratios = [
            values[a] / values[b] if values[b] else float("nan")
            for a, b in (
                ("local", "naive"),
                ("upstream", "naive"),
                ("local", "direct"),
                ("upstream", "direct"),
            )
        ]
        print(
            f"{label:<44}"
            + "".join(f"{values[s]:>10.2f}" for s in systems)
            + "".join(f"{r:>{w}.2f}" for r, w in zip(ratios, (12, 10, 10, 8), strict=True))
        )
    translated = summary["sse_1"]["translated"]["ttfb_p50_ms"]
    print(f"{'SSE x1, time to first event, translated (ms)':<44}{translated:>10.2f}")
    print("\ntargets:")
    for label, value, limit in target_checks(summary, wide):
        met = value >= -limit if limit < 0 else value <= limit
        print(f"  {'MET   ' if met else 'MISSED'} {label}: {value:.2f}")


def target_checks(summary: dict, wide: int) -> list[tuple[str, float, float]]:
    """(label, value, limit): met when value <= limit, or value >= -limit for a negative limit."""
    c1, c64, sse32, sse = summary["post_c1"], summary["post_c64"], summary["sse_32"], summary[f"sse_{wide}"]
    body, direct, naive = summary["body_10mib"], "direct", "naive"
    checks: list[tuple[str, float, float]] = []
    for path, name in (("local", "LOCAL"), ("upstream", "AMP_CREDITS")):
        checks += [
            (
                f"{name}: added p50 at c=1 over direct <= 0.5 ms",
                c1[path]["p50_ms"] - c1[direct]["p50_ms"],
                0.5,
            ),
            (
                f"{name}: no failed requests (wrk, median of rounds)",
                c1[path]["errors"] + c64[path]["errors"],
                0.0,
            ),
            (f"{name}: c=64 requests/s >= 2,500", c64[path]["rps"], -2500),
            (f"{name}: c=64 requests/s >= 7x naive", c64[path]["rps"] / c64[naive]["rps"], -7.0),
            (f"{name}: c=64 p99 <= 3x p50", c64[path]["p99_ms"] / c64[path]["p50_ms"], 3.0),
            (
                f"{name}: SSE c=32 first event p50 <= naive's (ratio)",
                sse32[path]["ttfb_p50_ms"] / sse32[naive]["ttfb_p50_ms"],
                1.0,
            ),
            (
                f"{name}: SSE c=32 first event p50 - direct <= 15 ms",
                sse32[path]["ttfb_p50_ms"] - sse32[direct]["ttfb_p50_ms"],
                15.0,
            ),
            (f"{name}: SSE x{wide} last first event <= 250 ms", sse[path]["ttfb_last_ms"], 250.0),
            (
                f"{name}: SSE x1 first event within 2 ms of direct",
                summary["sse_1"][path]["ttfb_p50_ms"] - summary["sse_1"][direct]["ttfb_p50_ms"],
                2.0,
            ),
            (f"{name}: SSE x{wide} peak RSS < 150 MiB", sse[path]["peak_rss_mib"], 150.0),
            (f"{name}: 10 MiB body peak RSS growth <= 1.1x body", body[path]["growth_per_body"], 1.1),
            (f"{name}: 10 MiB body time <= 1.2x naive", body[path]["seconds"] / body[naive]["seconds"], 1.2),
        ]
    checks.append(
        (
            "translated call: SSE x1 first event within 2 ms of an untranslated local call",
            summary["sse_1"]["translated"]["ttfb_p50_ms"] - summary["sse_1"]["local"]["ttfb_p50_ms"],
            2.0,
        )
    )
    return checks


if __name__ == "__main__":
    main()
