"""Profile ampbridge under the benchmark loads with py-spy, and print where its time goes.

Run:  python -m benchmarks.profile [--seconds 8] [--out DIR]

Starts the fake backend (CPU 1) and ``ampbridge serve`` (CPU 0) as ``benchmarks.run`` does, then
samples the ampbridge process with ``py-spy record`` while it serves each load on each path:
``wrk`` at c=64 (small POST) and 32 SSE streams at a time, on the LOCAL and AMP_CREDITS paths.
Each profile is written as collapsed stacks (``DIR/<load>-<path>.txt``, for flamegraph tools) and
summarised here: the functions with the most samples on the stack, and the most samples on top.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from .run import (
    LOAD_CPU,
    LOCAL_MODEL,
    PATH,
    REMOTE_MODEL,
    Server,
    small_body,
    start_all,
    streams,
    wrk_script,
)

PY_SPY = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
PATHS = {"local": LOCAL_MODEL, "upstream": REMOTE_MODEL}


def sse_load(server: Server, model: str, until: float) -> None:
    """Rounds of 32 concurrent SSE streams until ``until`` (a ``time.monotonic`` deadline)."""
    while time.monotonic() < until:
        asyncio.run(streams(server.url, 32, small_body(model, stream=True), None))


def profile(pid: int, seconds: int, out: Path, load: subprocess.Popen | None, work: callable) -> None:
    spy = subprocess.Popen(
        [
            PY_SPY,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    work(time.monotonic() + seconds)
    spy.wait()
    if load is not None:
        load.wait()


def summarise(collapsed: Path, top: int) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    on_top: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        total += count
        frames = [frame.split(" (")[0] + " " + _where(frame) for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += count
        on_top[frames[-1]] += count
    lines = [f"{total} samples"]
    lines.append("  most time on the stack (inclusive):")
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    lines.append("  most time on top (self):")
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in on_top.most_common(top)]
    return "\n".join(lines)


def _where(frame: str) -> str:
    inside = frame.partition(" (")[2].rstrip(")")
    path = inside.rpartition(":")[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if parts else path
    return f"({short})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="ampbridge-profile-")))
    args = parser.parse_args()
    if PY_SPY is None:
        sys.exit("profiling needs py-spy: pip install py-spy")
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    args.out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        setup = start_all(stack, args.out, systems=("ampbridge",))
        amp = setup.ampbridge
        for path, model in PATHS.items():
            script = wrk_script(args.out, small_body(model))
            out = args.out / f"post_c64-{path}.txt"
            wrk = subprocess.Popen(
                ["wrk", "-t2", "-c64", f"-d{args.seconds + 1}s", "-s", str(script), amp.url + PATH],
                stdout=subprocess.DEVNULL,
            )
            profile(amp.process.pid, args.seconds, out, wrk, lambda until: None)
            print(f"\n== wrk c=64, {path}: {summarise(out, args.top)}", flush=True)
            out = args.out / f"sse_c32-{path}.txt"
            profile(amp.process.pid, args.seconds, out, None, lambda until, m=model: sse_load(amp, m, until))
            print(f"\n== SSE c=32, {path}: {summarise(out, args.top)}", flush=True)
    print(f"\ncollapsed stacks: {args.out}")


if __name__ == "__main__":
    main()
