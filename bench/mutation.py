"""Mutation testing of the modules that decide what users lose or keep, with mutmut.

    python bench/mutation.py                          # every target below
    python bench/mutation.py --module identity        # one of them
    python bench/mutation.py --module identity --show # and print each surviving mutant

mutmut (pip install mutmut) mutates one function at a time and runs the
tests that cover it. It imports the package from ``src/`` (or the top
level), so this stages a copy of ``daemon/filewarden`` as
``src/filewarden`` with ``tests/`` beside it in a work directory, writes
the configuration there, and runs ``mutmut run`` in it. Only in-process
tests can kill a mutant: a daemon process started by a test imports the
installed package, not mutmut's copy. So each module is tried against the
in-process test files listed for it. A target is a whole module, or the
functions of one promise across modules (purge and retention, the CLI's
exit codes, config reload): mutmut then runs only the mutants whose names
match. Prints killed, survived and untested mutants per target, and the
score (killed / tested).
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Target:
    """What to mutate (files under filewarden/, and mutant name patterns) and the tests to run."""

    files: tuple[str, ...]
    tests: tuple[str, ...]
    functions: tuple[str, ...] = ()  # mutmut names, e.g. "filewarden.cli.x_main__mutmut_*"

    def wants(self, name: str) -> bool:
        return not self.functions or any(fnmatch.fnmatch(name, f) for f in self.functions)


def _method(module: str, cls: str, *names: str) -> tuple[str, ...]:
    return tuple(f"filewarden.{module}.x\u01c1{cls}\u01c1{n}__mutmut_*" for n in names)


def _function(module: str, *names: str) -> tuple[str, ...]:
    return tuple(f"filewarden.{module}.x_{n}__mutmut_*" for n in names)


TARGETS: dict[str, Target] = {
    "identity": Target(
        ("identity.py",),
        (
            "tests/test_identity.py",
            "tests/test_sweep.py",
            "tests/test_aggregator.py",
            "tests/test_live.py",
        ),
    ),
    "reconcile": Target(
        ("reconcile.py",),
        (
            "tests/test_reconcile.py",
            "tests/test_sweep.py",
            "tests/test_aggregator.py",
            "tests/test_live.py",
            "tests/test_identity.py",
        ),
    ),
    "sweep": Target(
        ("sweep.py", "walk.py", "listing.py"),
        ("tests/test_sweep.py", "tests/drills/test_crash.py", "tests/test_identity.py"),
    ),
    "availability": Target(("availability.py",), ("tests/test_availability.py",)),
    "purge": Target(
        ("catalog/_files.py", "catalog/_hashes.py", "catalog/_journal.py", "purge.py", "api.py"),
        ("tests/test_purge.py", "tests/test_api.py"),
        _function("catalog._files", "purge", "missing_before", "all_missing")
        + _function("catalog._hashes", "prune_arrivals")
        + _function("catalog._journal", "compact_journal")
        + _function("purge", "purge_missing")
        + _method("purge", "Purged", "answer")
        + _method("purge", "Retention", "apply", "run", "check", "once")
        + _method("api", "Api", "purge")
        + _function("api", "_seconds"),
    ),
    "exit-codes": Target(
        ("cli.py",),
        ("tests/test_cli_codes.py",),
        _function(
            "cli",
            "main",
            "_cmd_info",
            "_cmd_purge",
            "_cmd_scan",
            "_cmd_annotate",
            "_cmd_sync",
            "_cmd_accept_root",
            "_cmd_status",
        ),
    ),
    "reload": Target(
        ("daemon.py", "hasher.py", "identity.py", "scheduler.py", "availability.py", "purge.py"),
        ("tests/test_reload.py", "tests/test_daemon.py"),
        _method("daemon", "Daemon", "reload", "_apply", "_add_root", "_remove_root")
        + _method("hasher", "Hasher", "apply")
        + _method("identity", "Relinker", "apply")
        + _method("scheduler", "Scheduler", "apply")
        + _method("availability", "Availability", "apply")
        + _method("purge", "Retention", "apply"),
    ),
}


def stage(work: Path, target: Target) -> None:
    if work.exists():
        shutil.rmtree(work)
    (work / "src").mkdir(parents=True)
    shutil.copytree(
        HERE / "daemon" / "filewarden",
        work / "src" / "filewarden",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copytree(HERE / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    tests = ", ".join(f'"{t}"' for t in target.tests)
    files = ", ".join(f'"src/filewarden/{f}"' for f in target.files)
    (work / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\n"
        'testpaths = ["tests"]\n'
        "timeout = 120\n"
        "[tool.mutmut]\n"
        'source_paths = ["src/filewarden"]\n'
        f"only_mutate = [{files}]\n"
        f"pytest_add_cli_args_test_selection = [{tests}]\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q"]\n'
    )


def results(work: Path) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=work,
        capture_output=True,
        text=True,
    ).stdout
    found = {}
    for line in out.splitlines():
        match = re.match(r"\s*(\S+): (.+)", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", choices=sorted(TARGETS), action="append")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/filewarden-mutation"))
    parser.add_argument("--show", action="store_true", help="print each surviving mutant's diff")
    parser.add_argument(
        "--tests", nargs="+", help="run these test files instead of the target's (a before figure)"
    )
    parser.add_argument(
        "--again", action="store_true", help="keep the last run's results; run only what is new"
    )
    args = parser.parse_args()
    for name in args.module or sorted(TARGETS):
        target, work = TARGETS[name], args.work / name
        if args.tests:
            target = dataclasses.replace(target, tests=tuple(args.tests))
        if not (args.again and work.exists()):
            stage(work, target)
        subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", "2", *target.functions],
            cwd=work,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        found = {k: v for k, v in results(work).items() if target.wants(k)}
        killed = sum(1 for s in found.values() if s in ("killed", "timeout"))
        survived = [k for k, s in found.items() if s == "survived"]
        untested = sum(1 for s in found.values() if s.strip() == "no tests")
        tested = killed + len(survived)
        score = killed / tested if tested else 0.0
        print(
            f"{name:12} {len(found):4} mutants: {killed} killed, {len(survived)} survived,"
            f" {untested} untested; score {score:.0%} of the tested"
        )
        if args.show:
            for mutant in survived:
                diff = subprocess.run(
                    [sys.executable, "-m", "mutmut", "show", mutant],
                    cwd=work,
                    capture_output=True,
                    text=True,
                ).stdout
                changed = [
                    line
                    for line in diff.splitlines()
                    if line[:1] in "+-" and line[:3] not in ("+++", "---")
                ]
                print(f"  {mutant}\n    " + "\n    ".join(changed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
