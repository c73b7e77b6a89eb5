"""Where and how ``serve`` listens: TLS files for a small install without a proxy, and
the warning when plain HTTP is offered beyond this machine (device tokens would cross
the network in clear). The fronted setup is deploy/nginx/ (docs/deploy.md)."""

from __future__ import annotations

import errno
import ipaddress
import socket
from pathlib import Path
from typing import Any

from packager.errors import ConflictError, UsageError
from sync_service.core.config import Settings

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """True when ``host`` binds this machine only (``0.0.0.0`` and ``::`` do not)."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's ``ssl_certfile``/``ssl_keyfile``, checked here so a typo is one line, not a
    traceback from inside the ssl module after the app was built."""
    cert, key = settings.ssl_certfile, settings.ssl_keyfile
    if cert is None and key is None:
        return {}
    if cert is None or key is None:
        raise UsageError("TLS needs both --ssl-certfile and --ssl-keyfile (MODELSYNC_SSL_CERTFILE, _KEYFILE)")
    for what, path in (("--ssl-certfile", cert), ("--ssl-keyfile", key)):
        if not Path(path).is_file():
            raise UsageError(f"{what} {path}: no such file")
    import ssl

    try:  # the same load uvicorn does, so a bad pair fails before the port is bound
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(f"cannot load TLS certificate {cert} with key {key}: {exc}") from None
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}


def plain_http_warning(settings: Settings, tls: bool) -> str | None:
    if tls or is_loopback(settings.host):
        return None
    return (
        f"listening on {settings.host}:{settings.port} without TLS: device and publisher tokens "
        "cross the network in clear. Put the service behind the TLS proxy in deploy/nginx/ "
        "(docs/deploy.md) or give --ssl-certfile and --ssl-keyfile"
    )


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the app starts: a port in use is one line naming it
    (ConflictError) instead of uvicorn's log of the bind error and an exit status that says
    nothing; binding here, not probing first, leaves no window for another process between."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConflictError(
                f"port {port} on {host} is in use (another `modelsync serve`?): stop it or pass --port"
            ) from exc
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock
