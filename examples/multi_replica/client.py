"""Show routing by capability through the router, and delegation between replicas.

    python client.py [--router http://127.0.0.1:8080]

1. the router's registry: which replica offers what;
2. ``POST /infer`` to the router with ``X-Capability-*`` headers: each request
   goes to the replica that offers the capability (header ``X-Served-By``);
3. ``heavy`` sent straight to the chat replica over gRPC: it cannot serve it,
   hands it back to the router, and the heavy replica answers
   (response parameter ``anyserve.delegated_from``);
4. a discovery client (``Client(api_server=..., capability=...)``) asks the
   router once, then talks to the heavy replica directly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import httpx

from anyserve import Client

NUMBERS = [1, 2, 3]


def offers(replica: dict, kind: str) -> bool:
    return any(capability.get("type") == kind for capability in replica["capabilities"])


def wait_for_replicas(http: httpx.Client, kinds: set[str], seconds: float) -> list[dict]:
    """The registry once a replica for every kind has registered (replicas register just after `ready`)."""
    deadline = time.monotonic() + seconds
    while True:
        replicas = http.get("/registry").json()["replicas"]
        if all(any(offers(r, kind) for r in replicas) for kind in kinds):
            return replicas
        if time.monotonic() > deadline:
            sys.exit(f"error: no replica for {sorted(kinds)} registered within {seconds:g}s: {replicas}")
        time.sleep(0.2)


def describe(outputs: dict) -> str:
    """What a chat or heavy answer says, in one line."""
    if "result" in outputs:
        return f"sum of squares of {NUMBERS} = {outputs['result'][0]}"
    return str(outputs["text_output"][0])


def through_router(http: httpx.Client, capability: dict[str, str], body: dict, expect: int = 200) -> None:
    """POST /infer with the capability as X-Capability-<Key> headers; print who answered."""
    headers = {f"X-Capability-{key.title()}": value for key, value in capability.items()}
    answer = http.post("/infer", json=body, headers=headers)
    query = "{" + ", ".join(f"{k}={v}" for k, v in capability.items()) + "}"
    if answer.status_code != 200:
        print(f"router: {query} -> HTTP {answer.status_code}: {answer.json().get('error', answer.text)}")
        if answer.status_code != expect:
            sys.exit(1)
        return
    outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
    print(f"router: {query} -> X-Served-By: {answer.headers['X-Served-By']} -> {describe(outputs)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--router", default="http://127.0.0.1:8080", help="the router's URL")
    parser.add_argument("--wait", type=float, default=15.0, help="seconds to wait for the replicas to register")
    args = parser.parse_args()

    with httpx.Client(base_url=args.router, timeout=30) as http:
        replicas = wait_for_replicas(http, {"chat", "heavy"}, args.wait)
        for replica in sorted(replicas, key=lambda r: r["replica_id"]):
            capabilities = json.dumps(replica["capabilities"])
            print(f"registry: {replica['replica_id']} at {replica['endpoint']} offers {capabilities}")

        # Routing by capability: the same endpoint, different headers, different replicas.
        text = {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello router"]}
        numbers = {"name": "numbers", "datatype": "INT64", "shape": [len(NUMBERS)], "data": NUMBERS}
        through_router(http, {"type": "chat"}, {"inputs": [text]})
        through_router(http, {"type": "heavy", "gpus": "2"}, {"inputs": [numbers]})
        through_router(http, {"type": "heavy", "gpus": "8"}, {"inputs": [numbers]}, expect=404)  # nobody offers it

    # Delegation: ask the chat replica itself for `heavy`.
    chat = next(r for r in replicas if offers(r, "chat"))
    with Client(chat["endpoint"], timeout=30) as client:
        result = client.infer("heavy", {"numbers": NUMBERS}, capability={"type": "heavy"})
    print(
        f"delegation: heavy sent to {chat['replica_id']} at {chat['endpoint']} -> served by "
        f"{result['served_by'][0]}, delegated_from={result.parameters.get('anyserve.delegated_from')} "
        f"-> {describe(result)}"
    )

    # Discovery: one router lookup, then gRPC straight to the replica that offers the capability.
    with Client(api_server=args.router, capability={"type": "heavy"}, timeout=30) as client:
        result = client.infer("heavy", {"numbers": NUMBERS})
        print(f"discovery: {{type=heavy}} -> {client.replica_id} at {client.endpoint} -> {describe(result)}")


if __name__ == "__main__":
    main()
