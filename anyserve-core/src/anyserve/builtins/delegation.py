"""Built-in delegation: hand the request back to the router, one hop at most.

``trylast`` so that any installed delegation plugin is asked first.
"""

from __future__ import annotations

from anyserve.delegation import (
    DELEGATED_FROM_HEADER,
    DELEGATION_DEPTH_HEADER,
    MAX_DELEGATION_DEPTH,
    Delegation,
)
from anyserve.hookspecs import hookimpl


@hookimpl(trylast=True)
def anyserve_delegate(query, origin, depth, router_url):
    if not router_url:
        return Delegation.refuse("no router is configured to delegate to")
    if depth >= MAX_DELEGATION_DEPTH:
        return Delegation.refuse(
            f"already delegated {depth} time(s); requests are delegated at most {MAX_DELEGATION_DEPTH} time"
        )
    return Delegation.to(
        router_url,
        {DELEGATED_FROM_HEADER: origin, DELEGATION_DEPTH_HEADER: str(depth + 1)},
    )
