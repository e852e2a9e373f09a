"""Every system bench/llm_bench.py can measure, in the order it measures them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llm_plugin_systems import anyserve_plugin, direct_llamacpp
from llm_systems import Context, Endpoint, anyserve_engines, anyserve_routed, direct, smg, vllm_router


@dataclass(frozen=True)
class System:
    key: str
    label: str
    start: Callable[[Context], Endpoint]
    #: fronts the llama-server engines (so it is compared with direct and the peers)
    fronts_engines: bool = True


SYSTEMS = [
    System("direct", "direct to llama-server", direct),
    System("anyserve", "anyserve router → llama-server", anyserve_engines),
    System(
        "anyserve-rr", "anyserve router → llama-server, round robin as the peers", anyserve_routed("round_robin", "")
    ),
    System("smg", "smg → llama-server", smg),
    System("vllm-router", "vllm-router → llama-server", vllm_router),
    System("direct-llamacpp", "direct to the plugin's engine (llama-cpp-python, bare HTTP)", direct_llamacpp, False),
    System("anyserve-plugin", "anyserve router → replicas (in-replica llama.cpp plugin)", anyserve_plugin, False),
]
