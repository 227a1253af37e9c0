"""Shared fixtures: a fresh store per test, and real servers started once."""

from __future__ import annotations

import os
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
from .services import ManagedServer, PouchDBServer, SeaweedS3

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


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
    """``huimages serve`` (gunicorn, 2 workers by default) in a subprocess on a free port."""

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
