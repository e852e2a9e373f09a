"""Print a streamed reply as it arrives: ``python client.py [--endpoint HOST:PORT]``."""

from __future__ import annotations

import argparse

from anyserve import Client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", default="127.0.0.1:50051", help="the replica's gRPC address")
    parser.add_argument("--prompt", default="Say hello")
    args = parser.parse_args()

    with Client(args.endpoint, timeout=30) as client:
        # model_name "chat" asks for the capability type=chat; capability={...} would ask for more.
        for token in client.stream_text("chat", {"text_input": args.prompt}):
            print(token, end="", flush=True)
    print()


if __name__ == "__main__":
    main()
