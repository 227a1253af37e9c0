"""Shared fixtures: a fresh store per test, and real servers started once; the test tiers.

Tests live in three folders by kind: ``unit/`` (pure modules), ``app/`` (the
store and the WSGI app in process, over every backend combination) and
``system/`` (real processes: webservers, gunicorn, FastCGI, load, faults).
Orthogonal to the folders, each test is marked with what it needs, here, at
collection, from the fixtures and parameters it uses:

- ``services``: SeaweedFS or pouchdb-server (a backend combination other than
  ``embedded``, or one of the server fixtures);
- ``webserver``: a real lighttpd, Apache or nginx;
- ``browser``: headless Chromium;
- ``slow``, set by hand: a quality or memory measurement that takes seconds.

``make test-fast`` (``-m fast``) runs the tests of ``unit/`` and ``app/``
with none of these marks: no server, no browser, no subprocess fleet, the
edit loop (about 45 s). ``make test`` runs every test. A test of
the quick tier that starts a server anyway fails (``services.refuse_in_fast_tier``),
so a missing mark cannot hide.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from huimages_wsgi import Config, ImageMiddleware, ImageStore

from . import imagefactory
from .backends import BACKENDS, COUCH_BACKENDS, S3_BACKENDS, backend_config, backend_store
from .services import FAST_TIER_ENV, ManagedServer, PouchDBServer, SeaweedS3

REPO = Path(__file__).resolve().parent.parent
TIER_FOLDERS = ("unit", "app", "system")
NEEDS = ("services", "webserver", "browser", "slow")
_SERVICE_FIXTURES = frozenset({"s3_server", "couch_server", "own_s3", "own_couch", "s3_env"})
_SERVICE_PARAMS = S3_BACKENDS | COUCH_BACKENDS | _SERVICE_FIXTURES


def pytest_configure(config: pytest.Config) -> None:
    for folder in TIER_FOLDERS:
        config.addinivalue_line("markers", f"{folder}: a test in tests/{folder}/")
    config.addinivalue_line("markers", "services: needs SeaweedFS and/or pouchdb-server")
    config.addinivalue_line("markers", "webserver: needs a real lighttpd, Apache or nginx")
    config.addinivalue_line("markers", "browser: needs headless Chromium")
    config.addinivalue_line("markers", "slow: a measurement of several seconds (make test only)")
    config.addinivalue_line("markers", "fast: unit/ or app/, needing none of those (test-fast)")
    if (config.option.markexpr or "").strip() == "fast":  # make test-fast, exactly
        os.environ[FAST_TIER_ENV] = "1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder in TIER_FOLDERS:
            item.add_marker(folder)
        params = getattr(getattr(item, "callspec", None), "params", {})
        if _SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())) or any(
            isinstance(value, str) and value in _SERVICE_PARAMS for value in params.values()
        ):
            item.add_marker("services")
        if folder != "system" and not any(item.get_closest_marker(need) for need in NEEDS):
            item.add_marker("fast")
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _own_default_store() -> Iterator[None]:
    """The module-level API's default store and assigned settings (module_api.py) are
    the process's: what one test configures must not reach the next."""
    from huimages_wsgi.store import module_api

    saved = module_api._default, module_api._base, dict(module_api._overrides)
    yield
    module_api._default, module_api._base = saved[:2]
    module_api._overrides.clear()
    module_api._overrides.update(saved[2])


@pytest.fixture(autouse=True)
def _own_metrics_directory() -> Iterator[None]:
    """A server's main process sets PROMETHEUS_MULTIPROC_DIR for its workers
    (deploy/multiprocess.py); one run in this process (``main(["fcgi", ...])``)
    must not hand its directory to the servers later tests start."""
    before = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    yield
    if before is None:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = before


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish() -> None:
    """The servers' metrics directories in /dev/shm (deploy/multiprocess.py), once
    no server holds them: memory, not disk, so they are not left to pile up."""
    for directory in Path("/dev/shm").glob("huimages-metrics-*"):
        lock = directory / ".lock"
        try:
            with open(lock, "a") as held:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(directory)
        except OSError:
            continue


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(data_dir=tmp_path / "data", server_url="http://img.example.test/")


@pytest.fixture
def store(config: Config) -> ImageStore:
    return ImageStore(config)


@pytest.fixture
def app(store: ImageStore) -> ImageMiddleware:
    return ImageMiddleware(prefix="", store=store)


# -- real backend servers: started once per session; a failure to start is an error ------
@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


def _running(server: ManagedServer) -> Iterator[ManagedServer]:
    """Start ``server`` for a fixture's lifetime; a failure to start is the test's error."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server(services_dir: Path) -> Iterator[SeaweedS3]:
    yield from _running(SeaweedS3(services_dir))


@pytest.fixture(scope="session")
def couch_server(services_dir: Path) -> Iterator[PouchDBServer]:
    yield from _running(PouchDBServer(services_dir))


# Servers a test module may stop, kill or freeze: its own pair, never the shared ones.
@pytest.fixture(scope="module")
def own_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    yield from _running(SeaweedS3(tmp_path_factory.mktemp("own-s3")))


@pytest.fixture(scope="module")
def own_couch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PouchDBServer]:
    yield from _running(PouchDBServer(tmp_path_factory.mktemp("own-couch")))


@pytest.fixture
def s3_env(s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point boto3 at the test S3 server the standard way: AWS_* variables."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server.env


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def any_config(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Config:
    """A fresh configuration on each backend combination (real servers where needed)."""
    s3 = couch = None
    if backend in S3_BACKENDS:
        request.getfixturevalue("s3_env")
        s3 = request.getfixturevalue("s3_server")
    if backend in COUCH_BACKENDS:
        couch = request.getfixturevalue("couch_server")
    return backend_config(backend, tmp_path / "data", s3, couch)


@pytest.fixture
def any_store(backend: str, any_config: Config) -> ImageStore:
    return backend_store(backend, any_config)


@pytest.fixture(scope="session")
def photo_8mp() -> bytes:
    return imagefactory.photo_jpeg(3500, 2400, seed=7)


class LiveServer:
    """``huimages serve`` (granian, 2 workers by default) in a subprocess on a free port."""

    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, workers: int = 2
    ) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "HUIMAGES_DATA_DIR": str(data_dir),
            "IMAGESERVERURL": self.url + "/",
            **(env or {}),
        }
        self.log = data_dir.parent / f"server-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> LiveServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "huimages"), "serve", "--port", str(self.port),
                 "--workers", str(self.workers)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"huimages serve exited: {self.log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(self.url + "/", timeout=1)
            except urllib.error.HTTPError:
                return self  # any HTTP answer means it is serving
            except OSError:
                time.sleep(0.1)
            else:
                return self
        raise RuntimeError(f"huimages serve did not answer: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def cli(self, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "huimages"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            **kwargs,
        )


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("live") / "data").start()
    yield server
    server.stop()
