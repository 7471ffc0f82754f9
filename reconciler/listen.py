"""`--listen HOST:PORT` for the two servers (`capctl sim`, `capctl run`): parsed once, bound before serving.

Binding the socket before the server starts gives a clear error at once when the address is taken, and
lets port 0 mean "any free port": the server then says which port it got, so tests and scripts never
have to guess a free port and race another process for it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Final

from reconciler.spec.errors import quote, shorten

__all__ = [
    "advertised_host",
    "advertised_url",
    "bind",
    "is_loopback",
    "named_locally",
    "not_named_locally",
    "parse_listen",
    "url_of",
]


# A host name as a resolver takes it (labels of letters, digits, `-` and `_`), or a dotted IPv4 address.
_HOST_NAME: Final = re.compile(r"(?=.{1,253}\.?$)[A-Za-z0-9_-]{1,63}(\.[A-Za-z0-9_-]{1,63})*\.?")


def parse_listen(listen: str, *, example: str, flag: str = "--listen") -> tuple[str, int]:
    """(host, port) of `HOST:PORT` (IPv6 hosts in brackets); port 0 picks a free port when bound. A value that
    no socket could bind (`[::1`, `::1:8080`, `1.2.3.999:80`, `a b:80`) is refused here, naming `flag`, not
    at bind (walk 35b: `--listen "[::1"` said `cannot listen on ::1: Name or service not known`)."""

    def refused(why: str) -> ValueError:
        return ValueError(f"{flag}: {why}, got {quote(listen)}")

    if listen.startswith("["):
        host, closed, rest = listen[1:].partition("]")
        if not closed:
            raise refused("an IPv6 address in brackets has no closing ']' (e.g. [::1]:8080)")
        sep, port = rest[:1], rest[1:]
    else:
        host, sep, port = listen.rpartition(":")
    if sep != ":" or not host or not (port.isascii() and port.isdigit()):
        raise refused(f"expected HOST:PORT (e.g. {example}; port 0 picks a free one)")
    if len(port.lstrip("0")) > 5 or int(port) > 65535:  # the form was right: say what is not (walk 14b)
        # Not int() of 5,000 digits first: it refused them in Python's words.
        raise refused(f"port {shorten(port)} is out of range (0 to 65535; 0 picks a free one)")
    if listen.startswith("["):
        if not _is_ipv6(host):
            raise refused(f"{quote(host)} in brackets is not an IPv6 address (e.g. [::1]:8080)")
    elif ":" in host:
        raise refused("an IPv6 address goes in brackets, before the port (e.g. [::1]:8080)")
    elif not _HOST_NAME.fullmatch(host):
        raise refused(f"{quote(host)} is not an IP address or a host name")
    elif all(label.isdigit() for label in host.split(".")) and not _is_ipv4(host):
        raise refused(f"{quote(host)} is not an IPv4 address")
    return host, int(port)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)  # a zone (`fe80::1%eth0`) too, as bind takes it
    except ValueError:
        return False
    return True


def _is_ipv4(text: str) -> bool:
    """As bind's resolver reads digits (inet_aton: `127.1` is 127.0.0.1), not only the dotted four."""
    try:
        socket.inet_aton(text)
    except OSError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host` (a name other than localhost may resolve anywhere)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_HOST_HEADER: Final = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<name>[^:\[\]]+))(?::[0-9]*)?")
_LOCAL_NAME: Final = re.compile(r"(?:[a-z0-9-]+\.)*localhost")


def named_locally(host_header: str) -> bool:
    """Whether a request's Host header names its server as only this machine's own clients do: an IP address,
    `localhost` or a name under `.localhost`. A web page whose own name its DNS server re-resolved to 127.0.0.1
    (DNS rebinding) is same-origin to a loopback server, and its requests name the page's host. No Host at all
    (HTTP/1.0: `curl -0`, old scripts and probes) is no browser's request: answered."""
    host = host_header.strip().lower()
    if not host:
        return True
    # The whole header is `name[:port]` or `[v6][:port]`: `127.0.0.1:8080@evil.example` or `[::1]junk` named
    # no host, and taking the part before the last `:` or after `[` let them pass (walk 56b).
    if (found := _HOST_HEADER.fullmatch(host)) is None:
        return False
    name = (found["v6"] or found["name"]).rstrip(".")
    if found["name"] and _LOCAL_NAME.fullmatch(name):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def not_named_locally(host_header: str) -> str:
    """Why a token-less route of a loopback daemon refuses a request named for another host (DNS rebinding)."""
    return (
        f"this daemon listens on loopback and has no token for this route: it answers requests addressed to this "
        f"machine (127.0.0.1, localhost), not to {host_header[:80]!r}; a web page whose name was made to resolve "
        "here would be one (DNS rebinding)"
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port), for uvicorn; OSError names the address on failure."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart at once after a stop
        sock.bind((host, port))
        sock.listen(2048)  # connections queue from now on, even before the server accepts them
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    """`http://host:port` of a bound socket (the real port when it was bound to port 0)."""
    host, port = sock.getsockname()[:2]
    return _http(host, port)


def advertised_url(sock: socket.socket) -> str:
    """Where other machines reach the server: the URL it names to others (the lock holder that a standby or a
    locked-out `capctl apply` shows, with the `capctl sync --daemon` to use)."""
    host, port = sock.getsockname()[:2]
    return _http(advertised_host(host, socket.gethostname()), port)


def advertised_host(host: str, hostname: str) -> str:
    """A wildcard bind (`0.0.0.0`, `::`, as in a pod) is no address anyone can connect to: name it by the
    host's name (in Kubernetes, the pod's, which `kubectl exec` and `port-forward` take)."""
    return hostname if host in ("0.0.0.0", "::") else host


def _http(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
