"""Where `kdedge bench --host` connects: an ssh target (user@host[:port], or a ~/.ssh/config alias),
parsed and checked so that nothing in it can reach ssh as an option."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from kdedge.errors import KdedgeError

_HOST = re.compile(r"^[A-Za-z0-9_.%:\-]+$")
_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class SshTarget:
    """A device to reach with ssh. extra_options are ssh arguments put before the destination (tests
    use them for a throwaway key and known_hosts; users normally leave them to ~/.ssh/config)."""

    host: str
    user: str | None = None
    port: int | None = None
    extra_options: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: str, *, extra_options: Sequence[str] = ()) -> SshTarget:
        """"user@host", "host", "user@host:2222", "user@[fe80::1]:22"; host may be a ~/.ssh/config alias."""
        text = spec.strip()
        user, at, rest = text.rpartition("@")
        if not at:
            user, rest = "", text
        port: str | None = None
        if rest.startswith("["):  # [IPv6]:port
            host, close, tail = rest[1:].partition("]")
            if not close or (tail and not tail.startswith(":")):
                raise KdedgeError(f"ssh target {spec!r}: an IPv6 address is written [addr] or [addr]:port")
            port = tail[1:] if tail else None
        elif rest.count(":") == 1:
            host, _, port = rest.partition(":")
        else:
            host = rest  # a bare IPv6 address has several ':' and no port
        return cls(host=host, user=user or None, port=_port(port, spec) if port is not None else None,
                   extra_options=tuple(extra_options))

    def __post_init__(self) -> None:
        # a host or user starting with '-' would be read by ssh as an option (e.g. -oProxyCommand=...)
        if not self.host or not _HOST.match(self.host) or self.host.startswith("-"):
            raise KdedgeError(f"ssh target: bad host {self.host!r}; write user@host or user@host:port")
        if self.user is not None and not _USER.match(self.user):
            raise KdedgeError(f"ssh target: bad user name {self.user!r}; write user@host or user@host:port")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise KdedgeError(f"ssh target: port {self.port} is not in 1..65535")
        if not all(isinstance(o, str) for o in self.extra_options):
            raise KdedgeError(f"ssh target: extra_options must be strings, not {self.extra_options!r}")

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (f"{self.user}@" if self.user else "") + host + (f":{self.port}" if self.port else "")


def _port(text: str, spec: str) -> int:
    if not text.isdigit():
        raise KdedgeError(f"ssh target {spec!r}: port {text!r} is not a number")
    return int(text)
