"""Every setting, its type, default and bounds: the tables of the configuration, validated by pydantic.

Reading them from a file, ``ANYSERVE_*`` variables and flags is
:mod:`anyserve.config`'s job; configuration docs list each with its
variable (docs/configuration.md).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from anyserve.runtime_dir import default_objects_url


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Selection(_Table):
    """A plugin picked by name, plus the options its factory receives."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class ObjectsSettings(_Table):
    """The object store (``url`` picks the backend by scheme) and how long objects live."""

    #: Default: ``objects`` in the user's runtime directory, ``$XDG_RUNTIME_DIR/anyserve/objects`` or else
    #: ``/tmp/anyserve-<uid>/objects`` (that directory 0700, refused if another user or group may enter it).
    url: str = Field(default_factory=default_objects_url)
    options: dict[str, Any] = Field(default_factory=dict)
    #: A replica with an explicitly configured store deletes objects last written
    #: longer ago than this, in the background; 0 disables the collection.
    ttl_seconds: float = Field(default=3600.0, ge=0, allow_inf_nan=False)
    #: Seconds between two background collections.
    gc_interval_seconds: float = Field(default=60.0, gt=0, allow_inf_nan=False)


class EngineSettings(_Table):
    """An OpenAI-compatible engine server the router fronts (vLLM, SGLang, TGI, Ollama, llama.cpp's server)."""

    #: Its base URL, e.g. ``http://127.0.0.1:8000``.
    url: str
    #: Its id in the registry (default: derived from the URL).
    id: str | None = None
    #: Capabilities to offer; empty: ``{type: <each of types>, model: <id>}`` for each model ``/v1/models`` lists.
    capabilities: list[dict[str, str | int | float | bool]] = Field(default_factory=list)
    types: list[str] = Field(default_factory=lambda: ["chat", "completion"])


class RouterSettings(_Table):
    """Where replicas find the router (``url``) and how ``anyserve router`` runs."""

    url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    #: Port of the router's KServe v2 gRPC front (``inference.GRPCInferenceService``,
    #: health, reflection); unset serves HTTP only, 0 picks a free port.
    grpc_port: int | None = Field(default=None, ge=0, le=65535)
    #: A replica that has not heartbeated for this long leaves the registry.
    ttl_seconds: float = Field(default=15.0, gt=0)
    #: Largest HTTP request body accepted, in bytes.
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    #: What to do when no replica matches: answer 404, or send the request to
    #: some replica anyway and let that replica's delegation policy decide where it goes.
    no_match: Literal["404", "any-replica"] = "404"
    #: Engine servers to front from the start (``[[router.engines]]``); ``POST /engines`` adds more.
    engines: list[EngineSettings] = Field(default_factory=list)
    #: Seconds a request may take when its client sets no deadline (``X-Request-Timeout``, gRPC's own, the
    #: OpenAI SDK's timeout); past it the answer is 504. A stream's deadline bounds its first response only.
    default_deadline_seconds: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    #: Seconds a request waits for capacity that is on its way (a replica re-registering after a router
    #: restart, a worker class back from ``failed``, a replica that went silent) before a 503 with Retry-After.
    capacity_wait_seconds: float = Field(default=5.0, ge=0, allow_inf_nan=False)
    #: Seconds the router remembers what a silent (expired) replica offered: asking for it then is a 503, not a 404.
    offer_memory_seconds: float = Field(default=300.0, ge=0, allow_inf_nan=False)
    #: Seconds between a replica's heartbeats (ttl/3 if that is less): a restarted router hears from every
    #: live replica within this, and waits that long (plus half a second) before a 404 after it starts.
    heartbeat_seconds: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    #: Request bodies the router holds at once, in bytes, all requests together; past it a request is
    #: answered 503 with Retry-After (413 if its body alone is bigger), before its body is read.
    max_body_bytes_in_flight: int = Field(default=256 * 1024 * 1024, ge=1024)
    #: Largest body of a registration or heartbeat, in bytes (they are small; 80,000 capabilities are not).
    max_registration_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: Capabilities one replica may register; routing cost grows with them.
    max_capabilities: int = Field(default=256, ge=1)
    #: Replicas (and engine servers) registered at once; a new one past it is refused with 503 until one leaves.
    max_replicas: int = Field(default=10_000, ge=1)
    #: Longest capability key or string value, in characters.
    max_capability_chars: int = Field(default=256, ge=8)
    #: Endpoint addresses a replica or engine may register although they are refused by default
    #: (link-local and cloud metadata, unspecified, multicast), as networks: ``["169.254.10.0/24"]``.
    allowed_endpoint_networks: list[str] = Field(default_factory=list)
    #: Largest request line plus headers, in bytes; past it the router answers 431 and closes.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    #: Seconds a client has, from connecting or from the first byte of a request, to send all its headers.
    header_timeout_seconds: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    #: Seconds an idle keep-alive connection is kept open between requests.
    keep_alive_seconds: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    #: Seconds any request body may take; a longer one must keep arriving at ``body_min_bytes_per_second``
    #: on average, else the router answers 408 and closes.
    body_timeout_seconds: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    body_min_bytes_per_second: int = Field(default=16 * 1024, ge=1)
    #: Open HTTP connections; past it a new connection takes the place of the longest-idle one, or is
    #: answered 503 and closed. 0: the process's open-file limit less a reserve for everything else.
    max_connections: int = Field(default=0, ge=0)
    #: Calls the gRPC front (``grpc_port``) serves at once, all connections together; past it a call is refused
    #: at once with RESOURCE_EXHAUSTED. Each connection carries at most 256 calls, and one idle for 5 minutes
    #: is closed.
    max_grpc_calls: int = Field(default=1024, ge=1)
    #: One line per HTTP request on stderr (logger ``anyserve.access``): ``text``, ``json`` (an object per
    #: line), or ``off``; off by default, as writing a line costs the router CPU at thousands of requests a second.
    access_log: Literal["off", "text", "json"] = "off"
    #: Count requests, tokens and decisions for ``GET /metrics``. Off, nothing is counted and ``/metrics`` is 404.
    metrics: bool = True


class OpenAISettings(_Table):
    """The router's OpenAI-compatible API (``/v1/...``): which capability a ``model`` name asks for."""

    #: Model names mapped to capability queries, e.g. ``gpt-4o-mini = {type = "chat", model = "smollm2-135m"}``.
    #: A name with no alias asks for ``{type: <chat|completion|embed>, model: <name>}``.
    aliases: dict[str, dict[str, str | int | float | bool]] = Field(default_factory=dict)


class ClusterSettings(_Table):
    """Who may join the cluster and who may manage it (see docs/security.md).

    The cluster token admits replicas: registration, heartbeats, the router
    link and ``ReplicaStatus`` need it. The admin token also deregisters any
    replica and manages engines. Unset, ``anyserve router`` makes both in
    ``state_dir`` (files 0600), where replicas and the CLI on the same
    machine find them.
    """

    #: The cluster token itself (prefer ``token_file`` or ``$ANYSERVE_CLUSTER_TOKEN``: config files get shared).
    token: str | None = None
    #: A file holding the cluster token.
    token_file: str | None = None
    #: The admin token, or a file holding it.
    admin_token: str | None = None
    admin_token_file: str | None = None
    #: Where the router keeps the tokens it makes; default ``$XDG_STATE_HOME/anyserve`` or ``~/.local/state/anyserve``.
    state_dir: str | None = None
    #: ``token``: the control plane needs the cluster token; ``off``: anyone who reaches the router may register.
    auth: Literal["token", "off"] = "token"


class TlsSettings(_Table):
    """TLS on every hop of the cluster: the router's HTTP and gRPC fronts, replicas' gRPC ports, router links.

    Configure it the same on the router and its replicas (PEM files). With it,
    every process serves TLS with ``cert_file``/``key_file`` and connects to
    the others over TLS, checking their certificates against ``ca_file``.
    """

    #: This process's certificate (chain) and private key.
    cert_file: str | None = None
    key_file: str | None = None
    #: The CA that signed the other processes' certificates; default: the system's trust store.
    ca_file: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


class TracingSettings(_Table):
    """OpenTelemetry spans for each hop of a request (router, agent, worker), off by default.

    Off, nothing of OpenTelemetry is imported and a request pays one check;
    see docs/tracing.md. Workers get their agent's settings.
    """

    enabled: bool = False
    #: ``otlp``: OTLP over HTTP/protobuf to ``endpoint`` (needs ``anyserve-core[otlp]``); ``console``: stderr;
    #: ``file``: one JSON object per span per line, appended to ``file``.
    exporter: Literal["otlp", "console", "file"] = "otlp"
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    file: str | None = None
    #: Default: ``anyserve-router``, ``anyserve-replica`` or ``anyserve-worker``, after the process.
    service_name: str | None = None
    #: Share of new traces recorded; a request that arrives with a trace follows its caller's decision.
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)


def _weights(value: Any) -> Any:
    """``"least_load=1,prefix=2"`` (as ``ANYSERVE_ROUTING_SCORERS`` gives it) -> a name -> weight table."""
    if not isinstance(value, str):
        return value
    weights: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, weight = item.partition("=")
        weights[name.strip()] = weight.strip() if sep else "1"
    return weights


def _names(value: Any) -> Any:
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


class RoutingSettings(_Table):
    """The routing pipeline (docs/routing.md): filters, weighted scorers, a picker, each chosen by name."""

    #: Applied in order; each drops candidates that must not serve the request.
    filters: Annotated[list[str], BeforeValidator(_names)] = Field(
        default_factory=lambda: ["best_match", "routable", "budget"]
    )
    #: Scorer name -> weight; the picker sees each candidate's weighted sum. Weight 0 turns one off.
    scorers: Annotated[dict[str, float], BeforeValidator(_weights)] = Field(
        default_factory=lambda: {"cold_start": 2.0, "least_load": 1.0}
    )
    picker: str = "highest"
    #: Most candidates one decision scores. Past that many matching replicas it scores those the affinity
    #: scorers nominate and fills up to this many at random, at least two (power of k choices), so a decision
    #: costs the same with thousands of replicas of one model. 0: every match, always.
    sample: int = Field(default=8, ge=0)
    #: Per-stage options, ``[routing.options.prefix] block_chars = 128``.
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("scorers")
    @classmethod
    def _weights_not_negative(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [f"{name}={weight}" for name, weight in value.items() if not 0 <= weight < float("inf")]
        if bad:
            raise ValueError(f"scorer weights must be finite and at least 0: {', '.join(bad)}")
        return value


class AuthSettings(_Table):
    """API keys for the router's data plane (``/infer``, ``/v2``, ``/v1``, gRPC); none configured: open."""

    #: Comma-separated keys, each allowed every capability.
    api_keys: str | None = None
    #: A TOML file of ``[[keys]]`` with ``key`` (or ``sha256``), an optional ``name`` and ``capabilities``.
    api_keys_file: str | None = None


class ReplicaSettings(_Table):
    """How ``anyserve start`` runs a replica."""

    host: str = "127.0.0.1"
    port: int = Field(default=50051, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    #: Requests one worker runs at once (thread-pool size for plain handlers).
    concurrency: int = Field(default=16, ge=1)
    #: Largest request or response accepted, in bytes.
    max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    #: Calls the replica's gRPC port serves at once; past it, RESOURCE_EXHAUSTED at once (as the router's).
    max_grpc_calls: int = Field(default=1024, ge=1)
    #: Largest tensor a request may describe, in elements, zero dimensions counted as one (so ``[10000000, 0]``
    #: is ten million): as many one-byte elements as ``max_message_bytes`` holds. Checked before anything is built.
    max_tensor_elements: int = Field(default=64 * 1024 * 1024, ge=1)
    #: Seconds in-flight requests get to finish on SIGTERM / Ctrl-C.
    shutdown_grace: float = Field(default=10.0, ge=0)
    replica_id: str | None = None
    #: Resource budget worker classes are started within, e.g. {gpus = 4}; a
    #: resource not listed is not limited.
    resources: dict[str, float] = Field(default_factory=dict)
    #: host:port the router should give clients; default: host and the bound port
    #: (127.0.0.1 when listening on every interface).
    advertise: str | None = None
    #: Port of the router link (see ``[link]``); 0 picks a free one.
    link_port: int = Field(default=0, ge=0, le=65535)
    #: Port of the agent's Prometheus ``/metrics`` (on ``host``); 0 picks a free one, -1 serves none.
    metrics_port: int = Field(default=0, ge=-1, le=65535)
    #: Seconds a request waits at the replica for a worker that is restarting or not answering its liveness
    #: probes, before it is answered UNAVAILABLE (503 with Retry-After at the router).
    worker_wait_seconds: float = Field(default=5.0, ge=0, allow_inf_nan=False)
    #: Seconds between two liveness probes of each worker; 0 turns probing off.
    liveness_interval_seconds: float = Field(default=2.0, ge=0, allow_inf_nan=False)
    #: A worker that leaves a probe unanswered this long is reported unresponsive and gets no requests until it answers.
    liveness_timeout_seconds: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    #: Seconds a worker class that failed 3 times within a minute stays ``failed`` (doubling with each further
    #: failure, up to 300) before it is ``cold`` again and the router is told so.
    failed_retry_seconds: float = Field(default=5.0, gt=0, allow_inf_nan=False)


class Settings(_Table):
    """Everything configurable, with its default."""

    transport: Selection = Field(default_factory=lambda: Selection(name="inproc"))
    objects: ObjectsSettings = Field(default_factory=ObjectsSettings)
    encoding: Selection = Field(default_factory=lambda: Selection(name="sse"))
    matcher: Selection = Field(default_factory=lambda: Selection(name="subset"))
    #: The router -> replica data path: a network transport both sides speak
    #: instead of gRPC, or "off" for gRPC only. The default is used when installed.
    link: Selection = Field(default_factory=lambda: Selection(name="tcp"))
    router: RouterSettings = Field(default_factory=RouterSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    replica: ReplicaSettings = Field(default_factory=ReplicaSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)

    #: dotted key -> where its value came from ("default" when absent).
    sources: dict[str, str] = Field(default_factory=dict, exclude=True)

    def source_of(self, key: str) -> str:
        return self.sources.get(key, "default")
