"""Mutation testing of the modules that decide what users lose or keep, with mutmut.

    python bench/mutation.py                          # every module below
    python bench/mutation.py --module identity        # one of them
    python bench/mutation.py --module identity --show # and print each surviving mutant

mutmut (pip install mutmut) mutates one function at a time and runs the
tests that cover it. It imports the package from ``src/`` (or the top
level), so this stages a copy of ``daemon/filewarden`` as
``src/filewarden`` with ``tests/`` beside it in a work directory, writes
the configuration there, and runs ``mutmut run`` in it. Only in-process
tests can kill a mutant: a daemon process started by a test imports the
installed package, not mutmut's copy. So each module is tried against the
in-process test files listed for it. Prints killed, survived and untested
mutants per module, and the score (killed / tested).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

# Module → the in-process tests that exercise it.
MODULES: dict[str, list[str]] = {
    "identity": ["tests/test_identity.py", "tests/test_sweep.py", "tests/test_aggregator.py"],
    "reconcile": ["tests/test_sweep.py", "tests/test_aggregator.py", "tests/test_identity.py"],
    "sweep": ["tests/test_sweep.py", "tests/drills/test_crash.py", "tests/test_identity.py"],
}


def stage(work: Path, module: str, tests: list[str]) -> None:
    if work.exists():
        shutil.rmtree(work)
    (work / "src").mkdir(parents=True)
    shutil.copytree(
        HERE / "daemon" / "filewarden",
        work / "src" / "filewarden",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copytree(HERE / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    quoted = ", ".join(f'"{t}"' for t in tests)
    (work / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\n"
        'testpaths = ["tests"]\n'
        "timeout = 120\n"
        "[tool.mutmut]\n"
        'source_paths = ["src/filewarden"]\n'
        f'only_mutate = ["src/filewarden/{module}.py"]\n'
        f"pytest_add_cli_args_test_selection = [{quoted}]\n"
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
    parser.add_argument("--module", choices=sorted(MODULES), action="append")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/filewarden-mutation"))
    parser.add_argument("--show", action="store_true", help="print each surviving mutant's diff")
    args = parser.parse_args()
    for module in args.module or sorted(MODULES):
        work = args.work / module
        stage(work, module, MODULES[module])
        subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", "2"],
            cwd=work,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        found = results(work)
        killed = sum(1 for s in found.values() if s == "killed")
        survived = [name for name, s in found.items() if s == "survived"]
        untested = sum(1 for s in found.values() if s.strip() == "no tests")
        tested = killed + len(survived)
        score = killed / tested if tested else 0.0
        print(
            f"{module:10} {len(found):4} mutants: {killed} killed, {len(survived)} survived,"
            f" {untested} untested; score {score:.0%} of the tested"
        )
        if args.show:
            for name in survived:
                diff = subprocess.run(
                    [sys.executable, "-m", "mutmut", "show", name],
                    cwd=work,
                    capture_output=True,
                    text=True,
                ).stdout
                changed = [
                    line
                    for line in diff.splitlines()
                    if line[:1] in "+-" and line[:3] not in ("+++", "---")
                ]
                print(f"  {name}\n    " + "\n    ".join(changed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
