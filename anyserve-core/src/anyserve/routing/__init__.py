"""Routing as a pipeline: filters, then weighted scorers, then a picker.

Every routing decision, the router's among replicas and an agent's among its
workers, runs one :class:`~anyserve.routing.pipeline.Pipeline`:

1. **filters** drop candidates that must not serve the request (``best_match``:
   only the best capability match; ``routable``: not failed, stopping or
   draining; ``budget``: not a cold offer that does not fit its replica's budget);
2. **scorers** give every remaining candidate a score in [0, 1]
   (``least_load``, ``cold_start``, ``residency``, ``session``, ``prefix``),
   summed with the weights ``[routing.scorers]`` sets;
3. a **picker** chooses one by those totals (``highest``, ``round_robin``,
   ``p2c``, ``weighted_random``).

Each stage is a named record contributed through the
``anyserve_register_routing`` hook, built-ins included, and selected by name
from the ``[routing]`` settings. A plugin implementing the older
``anyserve_select_target`` hook still decides: it is asked in the picker's
place, with the pipeline's totals on each candidate's ``route_score``.
"""

from anyserve.routing.pipeline import Pipeline, build_pipeline
from anyserve.routing.request import RouteRequest
from anyserve.routing.stages import FILTER, KINDS, PICKER, SCORER, Filter, Picker, Scorer

__all__ = [
    "FILTER",
    "KINDS",
    "PICKER",
    "SCORER",
    "Filter",
    "Picker",
    "Pipeline",
    "RouteRequest",
    "Scorer",
    "build_pipeline",
]
