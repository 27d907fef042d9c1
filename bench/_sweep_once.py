"""One sweep through the daemon's own writer and sweep code; prints JSON.

Run as a child process so its peak RSS is its own:
``python bench/_sweep_once.py CATALOG TREE full|quick``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

from filewarden import catalog, logs
from filewarden.config import LogConfig, RootConfig
from filewarden.roots import Root
from filewarden.sweep import Sweep
from filewarden.walk import WalkProcess
from filewarden.writer import Writer


def main() -> None:
    db, tree, kind = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    logs.configure(LogConfig(format="json", level="warning"))
    catalog.limit_memory()  # as the daemon does
    t0 = time.monotonic()
    writer = Writer(db)
    writer.start()
    root_id = writer.call(lambda c: catalog.ensure_root(c, os.fsencode(tree)))
    root = Root.make(root_id, RootConfig(path=tree))
    away = WalkProcess()  # as the scheduler does
    tally = Sweep(root, writer, full=(kind == "full"), stop=threading.Event(), away=away).run()
    seconds = time.monotonic() - t0
    away.close()
    writer.stop(time.monotonic() + 30)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "walker_maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                "tally": dataclasses.asdict(tally),
            }
        )
    )


if __name__ == "__main__":
    main()
