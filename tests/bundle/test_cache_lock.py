"""The bundle's caches are filled under a lock: `make test` builds a bundle for the tests outside the VM and one for
the VM's converge at the same time, and on a cold cache one must wait for the other rather than delete its files."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from airgap.wheels import REPO, cache_lock

HOLD = """
import sys, time
from pathlib import Path
from airgap.wheels import cache_lock
with cache_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_second_builder_waits_for_the_first(tmp_path: Path) -> None:
    entry = tmp_path / "vm-wheelhouse" / "key"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(entry), "3"], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with cache_lock(entry):
            waited = time.monotonic() - start
            # The holder has let go only once it exited its block: it is done (or about to be) when we get the lock.
            assert holder.wait(timeout=60) == 0
        assert waited > 0.5, f"the lock was not held by the other process (got it after {waited:.2f} s)"
    finally:
        holder.kill()


def test_the_lock_is_per_cache_entry(tmp_path: Path) -> None:
    with cache_lock(tmp_path / "a"), cache_lock(tmp_path / "b"):
        pass  # two different entries never wait on each other (this would deadlock with one shared lock)
