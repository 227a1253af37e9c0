"""Start/stop real lighttpd / Apache / nginx front ends and the app behind them for tests.

Everything binds to 127.0.0.1 on free ports and runs in the foreground as a
child process of the test run.  Nothing here skips: a missing binary or a
server that does not come up raises ``RuntimeError`` with the tail of its
logs, so CI fails loudly.

Typical use (see tests/unit/test_webconfig.py)::

    base = make_base_dir()                       # 0755, under /tmp
    backend = FcgiBackend(socket_path=..., env={"HUIMAGES_DATA_DIR": ...})
    backend.start()                              # `huimages fcgi --socket ...`
    # or HttpBackend(port=..., env=...)          # `huimages serve` (gunicorn), nginx only
    server = WebServer("lighttpd", config_text, run_dir, port)   # `huimages config ...`
    server.start()
    status, headers, body = http_get(server.port, "/75x75/ID.jpeg")
    backend.stop(); backend.start()              # restartable
    server.stop(); backend.stop()
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

from .services import refuse_in_fast_tier

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent

SERVER_BINARIES = {"lighttpd": "lighttpd", "apache": "apache2", "nginx": "nginx"}
PACKAGES = {"lighttpd": "lighttpd", "apache": "apache2", "nginx": "nginx"}
ERROR_LOGS = {
    "lighttpd": "lighttpd-error.log",
    "apache": "apache2-error.log",
    "nginx": "nginx-error.log",
}
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


class _Process:
    """A server process this module started: whether it runs, and stopping it."""

    proc: subprocess.Popen | None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        _terminate(self.proc)
        self.proc = None


# ----------------------------------------------------------------- backend

HUIMAGES = Path(sys.executable).parent / "huimages"


class _Backend(_Process):
    """What both app backends share: the process, its start-up check, stop and restart."""

    env: dict[str, str]
    log_path: Path
    startup_seconds: float | None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> _Backend:
        raise NotImplementedError

    def _spawn(self) -> float:
        """Start ``command()`` with ``env`` over the test's environment, logging to
        ``log_path``, from the repository root, umask 022; returns its start time."""
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(REPO_ROOT),
                umask=0o022,
            )
        return t0

    def _came_up(self, ok: bool, t0: float) -> _Backend:
        """``self`` when the backend answered; else stopped and a RuntimeError with its log."""
        if not ok:
            self.stop()
            raise RuntimeError(
                f"{' '.join(self.command())} did not come up within "
                f"{START_TIMEOUT:.0f}s\n{log_tail(self.log_path)}"
            )
        self.startup_seconds = time.monotonic() - t0
        return self

    def restart(self) -> _Backend:
        self.stop()
        return self.start()


class FcgiBackend(_Backend):
    """``huimages fcgi`` (the real app under flup) in a restartable subprocess.

    Its configuration comes from ``env`` (``HUIMAGES_DATA_DIR``,
    ``HUIMAGES_CACHE_DIR``, ``HUIMAGES_SECRET`` ...), exactly as in production.
    The umask is pinned to 022 so the cache directories it creates are
    traversable by a web server running as another user (www-data).
    """

    def __init__(
        self,
        *,
        socket_path: str | os.PathLike[str] | None = None,
        bind: tuple[str, int] | None = None,
        forking: bool = False,
        env: dict[str, str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if (socket_path is None) == (bind is None):
            raise ValueError("FcgiBackend needs exactly one of socket_path or bind")
        self.socket_path = os.fspath(socket_path) if socket_path is not None else None
        self.bind = bind
        self.forking = forking
        self.env = dict(env or {})
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
        """Value for ``huimages config --fcgi-socket``."""
        return self.socket_path

    @property
    def fcgi_bind(self) -> str | None:
        """Value for ``huimages config --fcgi-bind``."""
        return f"{self.bind[0]}:{self.bind[1]}" if self.bind else None

    def config_args(self) -> list[str]:
        """The backend options of ``huimages config`` for this backend."""
        if self.socket_path:
            return ["--fcgi-socket", self.socket_path]
        return ["--fcgi-bind", self.fcgi_bind]  # type: ignore[list-item]

    def command(self) -> list[str]:
        where = ["--socket", self.socket_path] if self.socket_path else ["--bind", self.fcgi_bind]
        return [str(HUIMAGES), "fcgi", *where] + (["--forking"] if self.forking else [])

    def start(self) -> _Backend:
        if self.running:
            return self
        t0 = self._spawn()
        deadline = t0 + START_TIMEOUT
        if self.socket_path:
            ok = _wait_for_unix(self.socket_path, deadline, self.proc)
        else:
            ok = _wait_for_tcp(self.bind[0], self.bind[1], deadline, self.proc)
        return self._came_up(ok, t0)


class HttpBackend(_Backend):
    """``huimages serve`` (the real app under gunicorn) in a restartable subprocess.

    The same interface as :class:`FcgiBackend`, for nginx's ``--proxy``
    configuration; it listens on 127.0.0.1 only.
    """

    def __init__(
        self,
        *,
        port: int,
        env: dict[str, str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        workers: int = 2,
    ) -> None:
        self.host, self.port, self.workers = "127.0.0.1", port, workers
        self.env = dict(env or {})
        self.log_path = Path(log_path or Path(tempfile.gettempdir()) / f"huimages-http-{port}.log")
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    @property
    def proxy_url(self) -> str:
        """Value for ``huimages config nginx --proxy``."""
        return f"http://{self.host}:{self.port}"

    def config_args(self) -> list[str]:
        return ["--proxy", self.proxy_url]

    def command(self) -> list[str]:
        return [str(HUIMAGES), "serve", "--host", self.host, "--port", str(self.port),
                "--workers", str(self.workers)]

    def start(self) -> _Backend:
        if self.running:
            return self
        t0 = self._spawn()
        return self._came_up(_wait_for_tcp(self.host, self.port, t0 + START_TIMEOUT, self.proc), t0)


# ------------------------------------------------------------- web servers


class WebServer(_Process):
    """lighttpd, Apache or nginx in the foreground, from a rendered config."""

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
        return self.run_dir / ERROR_LOGS[self.kind]

    def command(self) -> list[str]:
        binary = shutil.which(SERVER_BINARIES[self.kind]) or shutil.which(
            SERVER_BINARIES[self.kind], path="/usr/sbin:/usr/local/sbin:/sbin"
        )
        if not binary:
            raise RuntimeError(
                f"{SERVER_BINARIES[self.kind]} not found: install it "
                f"(apt-get install -y {PACKAGES[self.kind]}, or scripts/install-services)"
            )
        if self.kind == "lighttpd":
            return [binary, "-D", "-f", str(self.config_path)]
        if self.kind == "nginx":  # exactly what the rendered config's header says to run
            return [binary, "-c", str(self.config_path), "-g", "daemon off;"]
        return [binary, "-DFOREGROUND", "-f", str(self.config_path)]

    def check_syntax(self) -> None:
        """Run the server's own config test; RuntimeError with its output if it fails."""
        refuse_in_fast_tier(f"{self.kind} (its syntax check)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text)
        cmd = self.command()
        test_cmd = {
            "lighttpd": [cmd[0], "-tt", "-f", str(self.config_path)],
            "apache": [cmd[0], "-t", "-f", str(self.config_path)],
            "nginx": [cmd[0], "-t", "-c", str(self.config_path)],
        }[self.kind]
        res = subprocess.run(test_cmd, capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise RuntimeError(
                f"{self.kind} config test failed ({res.returncode}):\n{res.stdout}{res.stderr}"
            )

    def start(self) -> WebServer:
        if self.running:
            return self
        refuse_in_fast_tier(self.kind)
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

    def stop(self) -> None:
        super().stop()
        # the servers drop privileges and cannot always remove their pid file
        for name in ("lighttpd.pid", "apache2.pid", "nginx.pid"):
            try:
                (self.run_dir / name).unlink()
            except OSError:
                pass

    def logs(self) -> str:
        return log_tail(self.output_path, self.error_log)


# ------------------------------------------------------------------ client


def http_get(
    port: int,
    path: str,
    host: str = "127.0.0.1",
    method: str = "GET",
    timeout: float = 15.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request; returns ``(status, headers with lower-case names, body)``.

    ``path`` is sent exactly as given (already percent-encoded).
    """
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, headers={"Connection": "close", **(headers or {})})
        resp = conn.getresponse()
        body = resp.read()
        received: dict[str, str] = {}
        for name, value in resp.getheaders():
            key = name.lower()
            received[key] = f"{received[key]}, {value}" if key in received else value
        return resp.status, received, body
    finally:
        conn.close()
