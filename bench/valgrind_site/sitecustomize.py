"""Loaded only by bench/instructions.py's processes (it puts this folder on their PYTHONPATH).

Under valgrind every request lives fifty times longer than at full speed,
long enough for the router's deadline ticker to give each one a task that
watches its client, which at full speed an echo never lives to get. With
``ANYSERVE_BENCH_DEADLINE_TICK`` set, the router's ticker runs at that
period instead, so the instructions counted are those of a request at full
speed. Trees from before deadlines existed have no ticker: nothing to do.
"""

import os
import sys

_tick = os.environ.get("ANYSERVE_BENCH_DEADLINE_TICK")
if _tick and "router" in sys.argv:
    try:
        from anyserve_router import deadlines
    except ImportError:
        pass
    else:
        deadlines.TICK = float(_tick)
        deadlines.Deadlines.__init__.__defaults__ = (float(_tick),)
