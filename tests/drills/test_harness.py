"""The node harness and the delay proxy: lifecycle, standby, delay, partition, cleanup."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import psycopg
import pytest

from drills.pg import PgError, PgNode, _sysv_segments, cluster, free_port
from drills.proxy import DelayProxy


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_node_lifecycle_kill_restart() -> None:
    with cluster(["n1"]) as nodes:
        n = nodes["n1"]
        assert n.psql("select 1") == "1"
        n.execute("create table t(i int)")
        n.execute("insert into t values (1)")
        pid = n.proc.pid if n.proc else -1
        n.kill()
        assert not n.running
        assert not _pid_alive(pid)
        n.start()
        assert n.execute("select count(*) from t") == [(1,)]
        n.restart()
        assert n.execute("select count(*) from t") == [(1,)]
        assert n.execute("select current_setting('listen_addresses')") == [("127.0.0.1",)]
        # The postmaster runs unprivileged, never as root.
        assert n.proc is not None
        assert os.stat(f"/proc/{n.proc.pid}").st_uid == n.user.uid
        if os.getuid() == 0:
            assert n.user.uid != 0


def _shm_ids() -> set[str]:
    with open("/proc/sysvipc/shm") as f:
        return {line.split()[1] for line in f.readlines()[1:]}


def _group(n: PgNode) -> list[str]:
    """What is left of the server's process group: each process's status line (for a failure message)."""
    assert n.proc is not None
    left = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and os.getpgid(int(d.name)) == n.proc.pid:
                left.append(d.name + " " + (d / "stat").read_text()[:80])
        except OSError:
            pass
    return left


def test_a_killed_server_leaves_no_shared_memory_segment() -> None:
    # A postmaster killed with SIGKILL cannot remove its System V segment; leaked, they add up to the
    # machine's limit (SHMMNI) and then no server starts. The harness removes it.
    with cluster(["n1"]) as nodes:
        n = nodes["n1"]
        shmid = n._shared_memory_id()
        assert shmid is not None, (n.data_dir / "postmaster.pid").read_text()
        assert shmid in _shm_ids(), (shmid, _shm_ids())
        n.kill()
        assert shmid not in _shm_ids(), (_sysv_segments().get(shmid), _group(n))


def test_a_killed_server_leaves_no_dynamic_shared_memory() -> None:
    # A server's dynamic shared memory lives in /dev/shm: the control segment its postmaster maps, and
    # segments it lists that nobody maps. Killed with SIGKILL, nothing removes them, and drills fill
    # the tmpfs. The harness removes every one (other servers' segments, of tests running beside this
    # one, are not looked at).
    with cluster(["n1"]) as nodes:
        n = nodes["n1"]
        n.execute("select 1")
        assert n.proc is not None
        mapped = {line.split()[-1] for line in Path(f"/proc/{n.proc.pid}/maps").read_text().splitlines()
                  if "/dev/shm/PostgreSQL." in line}
        found = {str(p) for p in n._posix_segments()}
        assert mapped and mapped <= found and len(found) > len(mapped), (mapped, found)
        n.kill()
        assert not {p for p in found if Path(p).exists()}


def test_cluster_cleans_up_on_error() -> None:
    seen: dict[str, object] = {}
    with pytest.raises(RuntimeError, match="boom"):
        with cluster(["a", "b"]) as nodes:
            seen["pids"] = [n.proc.pid for n in nodes.values() if n.proc]
            seen["dir"] = nodes["a"].base_dir
            raise RuntimeError("boom")
    time.sleep(0.2)
    assert all(not _pid_alive(p) for p in seen["pids"])  # type: ignore[union-attr]
    assert not Path(seen["dir"]).exists()  # type: ignore[arg-type]


def test_start_failure_reports_log() -> None:
    with cluster(["bad"], start=False) as nodes:
        n = nodes["bad"]
        n.settings["shared_buffers"] = "not-a-size"
        with pytest.raises(PgError):
            n.start(timeout=10)


def test_streaming_standby_through_proxy() -> None:
    with cluster(["primary"]) as nodes:
        p = nodes["primary"]
        p.execute("create table t(i int)")
        with DelayProxy(p.port, delay_up_ms=5, delay_down_ms=5) as link:
            s = p.make_standby("standby", via_port=link.listen_port)
            nodes["standby"] = s
            s.start()
            assert s.execute("select pg_is_in_recovery()") == [(True,)]
            p.execute("insert into t select generate_series(1, 100)")
            deadline = time.monotonic() + 20
            while s.execute("select count(*) from t") != [(100,)]:
                assert time.monotonic() < deadline, "standby never caught up"
                time.sleep(0.05)
            assert link.stats.connections >= 1
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                s.execute("insert into t values (1)")
            p.kill()
            s.promote()
            s.wait_ready(writable=True)
            s.execute("insert into t values (101)")


def _echo_server() -> tuple[socket.socket, int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return

            def echo(c: socket.socket = conn) -> None:
                with c:
                    while data := c.recv(4096):
                        c.sendall(data)

            threading.Thread(target=echo, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return srv, port


def _rtt(port: int) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        t0 = time.monotonic()
        c.sendall(b"x")
        assert c.recv(1) == b"x"
        return time.monotonic() - t0


def test_proxy_adds_delay_each_direction() -> None:
    srv, port = _echo_server()
    try:
        with DelayProxy(port, delay_up_ms=30, delay_down_ms=20) as link:
            rtt = min(_rtt(link.listen_port) for _ in range(3))
            assert rtt >= 0.050
            link.set_delay(up_ms=0, down_ms=0)
            assert min(_rtt(link.listen_port) for _ in range(3)) < 0.050
    finally:
        srv.close()


def test_proxy_partition_freezes_then_heals() -> None:
    srv, port = _echo_server()
    try:
        with DelayProxy(port) as link:
            c = socket.create_connection(("127.0.0.1", link.listen_port), timeout=5)
            c.sendall(b"a")
            assert c.recv(1) == b"a"
            link.partition()
            assert link.partitioned
            c.settimeout(0.3)
            c.sendall(b"b")
            with pytest.raises(socket.timeout):
                c.recv(1)
            link.heal()
            c.settimeout(5)
            assert c.recv(1) == b"b"
            c.close()
    finally:
        srv.close()


def test_proxy_partition_reset_refuses() -> None:
    srv, port = _echo_server()
    try:
        with DelayProxy(port) as link:
            c = socket.create_connection(("127.0.0.1", link.listen_port), timeout=5)
            c.sendall(b"a")
            assert c.recv(1) == b"a"
            link.partition(reset=True)
            c.settimeout(2)
            with pytest.raises(OSError):
                c.sendall(b"b")
                if c.recv(1) == b"":
                    raise ConnectionResetError("closed by proxy")
            c2 = socket.create_connection(("127.0.0.1", link.listen_port), timeout=5)
            c2.settimeout(2)
            assert c2.recv(1) == b""  # accepted then closed at once
            assert link.stats.refused >= 1
            link.heal()
            assert _rtt(link.listen_port) < 1
    finally:
        srv.close()


def test_free_port_unique() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
