"""The gateway's typed configuration model (the root is :class:`GatewayConfig`).

The YAML file is validated against these pydantic models by
:mod:`policies.config_loader`, which maps every validation error back to a file,
line and column. Conventions, so later sections (authentication, TLS, ACLs,
quotas, routing, failover) slot in without a rewrite:

* every model derives from :class:`_Section`: frozen, and ``extra="forbid"`` so a
  misspelt key is an error rather than silently ignored;
* every field has a ``description=``; the README's configuration reference is
  generated from them by :mod:`policies.config_docs`;
* a feature gets its own small model, hung off the section it belongs to (e.g. a
  future ``ListenerConfig.authentication``), with a default that keeps today's
  behaviour, so existing files stay valid;
* checks that involve several fields or sections live in ``model_validator``\\ s and
  report each problem at the precise key (:func:`_raise_problems`), so the loader
  can point at the right line.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

__all__ = [
    "WILDCARD_HOSTS",
    "GatewayConfig",
    "HostPort",
    "Integer",
    "ListenerConfig",
    "LogConfig",
    "NodeId",
    "Port",
    "UpstreamConfig",
    "VirtualClusterConfig",
]

#: Listen addresses that mean "every interface"; they cannot be advertised to clients.
WILDCARD_HOSTS: Final = frozenset({"", "0.0.0.0", "::"})

MIN_PORT: Final = 1
MAX_PORT: Final = 65535


def _reject_bool(value: Any) -> Any:
    # pydantic's lax mode reads YAML ``true`` as 1; a boolean where a number belongs
    # is a mistake. (Numeric strings stay accepted: ``${PORT}`` substitutes text.)
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", f"expected an integer, got {str(value).lower()}")
    return value


#: An integer that is not a boolean.
Integer = Annotated[int, BeforeValidator(_reject_bool)]
#: A TCP port number.
Port = Annotated[Integer, Field(ge=MIN_PORT, le=MAX_PORT)]
#: A Kafka broker node id.
NodeId = Annotated[Integer, Field(ge=0)]

_HOSTNAME_RE: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?")
_CLUSTER_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]*")

Loc = tuple[str | int, ...]


def _raise_problems(title: str, problems: Iterable[tuple[Loc, str, str, Any]]) -> None:
    """Raise one ``ValidationError`` carrying several ``(loc, type, message, input)`` problems.

    Raised inside a validator, pydantic prefixes each ``loc`` with the location
    of the model being validated, so every problem points at its own key.
    """
    details = [
        InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)
        for loc, kind, message, value in problems
    ]
    if details:
        raise ValidationError.from_exception_data(title, details)


def _is_hostname(host: str) -> bool:
    return _HOSTNAME_RE.fullmatch(host) is not None


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------
# host:port


@dataclass(frozen=True, slots=True)
class HostPort:
    """A TCP address: host name or IP address and a port.

    In the YAML file it is written ``"host:port"``: ``127.0.0.1:9092``,
    ``kafka-1:9092`` or, with brackets, ``"[::1]:9092"`` (quote IPv6 addresses: an
    unquoted ``[`` starts a YAML list). An empty host (``":9092"``) means every
    interface, like ``0.0.0.0`` or ``[::]``.
    """

    host: str
    port: int

    def __post_init__(self) -> None:
        if not MIN_PORT <= self.port <= MAX_PORT:
            raise ValueError(f"invalid port {self.port} (expected {MIN_PORT}..{MAX_PORT})")

    @classmethod
    def parse(cls, text: str) -> HostPort:
        """Parse ``"host:port"`` / ``"[v6-address]:port"``; ``ValueError`` says what is wrong."""
        text = text.strip()
        if text.startswith("["):
            close = text.find("]")
            if close < 0:
                raise ValueError(f"invalid address {text!r}: missing ']' after the IPv6 address")
            host, rest = text[1:close], text[close + 1 :]
            if not rest.startswith(":"):
                raise ValueError(f"invalid address {text!r}: expected '[address]:port'")
            port_text = rest[1:]
            if not _is_ipv6(host):
                raise ValueError(f"invalid IPv6 address {host!r} in {text!r}")
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep:
                raise ValueError(f"invalid address {text!r}: expected 'host:port'")
            if ":" in host:
                raise ValueError(
                    f"invalid address {text!r}: write IPv6 addresses in brackets, e.g. '[::1]:9092'"
                )
            if host and not _is_hostname(host):
                raise ValueError(f"invalid host {host!r} in {text!r}")
        if not port_text.isdigit() or not MIN_PORT <= int(port_text) <= MAX_PORT:
            raise ValueError(f"invalid port {port_text!r} (expected {MIN_PORT}..{MAX_PORT})")
        return cls(host=host, port=int(port_text))

    @property
    def is_wildcard(self) -> bool:
        """True for ``0.0.0.0``, ``::`` and the empty host: listen on every interface."""
        return self.host in WILDCARD_HOSTS

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    # --- pydantic integration: validated from / serialised to the "host:port" string ----

    @classmethod
    def _validate(cls, value: Any) -> HostPort:
        if isinstance(value, HostPort):
            return value
        if isinstance(value, str):
            try:
                return cls.parse(value)
            except ValueError as exc:
                raise PydanticCustomError("host_port", str(exc)) from None
        hint = ' (quote IPv6 addresses: "[::1]:9092")' if isinstance(value, list) else ""
        got = "a list" if isinstance(value, list) else repr(value)
        message = f"expected a 'host:port' string, got {got}{hint}"
        raise PydanticCustomError("host_port_type", message)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.to_string_ser_schema(),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "host:port", "examples": ["127.0.0.1:9092"]}


# --------------------------------------------------------------------------------------
# sections


class _Section(BaseModel):
    """Base of every configuration section: immutable, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LogConfig(_Section):
    """Logging of the gateway process."""

    format: Literal["auto", "json", "console"] = Field(
        default="auto",
        description=(
            "Log output format: `json` (one JSON object per line, for log pipelines), "
            "`console` (human-readable) or `auto` (console on a terminal, JSON otherwise)."
        ),
    )
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Minimum level of the events that are logged."
    )


class ListenerConfig(_Section):
    """Where the gateway accepts client connections for one virtual cluster.

    Clients connect to ``bootstrap`` first. The metadata the gateway returns
    rewrites every upstream broker to ``advertised():broker_port(node_id)``, and the
    gateway listens on those ports too, so every broker connection goes through it.
    """

    bootstrap: HostPort = Field(
        description=(
            "Address (`host:port`) the gateway listens on for clients' first connection, "
            'e.g. `127.0.0.1:9092`. Use `0.0.0.0:9092` (or `"[::]:9092"`) to listen on '
            "every interface; broker ports are bound on the same host."
        ),
    )
    advertised_host: str | None = Field(
        default=None,
        description=(
            "Host name or IP address clients are told to connect to for broker ports. "
            "Defaults to the bootstrap host; required when that is a wildcard "
            "(`0.0.0.0`, `::` or empty)."
        ),
    )
    broker_port_base: Port | None = Field(
        default=None,
        description=(
            "Upstream broker node N is served on port `broker_port_base + N`. "
            "Defaults to the bootstrap port + 1."
        ),
    )
    broker_ports: dict[NodeId, Port] = Field(
        default_factory=dict,
        description=(
            "Explicit `node id: port` overrides of the computed broker ports. Ports must "
            "be distinct and differ from the bootstrap port."
        ),
    )

    @field_validator("advertised_host")
    @classmethod
    def _check_advertised_host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value in WILDCARD_HOSTS:
            raise PydanticCustomError(
                "advertised_host",
                f"{value!r} cannot be advertised: clients need an address they can connect to",
            )
        if not (_is_hostname(value) or _is_ipv6(value)):
            raise PydanticCustomError("advertised_host", f"invalid host name {value!r}")
        return value

    @model_validator(mode="after")
    def _check_ports(self) -> Self:
        problems: list[tuple[Loc, str, str, Any]] = []
        if self.advertised_host is None and self.bootstrap.is_wildcard:
            problems.append(
                (
                    ("advertised_host",),
                    "advertised_host_required",
                    f"advertised_host is required when the bootstrap host is a wildcard "
                    f"({str(self.bootstrap)!r}): clients must be told an address they can "
                    f"connect to",
                    None,
                )
            )
        seen: dict[int, int] = {}
        for node_id, port in self.broker_ports.items():
            if port == self.bootstrap.port:
                problems.append(
                    (
                        ("broker_ports", node_id),
                        "port_collision",
                        f"port {port} of node {node_id} is the bootstrap port",
                        port,
                    )
                )
            elif port in seen:
                problems.append(
                    (
                        ("broker_ports", node_id),
                        "port_collision",
                        f"port {port} of node {node_id} is already used by node {seen[port]}",
                        port,
                    )
                )
            else:
                seen[port] = node_id
        _raise_problems(type(self).__name__, problems)
        return self

    def advertised(self) -> str:
        """The host clients are told to connect to for broker ports."""
        return self.advertised_host if self.advertised_host is not None else self.bootstrap.host

    @property
    def effective_broker_port_base(self) -> int:
        """``broker_port_base``, or the bootstrap port + 1 when unset."""
        if self.broker_port_base is not None:
            return self.broker_port_base
        return self.bootstrap.port + 1

    def broker_port(self, node_id: int) -> int:
        """The gateway port that serves upstream broker ``node_id``.

        Raises ``ValueError`` if the computed port falls outside 1..65535 (a node id
        too large for ``broker_port_base``); add an explicit ``broker_ports`` entry.
        """
        explicit = self.broker_ports.get(node_id)
        if explicit is not None:
            return explicit
        port = self.effective_broker_port_base + node_id
        if not MIN_PORT <= port <= MAX_PORT:
            raise ValueError(
                f"broker node {node_id} maps to port {port}, outside {MIN_PORT}..{MAX_PORT}; "
                f"set listener.broker_ports[{node_id}]"
            )
        return port

    def bound_addresses(self) -> list[tuple[Loc, HostPort]]:
        """Addresses known from the configuration alone (bootstrap and explicit broker ports)."""
        host = self.bootstrap.host
        addresses: list[tuple[Loc, HostPort]] = [(("bootstrap",), self.bootstrap)]
        for node_id, port in self.broker_ports.items():
            addresses.append((("broker_ports", node_id), HostPort(host=host, port=port)))
        return addresses


class UpstreamConfig(_Section):
    """The real Kafka cluster behind a virtual cluster."""

    bootstrap_servers: list[HostPort] = Field(
        min_length=1,
        description=(
            "Addresses (`host:port`) of upstream Kafka brokers used to discover the "
            "cluster; tried in turn until one answers."
        ),
    )
    connect_timeout_ms: Integer = Field(
        default=5000, gt=0, description="Timeout for opening a TCP connection to a broker."
    )
    request_timeout_ms: Integer = Field(
        default=30000,
        gt=0,
        description="How long the gateway waits for answers to its own (metadata) requests.",
    )
    metadata_refresh_interval_ms: Integer = Field(
        default=30000,
        gt=0,
        description="How often the gateway refreshes its view of the upstream brokers.",
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_hosts(cls, servers: list[HostPort]) -> list[HostPort]:
        _raise_problems(
            cls.__name__,
            [
                ((i,), "host_port", f"{str(server)!r} needs a host to connect to", str(server))
                for i, server in enumerate(servers)
                if server.is_wildcard
            ],
        )
        return servers


class VirtualClusterConfig(_Section):
    """One Kafka cluster as clients see it: a listener in front of an upstream cluster."""

    name: str = Field(
        description=(
            "Unique name of the virtual cluster, used in logs and metrics: lowercase "
            "letters, digits, `.`, `_` and `-`, starting with a letter or digit."
        ),
    )
    listener: ListenerConfig = Field(description="Where clients connect.")
    upstream: UpstreamConfig = Field(description="The Kafka cluster the gateway forwards to.")

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if _CLUSTER_NAME_RE.fullmatch(name) is None:
            raise PydanticCustomError(
                "cluster_name",
                f"invalid virtual cluster name {name!r}: use lowercase letters, digits, '.', "
                "'_' and '-', starting with a letter or digit",
            )
        return name


def _hosts_overlap(a: str, b: str) -> bool:
    return a == b or a in WILDCARD_HOSTS or b in WILDCARD_HOSTS


def _path(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int) and part is not True and part is not False:
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class GatewayConfig(_Section):
    """The root of the configuration file."""

    virtual_clusters: list[VirtualClusterConfig] = Field(
        min_length=1,
        description=(
            "The virtual clusters the gateway serves; at least one. Names must be unique, "
            "and no two clusters may listen on the same address."
        ),
    )
    max_frame_bytes: Integer = Field(
        default=100 * 1024 * 1024,
        ge=1024,
        le=2**31 - 1,
        description=(
            "Largest request or response frame accepted, in bytes (like Kafka's "
            "`socket.request.max.bytes`); larger frames close the connection."
        ),
    )
    log: LogConfig = Field(default_factory=LogConfig, description="Logging.")

    @model_validator(mode="after")
    def _check_clusters(self) -> Self:
        problems: list[tuple[Loc, str, str, Any]] = []
        names: dict[str, int] = {}
        for i, cluster in enumerate(self.virtual_clusters):
            if cluster.name in names:
                problems.append(
                    (
                        ("virtual_clusters", i, "name"),
                        "duplicate_name",
                        f"duplicate virtual cluster name {cluster.name!r} "
                        f"(already used by virtual_clusters[{names[cluster.name]}])",
                        cluster.name,
                    )
                )
            else:
                names[cluster.name] = i

        # Addresses of earlier clusters, by port: (address, path of its key).
        bound: dict[int, list[tuple[HostPort, Loc]]] = {}
        for i, cluster in enumerate(self.virtual_clusters):
            mine: list[tuple[HostPort, Loc]] = []
            for sub_loc, address in cluster.listener.bound_addresses():
                loc: Loc = ("virtual_clusters", i, "listener", *sub_loc)
                for other, other_loc in bound.get(address.port, []):
                    if _hosts_overlap(address.host, other.host):
                        problems.append(
                            (
                                loc,
                                "address_collision",
                                f"address {address} collides with {other} of {_path(other_loc)}",
                                str(address),
                            )
                        )
                        break
                mine.append((address, loc))
            for address, loc in mine:
                bound.setdefault(address.port, []).append((address, loc))

        _raise_problems(type(self).__name__, problems)
        return self

    def cluster(self, name: str) -> VirtualClusterConfig:
        """The virtual cluster called ``name`` (``KeyError`` if there is none)."""
        for cluster in self.virtual_clusters:
            if cluster.name == name:
                return cluster
        raise KeyError(name)
