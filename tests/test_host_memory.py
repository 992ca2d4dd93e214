"""The command-line programs keep freed host memory for reuse (ditjax.host_memory)."""

import json
import os
import platform
import subprocess
import sys

import pytest

from ditjax import host_memory

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the allocator settings are glibc's"
)

# Allocates and frees a buffer of argv[2] MiB 1 + argv[3] times, writing every page, and reports
# the minor page faults of the last argv[3] rounds: without the settings each maps fresh pages.
_PROBE = """
import json, resource, sys
from ditjax.host_memory import retain_freed_host_memory
applied = retain_freed_host_memory() if sys.argv[1] == "1" else False
size, rounds = int(sys.argv[2]) << 20, int(sys.argv[3])
def churn():
    buf = bytearray(size)
    buf[::4096] = b"x" * len(range(0, size, 4096))
    del buf
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(rounds):
    churn()
print(json.dumps({"applied": applied,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(apply: bool, env: dict[str, str] | None = None, mib: int = 64, rounds: int = 9) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, "1" if apply else "0", str(mib), str(rounds)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_blocks_are_reused_without_new_page_faults():
    pages = 9 * (64 << 20) // 4096
    default = _probe(apply=False)
    retained = _probe(apply=True)
    assert not default["applied"] and retained["applied"]
    assert default["faults"] > pages // 2
    assert retained["faults"] < pages // 50


def test_a_block_larger_than_2_gib_is_kept_too():
    # A free heap top over glibc's largest positive trim threshold (2**31 - 1) must not be
    # returned to the system either, or a large train step faults its buffer in again.
    mib = 2304
    retained = _probe(apply=True, mib=mib, rounds=1)
    assert retained["applied"]
    assert retained["faults"] < (mib << 20) // 4096 // 50


def test_environment_switch_keeps_the_system_default():
    result = _probe(apply=True, env={host_memory.DISABLE_ENV: "1"})
    assert not result["applied"]
    assert result["faults"] > 9 * (64 << 20) // 4096 // 2
