"""``reuse_heap_for_bodies``: under glibc, blocks the size of a body piece come from the heap,
a large body's buffer is still mapped on its own. Run in a fresh interpreter: the thresholds are
the process's."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]  # the folder holding this tests/ and its ampbridge/
# The probe starts clean: glibc reads these at start, and would set thresholds of its own.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}


def run_probe(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter that imports this checkout's ampbridge."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=CHECKOUT, env=CLEAN_ENV, capture_output=True, text=True, check=True
    )


PROBE = """
import json, sys
from ampbridge.malloc_tuning import reuse_heap_for_bodies

def region(block):
    address = id(block)
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, *rest = line.split()
            start, end = (int(x, 16) for x in span.split("-"))
            if start <= address < end:
                return rest[-1] if len(rest) == 5 else "anonymous"
    return "?"

piece = 1 << 20
before = region(b"x" * piece)
tuned = reuse_heap_for_bodies()
after = region(b"x" * piece)
large = region(b"x" * (16 << 20))
print(json.dumps({"before": before, "tuned": tuned, "after": after, "large": large}))
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_under_glibc_body_sized_blocks_come_from_the_heap_and_large_ones_stay_mapped():
    result = json.loads(run_probe(PROBE).stdout)
    assert result == {"before": "anonymous", "tuned": True, "after": "[heap]", "large": "anonymous"}


def test_a_python_without_ctypes_runs_the_cli_untuned():
    """Pythons built without libffi have no ``_ctypes``: every command still starts, and the
    tuning is skipped."""
    code = (
        "import sys; sys.modules['_ctypes'] = None; import ampbridge.cli\n"
        "from ampbridge.malloc_tuning import reuse_heap_for_bodies; print(reuse_heap_for_bodies())"
    )
    assert run_probe(code).stdout.strip() == "False"
