"""Built-in routing (`least_loaded`): best score, hot first, then least in-flight.

``trylast`` so that any installed routing plugin is asked first.
"""

from __future__ import annotations

import random

from anyserve.candidates import COLD, HOT, STARTING
from anyserve.hookspecs import hookimpl


@hookimpl(trylast=True)
def anyserve_select_target(query, candidates, scope):
    best = max(c.score for c in candidates)
    pool = [c for c in candidates if c.score == best]
    for state in (HOT, STARTING, COLD):
        warm = [c for c in pool if c.state == state]
        if warm:
            pool = warm
            break
    least = min(c.in_flight for c in pool)
    # Random among the least loaded: never "first registered wins".
    return random.choice([c for c in pool if c.in_flight == least])
