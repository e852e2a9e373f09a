"""The replica runtime: an agent speaking KServe v2 gRPC, and its workers.

* :mod:`~anyserve.replica.worker` — runs an app's handlers behind a transport;
* :mod:`~anyserve.replica.pool` — the agent's view of its workers and the choice among them;
* :mod:`~anyserve.replica.supervisor` — starts, watches and restarts worker processes;
* :mod:`~anyserve.replica.lifecycle` — worker classes started on demand, stopped when idle;
* :mod:`~anyserve.replica.agent` — the gRPC service;
* :mod:`~anyserve.replica.link_service` — the agent served over the router link;
* :mod:`~anyserve.replica.membership` — staying registered with the router;
* :mod:`~anyserve.replica.server` — wires it together for ``anyserve start``.

docs/architecture.md ("Where things live") lists every module.
"""
