"""Real backend servers for the test suite: a SeaweedFS S3 gateway and pouchdb-server.

huimages stores image bytes in S3 and metadata in CouchDB. Mocking either would hide the
protocol details that matter (signatures, metadata headers, revisions, attachments,
views), so the tests run the real thing on loopback ports instead:

* ``SeaweedS3``: ``weed server`` with master, volume, filer and S3 gateway in one process.
* ``PouchDBServer``: the CouchDB-compatible ``pouchdb-server`` from npm.

``scripts/install-services`` installs both. Each server keeps its ports and data
directory across ``restart()`` so fault-injection tests can stop a backend mid-test and
bring it back with its data intact. A server that does not come up raises
``RuntimeError`` with the tail of its log: the tests depending on it must fail, never skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Upper bound for a server to become ready. Both normally start in 1-3 s; the margin is
#: for loaded CI machines, and still well below anything that would look like a hang.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

# AF_UNIX socket paths are limited to 108 bytes on Linux.
_MAX_UNIX_SOCKET_PATH = 100


#: Set by ``make test-fast`` (``pytest -m fast``): no test in that tier may start a server.
FAST_TIER_ENV = "HUIMAGES_TEST_FAST_TIER"


def refuse_in_fast_tier(what: str) -> None:
    """Fail loudly when a test of the quick tier starts a server it was not marked for."""
    if os.environ.get(FAST_TIER_ENV):
        raise RuntimeError(
            f"this test starts a {what} but carries no service marker: the quick tier"
            " (make test-fast) runs no servers; mark it (see tests/conftest.py)"
        )


def find_executable(relative: str, name: str) -> str:
    """Return the repo-local install of ``name`` (``REPO_ROOT/relative``), else the PATH one.

    The repo-local copy is preferred because that is the version install-services pins.
    """
    local = REPO_ROOT / relative
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(
        f"{name} not found at {local} nor on PATH; run `bash scripts/install-services`"
    )


def reserve_ports(count: int) -> list[int]:
    """Return ``count`` distinct free TCP ports on 127.0.0.1.

    All sockets are held open until every port is chosen, so the ports differ from each
    other; there is still a small window before the server binds them, which
    ``ManagedServer.start`` covers by retrying with fresh ports.
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


class ManagedServer:
    """A server process with a private directory, fixed ports and readiness probing.

    Subclasses provide the port names, the command line and the readiness probe.
    """

    #: Short name used for the working directory and in error messages.
    name = "server"
    #: Names of the ports the server needs; all are chosen on the first start.
    port_names: tuple[str, ...] = ("http",)
    #: How many times a first start retries with fresh ports after a bind race.
    port_retries = 3
    #: Seconds ``stop()`` waits after SIGTERM before it sends SIGKILL.
    stop_timeout = STOP_TIMEOUT

    def __init__(self, base_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(base_dir) / self.name
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / f"{self.name}.log"
        self.ports: dict[str, int] = {}
        #: Seconds the last successful ``start()`` took until the server was ready.
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._ports_proven = False  # True once a start succeeded on self.ports

    # -- to be provided by subclasses ---------------------------------------------------
    def command(self) -> list[str]:
        """Return the argv that starts the server on ``self.ports``."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Write config files into ``self.dir`` before each start."""

    def probe(self) -> bool:
        """Return True once the server answers real requests."""
        raise NotImplementedError

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server and block until it is ready, or raise RuntimeError.

        The first start picks free ports; later starts (``restart()``) reuse them so that
        clients configured with ``url`` keep working and data in ``data_dir`` persists.
        """
        if self.running:
            return
        refuse_in_fast_tier(f"{self.name} server")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._ports_proven else self.port_retries
        for attempt in range(1, attempts + 1):
            if not self._ports_proven:
                self.ports = dict(
                    zip(self.port_names, reserve_ports(len(self.port_names)), strict=True)
                )
            error = self._start_once(timeout)
            if error is None:
                self._ports_proven = True
                return
            if attempt < attempts and self._lost_port_race():
                continue
            raise RuntimeError(f"{self.name} did not start: {error}\n{self.log_tail()}")

    def stop(self, timeout: float | None = None) -> None:
        """Stop the server: SIGTERM, wait up to ``timeout`` seconds, then SIGKILL.

        ``timeout`` defaults to ``stop_timeout``. The whole process group is signalled so
        no child is left holding ports or data.
        """
        if timeout is None:
            timeout = self.stop_timeout
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                self._signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self._signal_group(proc, signal.SIGKILL)
                    proc.wait(timeout=timeout)
            else:
                # The leader may be gone while a child lives on.
                self._signal_group(proc, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """Stop the server abruptly with SIGKILL, as a crash would."""
        if self._proc is not None and self._proc.poll() is None:
            self._signal_group(self._proc, signal.SIGKILL)
            self._proc.wait(timeout=STOP_TIMEOUT)
        self.stop()

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop and start again on the same ports with the same data directory."""
        self.stop()
        self.start(timeout=timeout)

    def __enter__(self) -> ManagedServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        """Return the last ``lines`` lines of the server log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log at {self.log_path}: {exc})"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last {lines} lines of {self.log_path} ---\n{tail}"

    # -- internals ----------------------------------------------------------------------
    def _start_once(self, timeout: float) -> str | None:
        """Launch once and wait for readiness; return an error description or None."""
        self.prepare()
        self._log = open(self.log_path, "ab")  # closed in stop()
        self._log.write(f"=== {time.strftime('%H:%M:%S')} starting {self.name}\n".encode())
        self._log.flush()
        started = time.monotonic()
        self._proc = subprocess.Popen(
            self.command(),
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, see stop()
        )
        deadline = started + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self.stop()
                return f"process exited with status {code} before becoming ready"
            try:
                if self.probe():
                    self.startup_seconds = time.monotonic() - started
                    return None
            except Exception:  # any failure just means "not ready yet"
                pass
            if time.monotonic() > deadline:
                self.stop()
                return f"not ready after {timeout:.0f} s"
            time.sleep(0.1)

    def _lost_port_race(self) -> bool:
        tail = self.log_tail(200)
        return "address already in use" in tail or "EADDRINUSE" in tail

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


class SeaweedS3(ManagedServer):
    """SeaweedFS (``weed server -s3``) as an S3 endpoint with access-key authentication.

    Every port is chosen explicitly, including the gRPC ones that weed would otherwise
    derive as port+10000, and the Iceberg/Lance catalog listeners are disabled: left to
    their defaults they collide with parallel test sessions.
    """

    name = "seaweedfs"
    port_names = (
        "master",
        "master_grpc",
        "volume",
        "volume_grpc",
        "filer",
        "filer_grpc",
        "s3",
        "s3_grpc",
    )
    access_key = "huimages-test"
    region = "us-east-1"
    #: weed's SIGTERM handling stops everything but then blocks in gRPC GracefulStop on
    #: its own internal streams, so it rarely exits by itself once S3 has been used.
    #: Acknowledged writes are already on disk (volume files, filer LevelDB journal) and
    #: survive the SIGKILL that follows; waiting longer only slows fault tests down.
    stop_timeout = 2.0

    def __init__(self, base_dir: str | os.PathLike[str]) -> None:
        super().__init__(base_dir)
        self.secret_key = secrets.token_hex(20)
        self.executable = find_executable(".venv/bin/weed", "weed")
        self._socket_dir = self.dir
        if len(str(self.dir / "filer.sock")) > _MAX_UNIX_SOCKET_PATH:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="weed-"))

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    url = endpoint_url

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 (and huimages) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, **config: Any) -> Any:
        """Return a boto3 S3 client for this server (no retries, short timeouts).

        ``config`` overrides botocore ``Config`` options.
        """
        import boto3
        from botocore.config import Config

        options: dict[str, Any] = {
            "connect_timeout": 2,
            "read_timeout": 10,
            "retries": {"max_attempts": 1, "mode": "standard"},
            "s3": {"addressing_style": "path"},
        }
        options.update(config)
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(**options),
        )

    def create_bucket(self, prefix: str = "huimages-test") -> str:
        """Create a new, empty bucket with a unique name and return the name."""
        name = f"{prefix}-{secrets.token_hex(4)}".lower()
        self.client().create_bucket(Bucket=name)
        return name

    def prepare(self) -> None:
        identities = {
            "identities": [
                {
                    "name": "huimages",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        (self.dir / "s3.json").write_text(json.dumps(identities, indent=2))
        # weed reads master.toml from its working directory. By default every new
        # bucket (a collection) grows 7 volumes, which exhausts the volume slots after
        # a handful of buckets; one volume per bucket is plenty for tests.
        (self.dir / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\n")
        self._remove_grpc_sockets()

    def command(self) -> list[str]:
        p = self.ports
        return [
            self.executable, "server",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-dir={self.data_dir}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            "-master.telemetry=false",  # would phone home
            # On restart the resumed raft state waits ~10 s (the default election
            # timeout) before the single master leads again; 1 s makes restarts ~3 s.
            "-master.electionTimeout=1s",
            "-master.volumeSizeLimitMB=64",  # small volumes: many buckets, little disk
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.max=0",  # volume slots from free disk space instead of a fixed 8
            "-volume.preStopSeconds=0",  # default 10 s delay on SIGTERM
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self._socket_dir / 'filer.sock'}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.localSocket={self._socket_dir / 's3.sock'}",
            f"-s3.config={self.dir / 's3.json'}",
        ]  # fmt: skip

    def stop(self, timeout: float | None = None) -> None:
        super().stop(timeout)
        self._remove_grpc_sockets()

    def _remove_grpc_sockets(self) -> None:
        # Besides TCP, each gRPC server listens on /tmp/seaweedfs-<role>-grpc-<port>.sock
        # (not configurable). A SIGKILLed weed leaves them behind; remove ours so /tmp
        # does not fill up and a later server on the same port starts clean.
        for role in ("master", "volume", "filer", "s3"):
            port = self.ports.get(f"{role}_grpc")
            if port is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"/tmp/seaweedfs-{role}-grpc-{port}.sock")

    def probe(self) -> bool:
        # The S3 gateway answers before the volume server has registered with the master;
        # a write in that window stalls for seconds ("Not enough data nodes found") and
        # reads of existing objects fail. Free volume slots in the master's topology mean
        # the data node, with all its volumes, has checked in.
        status_url = f"http://127.0.0.1:{self.ports['master']}/dir/status"
        with urllib.request.urlopen(status_url, timeout=2) as response:
            if not json.load(response)["Topology"].get("Free"):
                return False
        # A signed ListBuckets proves the gateway, the filer behind it and the
        # credentials all work.
        self.client(connect_timeout=1, read_timeout=2).list_buckets()
        return True


class PouchDBServer(ManagedServer):
    """pouchdb-server (LevelDB backend) as a CouchDB 1.x-compatible HTTP server.

    Data lives in ``data_dir`` (not in memory) so that it survives ``restart()``.
    """

    name = "pouchdb"

    def __init__(self, base_dir: str | os.PathLike[str]) -> None:
        super().__init__(base_dir)
        self.executable = find_executable(
            ".services/node_modules/.bin/pouchdb-server", "pouchdb-server"
        )

    @property
    def url(self) -> str:
        """Server URL with a trailing slash, as ``couchdb.Server`` expects."""
        return f"http://127.0.0.1:{self.ports['http']}/"

    endpoint_url = url

    def command(self) -> list[str]:
        return [
            self.executable,
            "--host", "127.0.0.1",
            "--port", str(self.ports["http"]),
            "--dir", str(self.data_dir),
            # /_config is persisted to this file; its default is ./config.json
            "--config", str(self.dir / "config.json"),
            # The log is written to log.txt in the working directory (self.dir); the
            # default also tails that file to stdout, which would log everything twice.
            "--no-stdout-logs", "--no-color",
        ]  # fmt: skip

    def probe(self) -> bool:
        with urllib.request.urlopen(self.url, timeout=2) as response:
            return "version" in json.load(response)


class PrometheusServer(ManagedServer):
    """Debian's Prometheus (scripts/install-services) with a configuration the test writes
    into ``dir/prometheus.yml`` before ``start()``; its TSDB lives in ``data_dir``."""

    name = "prometheus"

    def __init__(self, base_dir: str | os.PathLike[str]) -> None:
        super().__init__(base_dir)
        self.executable = find_executable(".services/bin/prometheus", "prometheus")  # apt

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    def command(self) -> list[str]:
        return [
            self.executable,
            f"--config.file={self.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address=127.0.0.1:{self.ports['http']}",
        ]

    def probe(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
            return response.status == 200

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result of an instant query (``/api/v1/query``); fails on an error."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def rules(self) -> list[dict[str, Any]]:
        """Every rule Prometheus loaded, with its health (``/api/v1/rules``)."""
        with urllib.request.urlopen(f"{self.url}/api/v1/rules", timeout=10) as response:
            groups = json.load(response)["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]


class VarnishServer(ManagedServer):
    """Debian's Varnish with vmod-xkey (scripts/install-services) running
    contrib/varnish/huimages.vcl as shipped, its backend set to ``backend_port``."""

    name = "varnish"
    stop_timeout = 10.0

    def __init__(self, base_dir: str | os.PathLike[str], backend_port: int,
                 port: int | None = None) -> None:
        """``port``: listen there (chosen beforehand, for HUIMAGES_PURGE); else any."""
        super().__init__(base_dir)
        self.executable = find_executable(".services/bin/varnishd", "varnishd")  # apt
        self.backend_port = backend_port
        if port is not None:
            self.ports, self._ports_proven = {"http": port}, True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    def prepare(self) -> None:
        vcl = (REPO_ROOT / "contrib" / "varnish" / "huimages.vcl").read_text()
        assert '.port = "8080";' in vcl, "the shipped VCL no longer names its backend port"
        (self.dir / "huimages.vcl").write_text(
            vcl.replace('.port = "8080";', f'.port = "{self.backend_port}";'))

    def command(self) -> list[str]:
        # -j none: no privilege separation, so a test run as root needs no varnish user
        # to reach the files; -F: in the foreground, in this process group
        return [self.executable, "-F", "-j", "none", "-n", str(self.data_dir / "work"),
                "-a", f"127.0.0.1:{self.ports['http']}", "-T", "127.0.0.1:0",
                "-f", str(self.dir / "huimages.vcl"), "-s", "malloc,64m"]

    def probe(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/_varnish_ready", timeout=2):
                return True
        except urllib.error.HTTPError:  # any answer: Varnish is up (the backend may not be)
            return True


__all__ = [
    "REPO_ROOT",
    "ManagedServer",
    "PouchDBServer",
    "PrometheusServer",
    "VarnishServer",
    "SeaweedS3",
    "find_executable",
    "reserve_ports",
]
