#!/usr/bin/env python3
"""One entry point for a fresh machine that has only Python 3.11.

    python3 run.py demo     # venv + install + embedded PostgreSQL/Redis + demo data + server
    python3 run.py test     # venv + install + the whole test suite (extra args go to pytest)
    python3 run.py serve    # web server + OTLP receiver against an existing DATABASE_URL
    python3 run.py bench ingest   # a benchmark from bench/ (ingest, ...), on the embedded defaults
    python3 run.py lock     # re-pin requirements.lock from requirements.in

This file uses the standard library only: it builds `.venv`, installs the pinned
requirements when requirements.lock changed, then hands over to `observatory.launcher`
inside the virtualenv.
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
LOCK = ROOT / "requirements.lock"
STAMP = VENV / ".requirements.sha256"


def _ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - run.py may be started by an older python3
        sys.exit(f"Observatory needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        print(f"[run] creating virtualenv in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == digest:
        return
    print("[run] installing pinned requirements (first run takes a few minutes)", flush=True)
    pip = [str(PYTHON), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-q", "-r", str(LOCK)], check=True)
    STAMP.write_text(digest)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "help"
    if command not in {"demo", "test", "serve", "bench", "lock"}:
        print(__doc__)
        return 0 if command in {"help", "-h", "--help"} else 2
    _ensure_venv()
    if command == "lock":
        subprocess.run([str(PYTHON), "-m", "pip", "install", "-q", "-r", str(ROOT / "requirements.in")], check=True)
        frozen = subprocess.run([str(PYTHON), "-m", "pip", "freeze"], check=True, capture_output=True, text=True)
        LOCK.write_text(frozen.stdout)
        STAMP.write_text(hashlib.sha256(LOCK.read_bytes()).hexdigest())
        return 0
    os.chdir(ROOT)
    os.execv(str(PYTHON), [str(PYTHON), "-m", "observatory.launcher", command, *argv[1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
