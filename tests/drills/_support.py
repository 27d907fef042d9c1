"""What the drills share besides the daemon harness (filewarden.testing): checks and reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from filewarden import catalog

# setpriv: the daemon run by root without the capabilities that override file permissions.
CAPPED = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def integrity(db: Path) -> str:
    """``PRAGMA integrity_check`` on a read-only connection: "ok" for a sound catalog."""
    conn = catalog.connect(db, readonly=True)
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()
    return "ok" if rows == ["ok"] else "; ".join(str(r) for r in rows[:10])


def report(name: str, figures: dict[str, Any]) -> str:
    return f"{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items())
