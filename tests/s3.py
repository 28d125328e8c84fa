"""An S3-compatible server on 127.0.0.1 for the object-store tests: moto's standalone server, the
way s3fs tests itself. Started in this process (ThreadedMotoServer), or as a child process when a
test needs to stop it under a running job (`MotoProcess`)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "photogenic-test-key", "AWS_SECRET_ACCESS_KEY": "photogenic-test-secret-8d1f",
               "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The session's S3 server port, fixed up front: the session's Label Studio (tests/annotation/helpers.py)
# is started with it as its operator S3 endpoint, whichever of the two starts first.
MOTO_PORT = free_port()
MOTO_ENDPOINT = f"http://127.0.0.1:{MOTO_PORT}"


def s3_env(endpoint: str) -> dict[str, str]:
    """What a client process needs to reach the server (the standard AWS variables only)."""
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}


def wait_ready(endpoint: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"S3 server at {endpoint} did not start in {timeout}s")


class MotoProcess:
    """moto's server as a child process on 127.0.0.1:port; `stop()` kills it like a dropped store.
    Its buckets live in its memory, so a restart begins empty unless `state` persists them:
    tests that restart keep one process and pause it instead (SIGSTOP/SIGCONT), which is what a
    store that stops answering looks like to a client."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "MotoProcess":
        code = ("import sys; from moto.server import ThreadedMotoServer; import time;"
                f"s = ThreadedMotoServer(ip_address='127.0.0.1', port={self.port}, verbose=False); s.start();"
                "print('ready', flush=True); time.sleep(10**9)")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        wait_ready(self.endpoint)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def upload_tree(local: Path, url: str, env: dict[str, str]) -> None:
    """Copy a local folder to `url` (s3://bucket/prefix) with s3fs, as a user's upload would."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=env["AWS_ENDPOINT_URL"], key=env["AWS_ACCESS_KEY_ID"],
                           secret=env["AWS_SECRET_ACCESS_KEY"])
    bucket = url.removeprefix("s3://").split("/", 1)[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    fs.put(str(local).rstrip("/") + "/", url.removeprefix("s3://"), recursive=True)
    fs.invalidate_cache()


def filesystem(env: dict[str, str]):
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=env["AWS_ENDPOINT_URL"], key=env["AWS_ACCESS_KEY_ID"],
                             secret=env["AWS_SECRET_ACCESS_KEY"], skip_instance_cache=True)


def environ_with(env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **env}


class DroppableEndpoint:
    """A TCP forwarder on 127.0.0.1:port in front of the S3 server. `drop()` closes the listener
    and cuts every open connection, which is what clients see when a store goes away mid-request
    (refused connections, resets); `restore()` listens on the same port again. The buckets live on
    behind it, so a drill can stop "the server" and restart it without losing what it stored."""

    def __init__(self, backend_port: int, port: int | None = None):
        import threading

        self.backend_port = backend_port
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def restore(self) -> "DroppableEndpoint":
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def drop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # dropped
            try:
                upstream = socket.create_connection(("127.0.0.1", self.backend_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
