"""nginx in front of the API services: an upstream per service, routed by path, from ``api.services``.

One renderer for the local stack, the benchmarks, the tests and ``deploy/`` (docker compose,
Kubernetes): the locations come from :data:`api.services.SERVICES`, so a route and the proxy
rule that reaches it are declared once. Per service: ``least_conn`` over its replicas, passive
health checks (a replica that fails twice is left out for 5 s, and a request it refused goes
to the next one: nginx never resends a POST that may have reached an API), WebSocket upgrade
on its socket paths (an upstream of their own, where a refused connect tries every
replica), and a JSON 503 with ``Retry-After`` when none of its replicas answers, so the
other services keep working. Every client (its bearer token, the token in an OsmAnd
URL, else its address) is held to ``nginx_client_rate`` requests/s, with a burst; health
and readiness are not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from api.services import SERVICES, Service, ServiceName
from core.config import Settings

#: The largest body any route takes: a telemetry batch of ``max_batch_pings`` (the API checks the exact limit).
_BODY = "2m"
#: The suffix of a service's upstream for its WebSocket paths.
_SOCKETS = "_sockets"


def local_upstreams(settings: Settings) -> dict[ServiceName, list[str]]:
    """Every service on the ``api_replicas`` processes from ``api_port`` up (each serves ``all``)."""
    replicas = [f"{settings.host}:{settings.api_port + i}" for i in range(settings.api_replicas)]
    return dict.fromkeys(SERVICES, replicas)


def _location(spec: str, service: Service, burst: int | None) -> str:
    socket = spec in service.sockets
    timeout = "3600s" if socket else "60s"
    # error_page here, not in server: a location's own error_page directives replace the server's.
    limit = (
        f"\n            limit_req zone=clients burst={burst} nodelay;\n            error_page 429 = @limited;"
        if burst is not None
        else ""
    )
    upstream = f"{service.name}{_SOCKETS}" if socket else service.name
    # A socket's connect goes on to every replica in turn (its upstream has no passive marks).
    tries = 0 if socket else 2
    return f"""        location {spec} {{
            set $service {service.name};{limit}
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout {timeout};
            proxy_next_upstream error timeout http_502;
            proxy_next_upstream_tries {tries};
            error_page 502 504 = @unavailable;
        }}"""


def render_http(
    settings: Settings, upstreams: Mapping[ServiceName, Sequence[str]], listen: str, temp: Path | None
) -> str:
    """The ``http {}`` block: one upstream and its locations per service."""
    dirs = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi") if temp is not None else ()
    temps = "".join(f"\n    {k}_temp_path {temp}/{k};" for k in dirs)
    ups = []
    for name, service in SERVICES.items():
        servers = "\n".join(f"        server {addr} max_fails=2 fail_timeout=5s;" for addr in upstreams[name])
        ups.append(f"""    upstream {name} {{
        least_conn;
{servers}
        keepalive 128;
        keepalive_timeout 60s;
    }}""")
        if service.sockets:
            # nginx clears a replica's failures only when a request to it ends, and a socket
            # ends hours later: a replica marked failed once (while it restarted) would then
            # take one new socket per fail_timeout, and a replica's clients reconnecting after
            # it died found "no live upstreams" for minutes. Sockets have no marks: a connect
            # refused by a dead replica costs a retry to the next.
            plain = "\n".join(f"        server {addr} max_fails=0;" for addr in upstreams[name])
            ups.append(f"""    upstream {name}{_SOCKETS} {{
        least_conn;
{plain}
    }}""")
    rate, burst = settings.nginx_client_rate, settings.nginx_client_burst
    locations = "\n".join(_location(spec, s, burst) for s in SERVICES.values() for spec in s.locations)
    # Health and readiness of the front door (auth) for probes and load balancers: never rate-limited.
    health = _location("~ ^/(healthz|readyz)$", SERVICES["auth"], None)
    return f"""http {{
    access_log off;{temps}
    client_max_body_size {_BODY};
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    # Who a request is, for the rate limit: its bearer token, the token in an OsmAnd URL, else its address.
    map $uri $url_token {{ ~^/v1/osmand/(?<token>[^/]+)$ $token; default ""; }}
    map "$http_authorization$url_token" $client {{ "" $binary_remote_addr; default "$http_authorization$url_token"; }}
    limit_req_zone $client zone=clients:32m rate={rate}r/s;
    limit_req_status 429;
{chr(10).join(ups)}
    server {{
        listen {listen};
        location = /nginx-health {{ return 200 "ok\\n"; }}
        location = /metrics {{ return 404; }}
        location @limited {{
            default_type application/json;
            add_header Retry-After 1 always;
            return 429 '{{"detail":"too many requests from this client: slow down"}}';
        }}
        location @unavailable {{
            default_type application/json;
            add_header Retry-After 5 always;
            return 503 '{{"detail":"the $service service is unavailable: retry"}}';
        }}
{health}
{locations}
    }}
}}
"""


def render_conf(
    settings: Settings, prefix: Path, log_dir: Path, upstreams: Mapping[ServiceName, Sequence[str]] | None = None
) -> str:
    """The local stack's nginx.conf (``fleetstream stack up``), and the benchmarks' and tests' own."""
    http = render_http(
        settings, upstreams or local_upstreams(settings), f"{settings.host}:{settings.nginx_port}", prefix
    )
    return f"""# Generated by `fleetstream stack up`; edit fleetstream/stack/nginx.py instead.
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {log_dir}/nginx-error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 32768; }}
{http}"""


def render_deploy(settings: Settings, hosts: Mapping[ServiceName, str], port: int = 8000, listen: str = "8080") -> str:
    """nginx.conf for ``deploy/``: each service behind its DNS name (compose service, Kubernetes Service)."""
    http = render_http(settings, {name: [f"{hosts[name]}:{port}"] for name in SERVICES}, listen, None)
    return f"""# Generated from fleetstream/stack/nginx.py (python -m fleetstream.stack.nginx); do not edit.
worker_processes auto;
worker_rlimit_nofile 65536;
events {{ worker_connections 32768; }}
{http}"""
