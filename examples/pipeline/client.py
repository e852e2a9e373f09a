"""Send a text file to the pipeline through the router and print the summary.

    python client.py --router http://127.0.0.1:8080 README.md

A plain KServe v2 JSON request to ``POST /infer`` with header
``X-Capability-Type: ingest``: no anyserve client library needed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="a UTF-8 text file to summarize")
    parser.add_argument("--router", default="http://127.0.0.1:8080", help="the router's URL")
    parser.add_argument("--repeat", type=int, default=1, help="send the text this many times over (bigger input)")
    args = parser.parse_args()

    text = args.file.read_text(encoding="utf-8") * args.repeat
    tensor = {"name": "text", "datatype": "BYTES", "shape": [1], "data": [text], "parameters": {"content_type": "str"}}
    body = {"inputs": [tensor]}
    answer = httpx.post(f"{args.router}/infer", json=body, headers={"X-Capability-Type": "ingest"}, timeout=120)
    if answer.status_code != 200:
        print(f"error: HTTP {answer.status_code}: {answer.text}", file=sys.stderr)
        return 1
    outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
    print(json.dumps(json.loads(outputs["summary"][0]), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
