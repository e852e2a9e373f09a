"""Sends a sequence of chat requests and shows what each one cost.

Only requests that change the served model pay the switching cost.
"""

from __future__ import annotations

import sys
import time

from anyserve import Client

SEQUENCE = ["llama-8b", "llama-8b", "llama-8b", "mistral-7b", "mistral-7b", "llama-8b"]


def main(endpoint: str) -> None:
    with Client(endpoint, timeout=60) as client:
        previous = None
        for model in SEQUENCE:
            began = time.perf_counter()
            answer = client.infer("chat", {"prompt": "tell me a story"}, capability={"type": "chat", "model": model})
            seconds = time.perf_counter() - began
            switched = "switch" if model != previous else "same model"
            print(f"{model:<11} {seconds:6.2f}s  ({switched})  {answer['text_output'][0]}")
            previous = model


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051")
