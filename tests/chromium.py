"""Headless Chromium for the browser tests: loopback only, a fresh profile, nothing else.

``require_chromium()`` skips (or fails under ``CI``) where Debian's ``chromium`` is missing;
``Chromium(url)`` runs it on one page until the test has what it waits for.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-proxy-server",
    "--no-default-browser-check",
    "--mute-audio",
]


def require_chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    reason = f"{CHROMIUM} not found (Debian: apt-get install -y chromium)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


class Chromium:
    """One headless Chromium showing ``url``; ``host_rules`` are ``--host-resolver-rules``
    (e.g. ``MAP attacker.test 127.0.0.1``), so a test name resolves without any DNS."""

    def __init__(self, url: str, *, host_rules: str | None = None) -> None:
        self.url = url
        self.host_rules = host_rules

    def __enter__(self) -> Chromium:
        binary = require_chromium()
        self.profile = tempfile.mkdtemp(prefix="ampbridge-chromium-")
        flags = [*FLAGS, f"--user-data-dir={self.profile}"]
        if self.host_rules:
            flags.append(f"--host-resolver-rules={self.host_rules}")
        self.process = subprocess.Popen(
            [str(binary), *flags, self.url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        assert self.process.stderr is not None
        self.process.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)
