"""Start an IPython kernel under a data-memory cap (the kernel the grading sandbox runs).

Usage: ``python -m course_lib.grading.sandbox.kernel MEMORY_BYTES -f CONNECTION_FILE``

The cap (``RLIMIT_DATA``: heap and anonymous mappings, what NumPy and PyTorch allocate)
binds the kernel, where student code runs, and not the executor that talks to it, so a
cell that prints or allocates too much fails in the kernel while the executor survives
to record what happened.
"""

from __future__ import annotations

import resource
import runpy
import sys

if __name__ == "__main__":
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
