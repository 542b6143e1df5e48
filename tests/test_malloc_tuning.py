"""``reuse_heap_for_bodies``: under glibc, blocks the size of a body piece come from the heap,
a large body's buffer is still mapped on its own. Run in a fresh interpreter: the thresholds are
the process's."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

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
    result = json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, check=True).stdout)
    assert result == {"before": "anonymous", "tuned": True, "after": "[heap]", "large": "anonymous"}
