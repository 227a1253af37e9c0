"""Start/stop real lighttpd / Apache front ends and a FastCGI backend for tests.

Everything binds to 127.0.0.1 on free ports and runs in the foreground as a
child process of the test run.  Nothing here skips: a missing binary or a
server that does not come up raises ``RuntimeError`` with the tail of its
logs, so CI fails loudly.

Typical use (see tests/test_webconfig.py)::

    base = make_base_dir()                       # 0755, under /tmp
    backend = FcgiBackend("tests.fake_image_app:app", socket_path=..., env=...)
    backend.start()
    server = WebServer("lighttpd", render_config("lighttpd", ...), run_dir, port)
    server.start()
    status, headers, body = http_get(server.port, "/75x75/ID.jpeg")
    backend.stop(); backend.start()              # restartable
    server.stop(); backend.stop()

The app is given as an import string ``"module:attr"`` (``"module:attr()"``
calls a factory), which is the seam for swapping the fake app for the real
one.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent

SERVER_BINARIES = {"lighttpd": "lighttpd", "apache": "apache2"}
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def make_base_dir(prefix: str = "huimages-web-") -> Path:
    """A fresh directory under the system temp dir, mode 0755.

    pytest's ``tmp_path`` lives below a 0700 directory; when the tests run as
    root the web servers drop to www-data and could neither read the cache
    nor reach the FastCGI socket there.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def remove_base_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def log_tail(*paths: str | os.PathLike[str], lines: int = 40) -> str:
    out = []
    for p in paths:
        try:
            text = Path(p).read_text(errors="replace")
        except OSError:
            continue
        tail = "\n".join(text.splitlines()[-lines:])
        out.append(f"--- {p} ---\n{tail}")
    return "\n".join(out) or "(no log output)"


def _wait_for_tcp(host: str, port: int, deadline: float, proc: subprocess.Popen) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def _wait_for_unix(path: str, deadline: float, proc: subprocess.Popen) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if os.path.exists(path):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                try:
                    s.connect(path)
                    return True
                except OSError:
                    pass
        time.sleep(0.02)
    return False


def _terminate(proc: subprocess.Popen | None, timeout: float = STOP_TIMEOUT) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


# ----------------------------------------------------------------- backend

_BACKEND_CODE = """
import importlib, sys
spec, mode, target, threaded = sys.argv[1:5]
module_name, _, attr = spec.partition(":")
call = attr.endswith("()")
obj = getattr(importlib.import_module(module_name), attr[:-2] if call else attr)
app = obj() if call else obj
from huimages_wsgi.fcgi import serve_fcgi
threaded = threaded == "1"
if mode == "socket":
    serve_fcgi(app, socket_path=target, threaded=threaded)
else:
    host, _, port = target.rpartition(":")
    serve_fcgi(app, bind=(host, int(port)), threaded=threaded)
"""


class FcgiBackend:
    """The WSGI app under flup's FastCGI server, in a restartable subprocess."""

    def __init__(
        self,
        app: str,
        *,
        socket_path: str | os.PathLike[str] | None = None,
        bind: tuple[str, int] | None = None,
        threaded: bool = True,
        env: dict[str, str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        pythonpath: list[str | os.PathLike[str]] | None = None,
    ) -> None:
        if (socket_path is None) == (bind is None):
            raise ValueError("FcgiBackend needs exactly one of socket_path or bind")
        self.app = app
        self.socket_path = os.fspath(socket_path) if socket_path is not None else None
        self.bind = bind
        self.threaded = threaded
        self.env = dict(env or {})
        self.pythonpath = [os.fspath(p) for p in (pythonpath or [REPO_ROOT])]
        if log_path:
            self.log_path = Path(log_path)
        elif self.socket_path:
            self.log_path = Path(self.socket_path).parent / "fcgi-backend.log"
        else:
            self.log_path = Path(tempfile.gettempdir()) / f"huimages-fcgi-{bind[1]}.log"
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    @property
    def fcgi_socket(self) -> str | None:
        """Value for render_config(fcgi_socket=...)."""
        return self.socket_path

    @property
    def fcgi_bind(self) -> str | None:
        """Value for render_config(fcgi_bind=...)."""
        return f"{self.bind[0]}:{self.bind[1]}" if self.bind else None

    def start(self) -> FcgiBackend:
        if self.running:
            return self
        env = dict(os.environ)
        env.update(self.env)
        env["PYTHONPATH"] = os.pathsep.join(
            self.pythonpath + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        env["PYTHONUNBUFFERED"] = "1"
        mode, target = ("socket", self.socket_path) if self.socket_path else ("tcp", self.fcgi_bind)
        log = open(self.log_path, "ab")  # noqa: SIM115 (kept open by the child)
        t0 = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _BACKEND_CODE,
                    self.app,
                    mode,
                    target,
                    "1" if self.threaded else "0",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(REPO_ROOT),
            )
        finally:
            log.close()
        deadline = t0 + START_TIMEOUT
        if self.socket_path:
            ok = _wait_for_unix(self.socket_path, deadline, self.proc)
        else:
            ok = _wait_for_tcp(self.bind[0], self.bind[1], deadline, self.proc)
        if not ok:
            self.stop()
            raise RuntimeError(
                f"FastCGI backend {self.app} on {target} did not come up within "
                f"{START_TIMEOUT:.0f}s\n{log_tail(self.log_path)}"
            )
        self.startup_seconds = time.monotonic() - t0
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        _terminate(self.proc)
        self.proc = None

    def restart(self) -> FcgiBackend:
        self.stop()
        return self.start()


# ------------------------------------------------------------- web servers


class WebServer:
    """lighttpd or Apache in the foreground, from a rendered config."""

    def __init__(
        self,
        kind: str,
        config_text: str,
        run_dir: str | os.PathLike[str],
        port: int,
        host: str = "127.0.0.1",
    ) -> None:
        if kind not in SERVER_BINARIES:
            raise ValueError(f"unknown web server kind {kind!r}")
        self.kind = kind
        self.config_text = config_text
        self.run_dir = Path(run_dir)
        self.port = port
        self.host = host
        self.config_path = self.run_dir / f"{kind}.conf"
        self.output_path = self.run_dir / f"{kind}.out"
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    @property
    def error_log(self) -> Path:
        name = "lighttpd-error.log" if self.kind == "lighttpd" else "apache2-error.log"
        return self.run_dir / name

    def command(self) -> list[str]:
        binary = shutil.which(SERVER_BINARIES[self.kind]) or shutil.which(
            SERVER_BINARIES[self.kind], path="/usr/sbin:/usr/local/sbin:/sbin"
        )
        if not binary:
            raise RuntimeError(
                f"{SERVER_BINARIES[self.kind]} not found: install it "
                f"(apt-get install -y {'lighttpd' if self.kind == 'lighttpd' else 'apache2'})"
            )
        if self.kind == "lighttpd":
            return [binary, "-D", "-f", str(self.config_path)]
        return [binary, "-DFOREGROUND", "-f", str(self.config_path)]

    def check_syntax(self) -> None:
        """Run the server's own config test; RuntimeError with its output if it fails."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text)
        cmd = self.command()
        test_cmd = (
            [cmd[0], "-tt", "-f", str(self.config_path)]
            if self.kind == "lighttpd"
            else [cmd[0], "-t", "-f", str(self.config_path)]
        )
        res = subprocess.run(test_cmd, capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise RuntimeError(
                f"{self.kind} config test failed ({res.returncode}):\n{res.stdout}{res.stderr}"
            )

    def start(self) -> WebServer:
        if self.running:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text)
        cmd = self.command()
        t0 = time.monotonic()
        with open(self.output_path, "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(self.run_dir),
            )
        if not _wait_for_tcp(self.host, self.port, t0 + START_TIMEOUT, self.proc):
            code = self.proc.poll()
            self.stop()
            raise RuntimeError(
                f"{self.kind} did not start on {self.host}:{self.port} within "
                f"{START_TIMEOUT:.0f}s (exit code {code}); command {' '.join(cmd)}\n"
                + log_tail(self.output_path, self.error_log)
            )
        self.startup_seconds = time.monotonic() - t0
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        _terminate(self.proc)
        self.proc = None
        # the servers drop privileges and cannot always remove their pid file
        for name in ("lighttpd.pid", "apache2.pid"):
            try:
                (self.run_dir / name).unlink()
            except OSError:
                pass

    def logs(self) -> str:
        return log_tail(self.output_path, self.error_log)


# ------------------------------------------------------------------ client


def http_get(
    port: int, path: str, host: str = "127.0.0.1", method: str = "GET", timeout: float = 15.0
) -> tuple[int, dict[str, str], bytes]:
    """One request; returns ``(status, headers with lower-case names, body)``.

    ``path`` is sent exactly as given (already percent-encoded).
    """
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        headers: dict[str, str] = {}
        for name, value in resp.getheaders():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return resp.status, headers, body
    finally:
        conn.close()
