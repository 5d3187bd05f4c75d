#!/usr/bin/env python3
"""One entry point for a fresh machine that has only Python 3.11.

    python3 run.py demo     # venv + install + embedded PostgreSQL/Redis + demo data + server
    python3 run.py test     # venv + install + lint + the whole test suite (extra args go to pytest)
    python3 run.py serve    # web server + OTLP receiver against an existing DATABASE_URL
    python3 run.py bench ingest   # a benchmark from bench/ (ingest, ...), on the embedded defaults
    python3 run.py lock     # re-pin requirements.lock and requirements-dev.lock (--upgrade: newest)

This file uses the standard library only: it builds `.venv`, installs the pinned
requirements when their lock changed, then hands over to `observatory.launcher` inside the
virtualenv. Two locks: requirements.lock is what the production image runs (the Dockerfile
installs it alone); requirements-dev.lock adds tests, the demo's simulator and embedded
services, and tooling, with the runtime packages at the same versions. `serve` needs only
the runtime set; every other command installs the development set.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
RUNTIME_IN, RUNTIME_LOCK = ROOT / "requirements.in", ROOT / "requirements.lock"
DEV_IN, DEV_LOCK = ROOT / "requirements-dev.in", ROOT / "requirements-dev.lock"
STAMP = VENV / ".requirements.sha256"  # the digest of the lock last installed


def _digest(lock: Path) -> str:
    return hashlib.sha256(lock.read_bytes()).hexdigest()


def _ensure_venv(lock: Path) -> None:
    """A virtualenv with `lock` installed. The development set includes the runtime set at
    the same pins, so a venv holding it also serves `serve`."""
    if sys.version_info < (3, 11):  # noqa: UP036 - run.py may be started by an older python3
        sys.exit(f"Observatory needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        print(f"[run] creating virtualenv in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    installed = STAMP.read_text().strip() if STAMP.exists() else ""
    good_enough = {_digest(lock)} | ({_digest(DEV_LOCK)} if lock == RUNTIME_LOCK else set())
    if installed in good_enough:
        return
    print(f"[run] installing pinned requirements from {lock.name} (first run takes a few minutes)", flush=True)
    pip = [str(PYTHON), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-q", "-r", str(lock)], check=True)
    STAMP.write_text(_digest(lock))


def _lock(argv: list[str]) -> int:
    """Re-pin both locks with uv (installed from requirements-dev.lock). Pins already in a
    lock are kept unless `--upgrade` is given, so adding a line to a .in file re-pins only what
    it needs; the development lock is resolved under the runtime lock's pins."""
    compile_ = [str(PYTHON), "-m", "uv", "pip", "compile", "--quiet", "--universal", "--python-version", "3.11",
                "--custom-compile-command", "python3 run.py lock"]  # fmt: skip
    if "--upgrade" in argv:
        compile_.append("--upgrade")
    subprocess.run([*compile_, RUNTIME_IN.name, "-o", RUNTIME_LOCK.name], check=True, cwd=ROOT)
    subprocess.run([*compile_, DEV_IN.name, "-c", RUNTIME_LOCK.name, "-o", DEV_LOCK.name], check=True, cwd=ROOT)
    _ensure_venv(DEV_LOCK)  # install what was just pinned
    print(f"[run] pinned {RUNTIME_LOCK.name} and {DEV_LOCK.name}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "help"
    if command not in {"demo", "test", "serve", "bench", "lock"}:
        print(__doc__)
        return 0 if command in {"help", "-h", "--help"} else 2
    _ensure_venv(RUNTIME_LOCK if command == "serve" else DEV_LOCK)
    if command == "lock":
        return _lock(argv[1:])
    os.chdir(ROOT)
    os.execv(str(PYTHON), [str(PYTHON), "-m", "observatory.launcher", command, *argv[1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
