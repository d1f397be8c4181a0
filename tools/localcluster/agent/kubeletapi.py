"""The slice of the kubelet's HTTPS API that makes `kubectl logs` work: /containerLogs and /healthz.

The apiserver reaches it at the Node's InternalIP and daemonEndpoints port with
the client certificate given by --kubelet-client-certificate; only clients with
a certificate from the cluster CA are served.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from .. import layout

log = logging.getLogger(__name__)


def _tail(text: str, lines: int | None, limit_bytes: int | None) -> str:
    if lines is not None:
        text = "".join(text.splitlines(keepends=True)[-lines:]) if lines > 0 else ""
    if limit_bytes is not None:
        text = text.encode()[:limit_bytes].decode(errors="ignore")
    return text


class _Handler(BaseHTTPRequestHandler):
    state_dir: Path

    def log_message(self, fmt, *args):  # quiet: the apiserver polls
        log.debug(fmt, *args)

    def _reply(self, code: int, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - http.server's naming
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        if parts == ["healthz"]:
            return self._reply(200, "ok")
        if len(parts) != 4 or parts[0] != "containerLogs":
            return self._reply(501, f"{url.path} is not implemented by the localcluster node agent "
                                    "(it serves /containerLogs only)")
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        _, namespace, pod, container = parts
        previous = query.get("previous") == "true"
        try:
            text = layout.read_logs(self.state_dir, namespace, pod, container, previous)
        except LookupError as err:
            return self._reply(404, str(err))
        tail = int(query["tailLines"]) if "tailLines" in query else None
        limit = int(query["limitBytes"]) if "limitBytes" in query else None
        if query.get("follow") != "true" or previous:
            return self._reply(200, _tail(text, tail, limit))
        self._follow(namespace, pod, container, tail)

    def _follow(self, namespace: str, pod: str, container: str, tail: int | None) -> None:
        """Stream the log while the container runs, like `kubectl logs -f` (HTTP/1.0: the body ends at close)."""
        pod_path = layout.find_pod_dir(self.state_dir, namespace, pod)
        uid = pod_path.name.rsplit("_", 1)[-1]
        running = self.state_dir / "running" / f"{uid}-{container}.json"
        logs = sorted((pod_path / "logs" / container).glob("*.log"), key=lambda p: int(p.stem))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()
        with open(logs[-1], "rb") as handle:
            try:
                self._send(_tail(handle.read().decode(errors="replace"), tail, None).encode())
                while True:
                    data = handle.read()
                    if data:
                        self._send(data)
                    elif not running.exists():
                        break
                    else:
                        time.sleep(0.3)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped following

    def _send(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()


def serve(state_dir: Path, port: int, cert: str, key: str, ca: str,
          listening: socket.socket | None = None) -> ThreadingHTTPServer:
    """Serve on 127.0.0.1:``port``, or on ``listening`` (a socket bound in a node's network namespace)."""
    handler = type("KubeletHandler", (_Handler,), {"state_dir": state_dir})
    if listening is None:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    else:
        server = ThreadingHTTPServer(listening.getsockname(), handler, bind_and_activate=False)
        server.socket.close()
        server.socket = listening
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.load_verify_locations(ca)
    context.verify_mode = ssl.CERT_REQUIRED
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="kubelet-api", daemon=True).start()
    return server
