"""The config file of a daemon started for a test or a benchmark."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from filewarden.testing._process import DaemonProcess

# A test or a benchmark decides when the daemon sweeps (by asking, or by
# restarting it); a timer's sweep in the middle would change what it sees.
QUIET_SWEEPS: Mapping[str, object] = {
    "interval": "never",
    "quick_interval": "never",
    "poll_interval": "1h",
}


@dataclasses.dataclass(frozen=True)
class Setup:
    """A config file written by ``write_config`` and where it puts the daemon's state and socket."""

    path: Path
    socket: Path
    state_dir: Path
    roots: tuple[Path, ...]

    @property
    def catalog(self) -> Path:
        return self.state_dir / "catalog.db"

    def reset_state(self) -> None:
        """Forget the catalog: the next start is a first index."""
        if self.state_dir.exists():
            for p in self.state_dir.iterdir():
                p.unlink()

    def start(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        prefix: Sequence[str] = (),
        notify: bool = False,
        log: Path | None = None,
    ) -> DaemonProcess:
        """``run --config`` on this file (extra arguments after it); see ``DaemonProcess``."""
        return DaemonProcess(
            self.path.parent,
            "--config",
            str(self.path),
            *args,
            env=env,
            prefix=prefix,
            notify=notify,
            log=log,
            socket=self.socket,
        )


def _toml_table(header: str, keys: Mapping[str, object]) -> list[str]:
    # JSON's strings, numbers, booleans and arrays of them are also TOML's.
    return [header, *(f"{k} = {json.dumps(v)}" for k, v in keys.items())]


def write_config(
    tmp: Path,
    roots: Sequence[Path | Mapping[str, object]],
    *,
    name: str = "config",
    backend: str = "watchdog",
    state_dir: Path | None = None,
    socket: Path | None = None,
    daemon: Mapping[str, object] | None = None,
    sections: Mapping[str, Mapping[str, object]] | None = None,
    root: Mapping[str, object] | None = None,
    extra: str = "",
) -> Setup:
    """Write ``tmp/NAME.toml``: state under ``tmp/state``, the socket at ``tmp/run/fw.sock``.

    Sweeps run at start and when asked for, never on a timer. ``daemon``
    adds keys to ``[daemon]``, ``sections`` adds tables (or keys to
    ``[sweep]`` and ``[watch]``), ``root`` adds keys to every ``[[root]]``;
    a root given as a mapping is its whole table (``path`` and its own
    keys). ``extra`` is TOML text appended as it is.
    """
    state_dir = state_dir or tmp / "state"
    socket = socket or tmp / "run" / "fw.sock"
    socket.parent.mkdir(parents=True, exist_ok=True)
    tables: dict[str, dict[str, object]] = {
        "daemon": {"state_dir": str(state_dir), "socket": str(socket), **(daemon or {})},
        "sweep": dict(QUIET_SWEEPS),
        "watch": {"backend": backend},
    }
    for section, keys in (sections or {}).items():
        tables.setdefault(section, {}).update(keys)
    lines: list[str] = []
    for section, keys in tables.items():
        lines += _toml_table(f"[{section}]", keys)
    paths = []
    for r in roots:
        table = (
            {"path": str(r)}
            if isinstance(r, Path)
            else {k: str(v) if isinstance(v, Path) else v for k, v in r.items()}
        )
        lines += _toml_table("[[root]]", {**(root or {}), **table})
        paths.append(Path(str(table["path"])))
    path = tmp / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return Setup(path, socket, state_dir, tuple(paths))
