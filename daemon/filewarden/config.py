"""The configuration, parsed once from TOML into frozen dataclasses.

Every problem becomes one :class:`ConfigError` line naming the file, the key
and what is wrong, so ``check-config`` and ``run`` can print it and exit 2.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from filewarden.errors import ConfigError

DEFAULT_CONFIG = Path("/etc/filewarden/config.toml")
LogFormat = Literal["auto", "console", "json"]
RootMode = Literal["auto", "watch", "poll"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
Backend = Literal["watchdog", "pyinotify", "poll"]
LEVELS: tuple[LogLevel, ...] = get_args(LogLevel)
BACKENDS: tuple[Backend, ...] = get_args(Backend)

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str, *, allow_never: bool = True) -> float | None:
    """Parse ``"500ms"``, ``"10s"``, ``"1h30m"``, ``"30d"`` or ``"never"`` to seconds.

    ``"never"`` gives None. Raises ValueError with a message fit for the user.
    """
    value = text.strip().lower()
    if value == "never":
        if allow_never:
            return None
        raise ValueError('"never" is not allowed here')
    pos, total = 0, 0.0
    while pos < len(value):
        match = _DURATION.match(value, pos)
        if match is None:
            raise ValueError(
                f'{text!r} is not a duration (use e.g. "500ms", "10s", "5m", "6h", "30d"'
                + (', "never")' if allow_never else ")")
            )
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not value:
        raise ValueError("empty duration")
    if total <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return total


@dataclasses.dataclass(frozen=True)
class DaemonConfig:
    state_dir: Path
    socket: Path
    socket_mode: int = 0o660
    socket_group: str = ""
    admin_group: str = ""
    client_idle_timeout: float = 300.0  # a connection with no request for this long is closed
    client_request_timeout: float = 10.0  # a started request line must be complete within this


@dataclasses.dataclass(frozen=True)
class LogConfig:
    format: LogFormat = "auto"
    level: LogLevel = "info"


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    interval: float | None = 6 * 3600.0  # full sweep; None = only at start and on demand
    quick_interval: float | None = 15 * 60.0
    poll_interval: float = 30.0  # quick sweeps of roots in poll mode
    jitter: float = 0.1  # fraction of the interval added or taken at random
    mount_check_interval: float = 5.0
    batch_files: int = 5000  # files per writer transaction during a sweep


@dataclasses.dataclass(frozen=True)
class WatchConfig:
    backend: Backend = "watchdog"


@dataclasses.dataclass(frozen=True)
class HashConfig:
    enabled: bool = True  # hash every file in the background (needed to relink by content)
    max_mb_per_s: float = 0.0  # 0 = no limit; the hasher runs at idle CPU and I/O priority anyway


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
    # Serve /metrics over HTTP: (host, port), or ("unix", path) for a Unix
    # socket (what systemd/filewarden-metrics.socket proxies); None: off.
    listen: tuple[str, int | str] | None = None


@dataclasses.dataclass(frozen=True)
class WebConfig:
    # The web page, on the HTTP listener of [metrics] (127.0.0.1:9851 when that
    # is not set).
    enabled: bool = False


DEFAULT_HTTP = ("127.0.0.1", 9851)


@dataclasses.dataclass(frozen=True)
class ShipConfig:
    # `filewarden ship`: the journal into a fleet's PostgreSQL (see ship.py).
    dsn: str = ""  # a libpq connection string or URI; "" = nowhere (ship refuses to start)
    host: str = ""  # this host's UUID in the fleet; "" = the one kept in the catalog
    name: str = ""  # what fleet status calls it; "" = the machine's hostname
    batch: int = 5000  # journal entries a transaction, at most


@dataclasses.dataclass(frozen=True)
class RetentionConfig:
    purge_missing_after: float | None = None  # None: missing files are kept until purged by hand
    journal_keep: float | None = 90 * 86400.0  # older journal entries go, except each file's latest
    check_interval: float = 3600.0  # how often both are applied


@dataclasses.dataclass(frozen=True)
class IdentityConfig:
    # A file that goes missing takes over an identical file that arrived up
    # to this long before it (copy, then delete: a move).
    match_window: float = 7 * 86400.0


@dataclasses.dataclass(frozen=True)
class RootConfig:
    path: Path
    require_mountpoint: bool = False
    marker: str = ""
    exclude: tuple[str, ...] = ()
    mode: RootMode = "auto"
    check_volume: bool = True  # offline if another filesystem is mounted where this root was


@dataclasses.dataclass(frozen=True)
class Config:
    daemon: DaemonConfig
    log: LogConfig
    sweep: SweepConfig
    retention: RetentionConfig
    roots: tuple[RootConfig, ...]
    source: Path | None = None  # the file it came from; None for the embedded default
    watch: WatchConfig = WatchConfig()
    hash: HashConfig = HashConfig()
    identity: IdentityConfig = IdentityConfig()
    metrics: MetricsConfig = MetricsConfig()
    web: WebConfig = WebConfig()
    ship: ShipConfig = ShipConfig()

    def http_listen(self) -> tuple[str, int | str] | None:
        """Where the HTTP listener (``/metrics``, and the web page if enabled) listens."""
        if self.metrics.listen is not None:
            return self.metrics.listen
        return DEFAULT_HTTP if self.web.enabled else None


def user_defaults() -> DaemonConfig:
    """Where state and socket live when no config file says: XDG dirs, else /tmp."""
    fallback = Path(f"/tmp/filewarden-{os.getuid()}")
    state = os.environ.get("XDG_STATE_HOME")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return DaemonConfig(
        state_dir=Path(state) / "filewarden" if state else fallback / "state",
        socket=(Path(runtime) / "filewarden.sock") if runtime else fallback / "filewarden.sock",
        socket_mode=0o600,
    )


def embedded(roots: Sequence[str | os.PathLike[str]]) -> Config:
    """The configuration of ``filewarden run --root DIR`` without a file."""
    return Config(
        daemon=user_defaults(),
        log=LogConfig(),
        sweep=SweepConfig(),
        retention=RetentionConfig(),
        roots=_dedupe_roots(tuple(RootConfig(path=_abs_path(r)) for r in roots), "--root"),
    )


def find_config_file(explicit: str | os.PathLike[str] | None) -> Path | None:
    """The config file to use: ``--config``, then ``$FILEWARDEN_CONFIG``, then /etc."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("FILEWARDEN_CONFIG")
    if env:
        return Path(env)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def load(path: str | os.PathLike[str]) -> Config:
    """Read and check a config file; every problem is one ConfigError line."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: TOML syntax error: {exc}") from None
    return parse(data, source=file)


def parse(data: Mapping[str, Any], *, source: Path | None = None) -> Config:
    """Build a Config from parsed TOML, checking every key and value."""
    where = f"{source}: " if source else ""
    _no_unknown(
        data,
        {
            "daemon",
            "log",
            "sweep",
            "watch",
            "hash",
            "identity",
            "retention",
            "metrics",
            "web",
            "ship",
            "root",
        },
        where,
        "",
    )
    sec = _Section(where, "daemon", data.get("daemon", {}))
    defaults = DaemonConfig(
        state_dir=Path("/var/lib/filewarden"), socket=Path("/run/filewarden/filewarden.sock")
    )
    daemon = DaemonConfig(
        state_dir=sec.get("state_dir", _abs_path, defaults.state_dir),
        socket=sec.get("socket", _abs_path, defaults.socket),
        socket_mode=sec.get("socket_mode", _mode, defaults.socket_mode),
        socket_group=sec.get("socket_group", _str, ""),
        admin_group=sec.get("admin_group", _str, ""),
        client_idle_timeout=sec.get(
            "client_idle_timeout", _duration_required, defaults.client_idle_timeout
        ),
        client_request_timeout=sec.get(
            "client_request_timeout", _duration_required, defaults.client_request_timeout
        ),
    )
    sec.done()
    sec = _Section(where, "log", data.get("log", {}))
    log = LogConfig(
        format=sec.get("format", _choice("auto", "console", "json"), "auto"),
        level=sec.get("level", _choice(*LEVELS), "info"),
    )
    sec.done()
    sec = _Section(where, "sweep", data.get("sweep", {}))
    base = SweepConfig()
    sweep = SweepConfig(
        interval=sec.get("interval", _duration, base.interval),
        quick_interval=sec.get("quick_interval", _duration, base.quick_interval),
        poll_interval=sec.get("poll_interval", _duration_required, base.poll_interval),
        jitter=sec.get("jitter", _fraction, base.jitter),
        mount_check_interval=sec.get(
            "mount_check_interval", _duration_required, base.mount_check_interval
        ),
        batch_files=sec.get("batch_files", _positive_int, base.batch_files),
    )
    sec.done()
    sec = _Section(where, "watch", data.get("watch", {}))
    watch = WatchConfig(backend=sec.get("backend", _choice(*BACKENDS), "watchdog"))
    sec.done()
    sec = _Section(where, "hash", data.get("hash", {}))
    hashing = HashConfig(
        enabled=sec.get("enabled", _bool, True),
        max_mb_per_s=sec.get("max_mb_per_s", _non_negative, 0.0),
    )
    sec.done()
    sec = _Section(where, "identity", data.get("identity", {}))
    identity = IdentityConfig(
        match_window=sec.get("match_window", _duration_required, IdentityConfig().match_window),
    )
    sec.done()
    sec = _Section(where, "metrics", data.get("metrics", {}))
    metrics = MetricsConfig(listen=sec.get("listen", _listen, None))
    sec.done()
    sec = _Section(where, "web", data.get("web", {}))
    web = WebConfig(enabled=sec.get("enabled", _bool, False))
    sec.done()
    sec = _Section(where, "ship", data.get("ship", {}))
    ship = ShipConfig(
        dsn=sec.get("dsn", _str, ""),
        host=sec.get("host", _host_uuid, ""),
        name=sec.get("name", _str, ""),
        batch=sec.get("batch", _batch, ShipConfig().batch),
    )
    sec.done()
    sec = _Section(where, "retention", data.get("retention", {}))
    retention = RetentionConfig(
        purge_missing_after=sec.get("purge_missing_after", _duration, None),
        journal_keep=sec.get("journal_keep", _duration, RetentionConfig().journal_keep),
        check_interval=sec.get(
            "check_interval", _duration_required, RetentionConfig().check_interval
        ),
    )
    sec.done()
    roots_raw = data.get("root", [])
    if not isinstance(roots_raw, list):
        raise ConfigError(f"{where}root: must be an array of tables ([[root]])")
    roots = []
    for i, item in enumerate(roots_raw):
        sec = _Section(where, f"root[{i}]", item)
        if "path" not in item:
            raise ConfigError(f"{where}[root[{i}]] path: missing (every [[root]] needs a path)")
        roots.append(
            RootConfig(
                path=sec.get("path", _abs_path, Path("/")),
                require_mountpoint=sec.get("require_mountpoint", _bool, False),
                marker=sec.get("marker", _marker, ""),
                exclude=sec.get("exclude", _globs, ()),
                mode=sec.get("mode", _choice("auto", "watch", "poll"), "auto"),
                check_volume=sec.get("check_volume", _bool, True),
            )
        )
        sec.done()
    return Config(
        daemon,
        log,
        sweep,
        retention,
        _dedupe_roots(tuple(roots), f"{where}[[root]]"),
        source,
        watch,
        hashing,
        identity,
        metrics,
        web,
        ship,
    )


def with_roots(config: Config, roots: Sequence[str | os.PathLike[str]]) -> Config:
    """The config with its roots replaced by those given on the command line."""
    new = tuple(RootConfig(path=_abs_path(r)) for r in roots)
    return dataclasses.replace(config, roots=_dedupe_roots(new, "--root"))


def _dedupe_roots(roots: tuple[RootConfig, ...], where: str) -> tuple[RootConfig, ...]:
    for i, a in enumerate(roots):
        for b in roots[i + 1 :]:
            if a.path == b.path:
                raise ConfigError(f"{where} path: {a.path} is given twice")
            if a.path in b.path.parents or b.path in a.path.parents:
                raise ConfigError(
                    f"{where} path: {a.path} and {b.path} overlap; roots must not nest"
                )
    return roots


T = TypeVar("T")


class _Section:
    """One TOML table being read: remembers which keys were used."""

    def __init__(self, where: str, name: str, table: Any) -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"{where}[{name}]: must be a table")
        self.where, self.name, self.table = where, name, table
        self.used: set[str] = set()

    def get(self, key: str, conv: Callable[[Any], T], default: T) -> T:
        self.used.add(key)
        if key not in self.table:
            return default
        try:
            return conv(self.table[key])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.where}[{self.name}] {key}: {exc}") from None

    def done(self) -> None:
        _no_unknown(self.table, self.used, self.where, self.name)


def _no_unknown(table: Mapping[str, Any], known: set[str], where: str, name: str) -> None:
    for key in table:
        if key not in known:
            prefix = f"[{name}] " if name else ""
            raise ConfigError(
                f"{where}{prefix}{key}: unknown key (known: {', '.join(sorted(known))})"
            )


def _listen(v: Any) -> tuple[str, int | str] | None:
    """``"HOST:PORT"``, or ``"unix:/PATH"`` (``""`` or ``"off"``: off)."""
    if not isinstance(v, str):
        raise ValueError('must be "HOST:PORT" or "unix:/PATH", e.g. "127.0.0.1:9851"')
    if v in ("", "off"):
        return None
    if v.startswith("unix:"):
        path = v.removeprefix("unix:")
        if not os.path.isabs(path):
            raise ValueError(f"{v!r}: the socket's path must be absolute")
        return "unix", path
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'{v!r} is not "HOST:PORT", e.g. "127.0.0.1:9851"')
    return host.strip("[]"), int(port)


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"must be a string, not {type(v).__name__}")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"must be true or false, not {v!r}")
    return v


def _abs_path(v: Any) -> Path:
    p = Path(os.path.expanduser(_str(v) if not isinstance(v, os.PathLike) else os.fspath(v)))
    if not str(p):
        raise ValueError("must not be empty")
    return Path(os.path.abspath(p))


def _mode(v: Any) -> int:
    text = _str(v)
    if not re.fullmatch(r"0?[0-7]{3,4}", text):
        raise ValueError(f'{text!r} is not an octal file mode like "0660"')
    return int(text, 8)


def _choice(*allowed: str) -> Callable[[Any], Any]:
    def conv(v: Any) -> str:
        text = _str(v).lower()
        if text not in allowed:
            raise ValueError(f"{v!r} is not one of {', '.join(allowed)}")
        return text

    return conv


def _duration(v: Any) -> float | None:
    return parse_duration(_str(v))


def _duration_required(v: Any) -> float:
    result = parse_duration(_str(v), allow_never=False)
    assert result is not None
    return result


def _fraction(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < 1:
        raise ValueError(f"must be a number from 0 up to (not including) 1, not {v!r}")
    return float(v)


def _non_negative(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
        raise ValueError(f"must be a number >= 0, not {v!r}")
    return float(v)


def _host_uuid(v: Any) -> str:
    text = _str(v)
    if text:
        try:
            return str(uuid.UUID(text))
        except ValueError:
            raise ValueError(f"must be a UUID (or empty), not {text!r}") from None
    return text


def _batch(v: Any) -> int:
    n = _positive_int(v)
    if n > 10_000:
        raise ValueError(f"must be at most 10000, not {n}")
    return n


def _positive_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"must be a positive integer, not {v!r}")
    return v


def _marker(v: Any) -> str:
    text = _str(v)
    if text.startswith("/") or ".." in Path(text).parts:
        raise ValueError(f"{text!r} must be a path relative to the root, inside it")
    return text


def _globs(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise TypeError("must be an array of non-empty glob strings")
    for pattern in v:
        if pattern.startswith("/"):
            raise ValueError(f"{pattern!r}: patterns are relative to the root; drop the leading /")
    return tuple(v)
