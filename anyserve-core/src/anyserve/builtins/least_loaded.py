"""Built-in routing (`least_loaded`): best score, hot first, then least in-flight, ties taken in turn.

Equally loaded replicas are taken in turn rather than at random: requests
that arrive one after another then land on different replicas. For LLM
engines that matters beyond the count: two prompts reaching one engine
together are prefilled together, and both wait for both, while a random
tie-break sends a second arrival to the same engine half the time (seen as
a doubled time to first token for one stream in four, 4 streams on 2
llama-server engines of 2 slots each; bench/llm_bench.py).

``trylast`` so that any installed routing plugin is asked first.
"""

from __future__ import annotations

import itertools

from anyserve.candidates import COLD, HOT, STARTING
from anyserve.hookspecs import hookimpl

#: One turn counter per process: cheap, and fair enough across queries.
_turn = itertools.count()


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
    ties = [c for c in pool if c.in_flight == least]
    if len(ties) == 1:
        return ties[0]
    # In turn, in a stable order (by id): never "first registered wins", and never twice in a row by chance.
    ties.sort(key=lambda c: c.id)
    return ties[next(_turn) % len(ties)]
