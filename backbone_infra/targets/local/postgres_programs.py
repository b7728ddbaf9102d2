"""How PostgreSQL's own programs run on this machine, for the local stacks.

PostgreSQL refuses to run as root: as root, every PostgreSQL program runs as the
system user :data:`PG_USER` through ``setpriv``, which execs (the recorded pid is
the postmaster itself), and the files it reads are owned by that user. ``initdb``
runs once per machine into a cached template (:func:`initdb_template`) that each
stack copies.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import secrets as pysecrets
import shutil
import subprocess
from pathlib import Path

from backbone_infra.errors import MissingBinaryError, ServiceStartError
from backbone_infra.paths import cache_dir
from backbone_infra.render.postgres import INITDB_ARGS
from backbone_infra.targets.local.files import write_private
from backbone_infra.targets.local.process import log_tail

__all__ = [
    "PG_BIN",
    "PG_USER",
    "as_pg_user",
    "initdb_template",
    "run_pg_program",
    "single_user",
    "write_owned",
]

PG_BIN = Path(os.environ.get("HARNESS_PG_BIN", "/usr/lib/postgresql/15/bin"))
#: The system user PostgreSQL runs as when the harness runs as root
#: (created by ``scripts/setup.d/05-postgres-user.sh``).
PG_USER = os.environ.get("BACKBONE_PG_USER", "backbone-pg")
#: Where the ``initdb`` template is cached (see :func:`initdb_template`).


def _template_cache() -> Path:
    """Where the ``initdb`` template is cached: ``<project>/.cache``
    (:mod:`backbone_infra.paths`)."""
    return cache_dir() / "postgres-template"


def _cmd_output(args: list[str]) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=False).stdout.strip()


def as_pg_user() -> tuple[list[str], int | None, int | None]:
    """Command prefix, uid and gid for running PostgreSQL programs."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        pw = pwd.getpwnam(PG_USER)
    except KeyError:
        raise MissingBinaryError(
            f"the system user {PG_USER!r} (PostgreSQL refuses to run as root)",
            "getent passwd",
        ) from None
    prefix = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups"]
    return prefix, pw.pw_uid, pw.pw_gid


def run_pg_program(args: list[str], what: str, log: Path, *, cwd: Path) -> None:
    """Run a PostgreSQL tool as the PostgreSQL user; its output goes to ``log``."""
    prefix, _, _ = as_pg_user()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n--- {what} ---\n".encode())
        out.flush()
        proc = subprocess.run(
            [*prefix, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            check=False,
            timeout=120,
        )
    if proc.returncode != 0:
        raise ServiceStartError(
            what, f"failed with exit code {proc.returncode}", log, log_tail(log)
        )


def write_owned(path: Path, text: str, *, append: bool = False) -> None:
    """Write a file readable only by the PostgreSQL user."""
    _, uid, gid = as_pg_user()
    owner = (uid, gid) if uid is not None and gid is not None else None
    write_private(path, text, append=append, owner=owner)


def initdb_template(log: Path, *, cwd: Path) -> Path:
    """An ``initdb`` output cached per machine (and PostgreSQL build): the
    same for every stack except the superuser password, which is reset on
    each copy. Built once under a lock; later stacks skip ``initdb``."""
    _, uid, gid = as_pg_user()
    build = _cmd_output([str(PG_BIN / "postgres"), "--version"])
    key = hashlib.sha256(f"{PG_BIN}|{build}|{INITDB_ARGS}|{uid}".encode()).hexdigest()[:12]
    cache = _template_cache() / key
    if (cache / "PG_VERSION").exists():
        return cache
    _template_cache().mkdir(parents=True, exist_ok=True)
    with (_template_cache() / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (cache / "PG_VERSION").exists():
            return cache
        building = _template_cache() / f"{key}.building-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir(mode=0o700)
        if uid is not None and gid is not None:
            os.chown(building, uid, gid)
        pwfile = building / "pw"
        # A throwaway password: every copy gets its own before it starts.
        write_owned(pwfile, pysecrets.token_urlsafe(24) + "\n")
        try:
            run_pg_program(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(building / "data"),
                    f"--pwfile={pwfile}",
                    *INITDB_ARGS,
                ],
                "initdb (template, once per machine)",
                log,
                cwd=cwd,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        os.replace(building / "data", cache)
        shutil.rmtree(building, ignore_errors=True)
    return cache


def single_user(data: Path, sql: str, what: str, log: Path, *, cwd: Path) -> None:
    """Run SQL in single-user mode (stdin, never a command line)."""
    prefix, _, _ = as_pg_user()
    with log.open("ab") as out:
        out.write(f"\n--- {what} ---\n".encode())
        out.flush()
        proc = subprocess.run(
            [*prefix, str(PG_BIN / "postgres"), "--single", "-D", str(data), "-j", "postgres"],
            input=sql.encode(),
            stdout=subprocess.DEVNULL,
            stderr=out,
            cwd=cwd,
            check=False,
            timeout=60,
        )
    if proc.returncode != 0:
        raise ServiceStartError(
            what, f"failed with exit code {proc.returncode}", log, log_tail(log)
        )
