"""``huimages serve --certfile --keyfile`` answers HTTPS, to a client that checks the
certificate, on the embedded default and on S3 + CouchDB; so does the documented
``gunicorn -c python:huimages_wsgi.deploy.gunicorn_conf`` command with gunicorn's own
``--certfile``/``--keyfile`` (stock gthread; the worker it replaced hung there)."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from .. import imagefactory as f
from ..conftest import BIN, LiveServer


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its PKCS#8 key (openssl's default)."""
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    return cert, key


class TlsServer(LiveServer):
    def __init__(self, data_dir: Path, cert: Path, key: Path, env: dict[str, str],
                 server: str = "huimages serve") -> None:
        super().__init__(data_dir, env)
        self.cert, self.key, self.server = cert, key, server
        self.context = ssl.create_default_context(cafile=str(cert))

    def command(self) -> list[str]:
        tls = ["--certfile", str(self.cert), "--keyfile", str(self.key)]
        if self.server == "gunicorn -c":
            return [str(BIN / "gunicorn"), "-c", "python:huimages_wsgi.deploy.gunicorn_conf",
                    "--bind", f"127.0.0.1:{self.port}", "--workers", "2", *tls,
                    "huimages_wsgi:make_app()"]
        return [str(BIN / "huimages"), "serve", "--port", str(self.port), "--workers", "2", *tls]

    def start(self, timeout: float = 30.0) -> TlsServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command(), env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(self.log.read_text()[-2000:])
            try:
                self.get("/_health")
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"no HTTPS answer: {self.log.read_text()[-2000:]}")

    def get(self, path: str) -> tuple[int, bytes, str]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10,
                                           context=self.context)
        try:
            conn.request("GET", path)
            answer = conn.getresponse()
            return answer.status, answer.read(), answer.getheader("Content-Type") or ""
        finally:
            conn.close()


@pytest.mark.parametrize(("server", "backend"), [
    ("huimages serve", "embedded"), ("huimages serve", "s3+couch"), ("gunicorn -c", "embedded")])
def test_the_documented_servers_answer_https(server, backend, any_config, certificate):
    from ..backends import backend_store

    store = backend_store(backend, any_config)
    imageid = store.save_image(f.photo_jpeg(640, 480, seed=31))
    env: dict[str, str] = {}
    any_config.export(env)
    server = TlsServer(any_config.data_dir, *certificate, env, server).start()
    try:
        deadline = time.monotonic() + 30  # ok once the follower has caught up
        while (answer := server.get("/_health"))[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert answer[0] == 200 and json.loads(answer[1])["status"] == "ok", answer
        status, body, content_type = server.get(f"/240x160/{imageid}.jpeg")
        assert (status, content_type) == (200, "image/jpeg") and body[:3] == b"\xff\xd8\xff"
        with pytest.raises(ssl.SSLError):  # it is TLS, and only TLS, on that port
            plain = ssl.create_default_context()  # does not trust the self-signed one
            conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=5,
                                               context=plain)
            conn.request("GET", "/_health")
    finally:
        server.stop()
