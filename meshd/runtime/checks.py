"""Field checks of the configuration records (:mod:`meshd.config`).

Each section of ``config.toml`` is a frozen dataclass that validates itself
once, in ``__post_init__``, with these checks.  Each raises
:class:`~meshd.errors.ConfigError` naming the section and the key, and the
ones that normalise a value (lists to tuples, ints to floats) write it back
into the frozen record.  :mod:`meshd.config` re-exports
:func:`parse_host_port`, where callers have always found it.
"""

from __future__ import annotations

from ..errors import ConfigError

__all__ = ["bool_field", "int_field", "multiaddr", "parse_host_port", "positive_float", "set_field", "str_tuple"]


def set_field(obj: object, name: str, value: object) -> None:
    """Set a field of a frozen record (its own normalisation, e.g. lists to tuples)."""
    object.__setattr__(obj, name, value)


def str_tuple(obj: object, section: str, name: str, *, allow_empty: bool = True) -> tuple[str, ...]:
    value = getattr(obj, name)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"[{section}] {name} must be a list of strings, got {value!r}")
    if not allow_empty and not value:
        raise ConfigError(f"[{section}] {name} must not be empty")
    out = tuple(value)
    set_field(obj, name, out)
    return out


def int_field(obj: object, section: str, name: str, *, minimum: int, maximum: int | None = None) -> int:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"[{section}] {name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        hi = "" if maximum is None else f" and <= {maximum}"
        raise ConfigError(f"[{section}] {name} must be >= {minimum}{hi}, got {value}")
    return value


def positive_float(obj: object, section: str, name: str) -> float:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"[{section}] {name} must be a number, got {value!r}")
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"[{section}] {name} must be a positive finite number, got {value}")
    set_field(obj, name, float(value))
    return float(value)


def bool_field(obj: object, section: str, name: str) -> bool:
    value = getattr(obj, name)
    if not isinstance(value, bool):
        raise ConfigError(f"[{section}] {name} must be true or false, got {value!r}")
    return value


def multiaddr(section: str, name: str, addr: str) -> None:
    # Full multiaddr parsing belongs to the p2p layer; here we only catch the
    # common mistake of writing "host:port" where a multiaddr is expected.
    if not addr.startswith("/") or len(addr.split("/")) < 3:
        raise ConfigError(f"[{section}] {name}: {addr!r} is not a multiaddr (e.g. /ip4/0.0.0.0/tcp/4601)")


def parse_host_port(text: str) -> tuple[str, int]:
    """Split ``"host:port"`` or ``"[v6]:port"`` into its parts.

    Args:
        text: The address, e.g. ``"127.0.0.1:7600"``; port 0 asks the OS to pick.

    Returns:
        ``(host, port)`` with IPv6 brackets removed.

    Raises:
        ConfigError: The text is not a host and a port in 0..65535.
    """
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(f"address must be HOST:PORT, got {text!r}")
    host, _, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"address must be HOST:PORT with port 0..65535, got {text!r}")
    return host, int(port_text)
