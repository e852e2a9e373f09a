"""Call each capability of the basic app and print what came back: ``python client.py [--endpoint HOST:PORT]``."""

from __future__ import annotations

import argparse

from anyserve import Client

REVIEWS = ["I love this, the service is great", "This is terrible and slow, I hate it"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default="127.0.0.1:50051", help="the replica's gRPC address")
    args = parser.parse_args()

    # The model name is the capability asked for: "echo" means {type: echo}.
    with Client(args.endpoint, timeout=30) as client:
        echoed = client.infer("echo", {"text": ["hello", "anyserve"], "numbers": [1.5, 2.5]})
        for name, value in echoed.items():
            print(f"echo: {name} = {value}")

        a, b = [1, 2, 3], [10, 20, 30]
        print(f"add: {a} + {b} = {client.infer('add', {'a': a, 'b': b})['sum']}")

        classified = client.infer("classifier", {"text": REVIEWS})
        for text, label, score in zip(REVIEWS, classified["label"], classified["score"], strict=True):
            print(f"classifier: {text!r} -> {label} ({score})")


if __name__ == "__main__":
    main()
