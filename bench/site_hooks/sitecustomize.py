"""Loaded by the processes of bench/instructions.py and bench/hardening_bench.py (they put this folder on PYTHONPATH).

Each part acts only when its variable is set, so the processes that do
not ask for it run as they would without this file.

``ANYSERVE_BENCH_DEADLINE_TICK`` (bench/instructions.py): under valgrind
every request lives fifty times longer than at full speed, long enough for
the router's deadline ticker to give each one a task that watches its
client, which at full speed an echo never lives to get. The router's ticker
runs at this period instead, so the instructions counted are those of a
request at full speed. Trees from before deadlines existed have no ticker.

``ANYSERVE_BENCH_GC=tuned`` (bench/hardening_bench.py): a tree from before
``anyserve.gc_policy`` gets the garbage collector set up as that module
does it (young collections every 10,000 allocations from the start; what
start-up made collected and frozen a few seconds in, once the process is
serving), so it can be compared with a tree that has the policy, the
collector aside.
"""

import gc
import os
import sys
import threading

_tick = os.environ.get("ANYSERVE_BENCH_DEADLINE_TICK")
if _tick and "router" in sys.argv:
    try:
        from anyserve_router import deadlines
    except ImportError:
        pass
    else:
        deadlines.TICK = float(_tick)
        deadlines.Deadlines.__init__.__defaults__ = (float(_tick),)

if os.environ.get("ANYSERVE_BENCH_GC") == "tuned":
    gc.set_threshold(10_000, *gc.get_threshold()[1:])

    def _settle() -> None:
        gc.collect()
        gc.freeze()

    _timer = threading.Timer(float(os.environ.get("ANYSERVE_BENCH_GC_SETTLE_AFTER", "5")), _settle)
    _timer.daemon = True
    _timer.start()
