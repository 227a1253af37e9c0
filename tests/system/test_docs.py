"""The commands of README.md, docs/ and contrib/, run as written (tests/docs.py).

Each test takes a block's own text and runs it with bash or Python; only the
parts that name a machine (``/srv/huimages``, port 80 or 8080, a host name, a
bucket, a token) are replaced by a temporary directory, free ports and the
test's own servers. The servers a block starts (``a & b``) run in their own
process group and leave with it.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from huimages_wsgi import Config, ImageStore

from .. import imagefactory
from ..docs import (
    BIN,
    REPO,
    ShellServer,
    console_commands,
    doc_block,
    run_python,
    run_sh,
    shell_env,
    substituted,
)
from ..webservers import free_port, make_base_dir, remove_base_dir

TOKEN = "doc-test-token-" + "7" * 24


def fetch(url: str, timeout: float = 10.0) -> tuple[int, Any, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def eventually(check: Callable[[], object], server: ShellServer | None = None,
               timeout: float = 40.0) -> object:
    """``check()``'s first true answer (an exception counts as not yet)."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if server is not None and server.proc.poll() is not None:
            raise AssertionError(f"the block's servers exited:\n{server.output()[-3000:]}")
        try:
            result = check()
            if result:
                return result
        except (OSError, AssertionError) as exc:
            last = exc
        time.sleep(0.2)
    detail = server.output()[-3000:] if server else ""
    raise AssertionError(f"not within {timeout:.0f} s ({last!r})\n{detail}")


def write_photo(path: Path, seed: int = 1) -> Path:
    path.write_bytes(imagefactory.photo_jpeg(640, 480, seed=seed))
    return path


@pytest.fixture
def base() -> Iterator[Path]:
    """A 0755 directory outside pytest's 0700 tree: webservers started as root run as
    www-data and must reach the cache and the socket."""
    path = make_base_dir("huimages-docs-")
    yield path
    remove_base_dir(path)


@pytest.fixture
def served(base: Path) -> Iterator[tuple[str, Path]]:
    """``huimages serve`` with an upload token, for the API pages' blocks: (URL, cwd)."""
    port = free_port()
    env = shell_env(HUIMAGES_DATA_DIR=str(base / "data"), HUIMAGES_UPLOAD_TOKEN=TOKEN)
    server = ShellServer(f"huimages serve --port {port}", base, env)
    url = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: fetch(url + "/")[0], server)
        write_photo(base / "bike.jpg")
        yield url, base
    finally:
        server.stop()


# -- README.md ------------------------------------------------------------------------


def test_readme_quick_start_then_first_steps(base: Path):
    """``make serve`` (PORT is the Makefile's ``?=`` variable), then the first commands."""
    serve, test = doc_block("quick-start").splitlines()
    assert serve.startswith("make serve ") and test.startswith("make test ")
    assert "make test" in (REPO / ".ci" / "run").read_text().splitlines()  # what CI runs
    port = free_port()
    env = shell_env(PORT=str(port), HUIMAGES_DATA_DIR=str(base / "data"))
    server = ShellServer(serve, REPO, env, log_dir=base)  # make runs in the repository
    try:
        eventually(lambda: fetch(f"http://127.0.0.1:{port}/")[0], server, timeout=120)
        photo = write_photo(base / "photo.jpg")
        steps = substituted(doc_block("first-steps"), {
            ".venv/bin/huimages": str(BIN / "huimages"), "photo.jpg": str(photo),
            "http://127.0.0.1:8080": f"http://127.0.0.1:{port}"})
        put, rest = steps.split("\n", 1)
        imageid = run_sh(put, base, env).stdout.strip()
        out = run_sh(rest.replace("<ID>", imageid), base, env).stdout
        assert out.strip().endswith(f"/240x160/{imageid}/red-bike.jpeg")
        assert (base / "thumb.jpeg").read_bytes()[:3] == b"\xff\xd8\xff"
    finally:
        server.stop()


def test_readme_test_tiers_are_the_makefile_s():
    fast, everything = (line.split("#")[0].strip() for line in
                        doc_block("test-tiers").splitlines())
    makefile = (REPO / "Makefile").read_text()
    assert fast == "make test-fast" and "pytest -q -m fast" in makefile.split("test-fast:")[1]
    assert everything == "make test" and "make test" in (REPO / ".ci" / "run").read_text()


def test_readme_client_api(base: Path):
    write_photo(base / "bike.jpg")
    env = shell_env(HUIMAGES_DATA_DIR=str(base / "data"))
    out = run_python(doc_block("client-api"), base, env, epilogue=(
        'print(huimages.imageurl(imageid)); print(huimages.scaled_tag(imageid, "square"));'
        ' print(huimages.find_images(sku="14600") == [imageid])'))
    url, tag, found = out.splitlines()
    assert found == "True"
    assert re.fullmatch(r"http://127\.0\.0\.1:8080/o/[A-Z2-7]{32}01\.jpeg", url)
    assert 'width="75" height="75"' in tag and 'alt="Red bike"' in tag


def test_readme_explicit_store(base: Path):
    code = substituted(doc_block("explicit-store"), {"/srv/images": str(base / "images")})
    write_photo(base / "bike.jpg")
    out = run_python(code, base, shell_env(), epilogue=(
        "imageid = store.save_image(open('bike.jpg', 'rb').read());"
        " print(store.scaled_imageurl(imageid, '75x75!'))"))
    assert out.startswith("https://img.example.com/75x75!/")
    assert (base / "images" / "originals").is_dir()


def test_readme_mount_in_flask(base: Path):
    write_photo(base / "bike.jpg")
    env = shell_env(HUIMAGES_DATA_DIR=str(base / "data"))
    out = run_python(doc_block("mount-flask"), base, env, epilogue="\n".join((
        "store = app.wsgi_app.store",
        "imageid = store.save_image(open('bike.jpg', 'rb').read())",
        "client = app.test_client()",
        "print(client.get(f'/img/75x75!/{imageid}.jpeg').status_code)",
        "print(client.get('/elsewhere').status_code)",
        "print(store.scaled_imageurl(imageid, '75x75!'))",
    )))
    image, elsewhere, url = out.splitlines()
    assert (image, elsewhere) == ("200", "404")  # the image, and Flask's own 404
    assert url.startswith("https://www.example.com/img/75x75!/")


def _backend_replacements(s3_server, couch_server) -> dict[str, str]:
    return {"my-originals": s3_server.create_bucket("docs"),
            "http://127.0.0.1:8333": s3_server.endpoint_url,
            "http://user:pass@couch:5984/": couch_server.url}


def test_readme_backends(base: Path, s3_server, couch_server):
    script = substituted(doc_block("backends-env"), _backend_replacements(s3_server, couch_server))
    photo = write_photo(base / "photo.jpg", seed=5)
    env = shell_env(HUIMAGES_DATA_DIR=str(base / "data"),
                    HUIMAGES_COUCHDB_NAME=f"docs-{secrets.token_hex(4)}",
                    **{k: v for k, v in s3_server.env.items() if k != "AWS_ENDPOINT_URL"})
    out = run_sh(f"{script}\nhuimages put {photo}\nhuimages info $(huimages put {photo})",
                 base, env).stdout
    doc = json.loads(out.split("\n", 1)[1])
    assert doc["width"] == 640 and doc["contenttype"] == "image/jpeg"
    assert not (base / "data" / "originals").exists()  # in S3, not on disk


def test_docs_backends_s3_and_couch(base: Path, s3_server, couch_server):
    port = free_port()
    replacements = _backend_replacements(s3_server, couch_server)
    replacements["AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=..."] = (
        f"AWS_ACCESS_KEY_ID={s3_server.access_key} AWS_SECRET_ACCESS_KEY={s3_server.secret_key}")
    replacements["huimages serve"] = f"huimages serve --port {port}"
    script = substituted(doc_block("backends-s3-couch"), replacements)
    write_photo(base / "photo.jpg", seed=6)
    env = shell_env(HUIMAGES_DATA_DIR=str(base / "data"),
                    HUIMAGES_COUCHDB_NAME=f"docs-{secrets.token_hex(4)}",
                    AWS_DEFAULT_REGION=s3_server.region)
    server = ShellServer(script, base, env)
    try:
        imageid = eventually(lambda: re.search(r"^[A-Z2-7]{32}01$", server.output(), re.M),
                             server).group(0)
        status, headers, _ = eventually(
            lambda: fetch(f"http://127.0.0.1:{port}/75x75!/{imageid}.jpeg"), server)
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
    finally:
        server.stop()


# -- the webserver recipes (README.md, docs/deployment.md, contrib/) --------------------

RECIPES = {
    "readme-nginx": "nginx",
    "deploy-nginx-proxy": "nginx",
    "deploy-nginx-fcgi": "nginx",
    "deploy-lighttpd": "lighttpd",
    "deploy-apache": "apache",
    "contrib-nginx-proxy": "nginx",
    "contrib-nginx-fcgi": "nginx",
    "contrib-lighttpd": "lighttpd",
    "contrib-apache": "apache",
}


@pytest.mark.webserver
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_webserver_recipe(name: str, base: Path):
    """Render, start both, then a miss through the webserver and the file in the cache."""
    text = doc_block(name)
    web, app = free_port(), free_port()
    replacements = {"/srv/huimages": str(base)}
    for listen in ("--port 80 ", "--port 8080 "):
        if listen in text:
            replacements[listen] = f"--port {web} "
    if "8081" in text:
        replacements["8081"] = str(app)
    script = substituted(text, replacements)
    # the data dir: HUIMAGES_DATA_DIR where the recipe sets it, else ./huimages-data
    data = base if "HUIMAGES_DATA_DIR=" in text or name == "contrib-nginx-fcgi" else (
        base / "huimages-data")
    env = shell_env(HUIMAGES_DATA_DIR=str(data)) if name == "contrib-nginx-fcgi" else shell_env()
    photo = write_photo(base / "photo.jpg", seed=7)
    put_env = {**env, "HUIMAGES_DATA_DIR": str(data)}
    imageid = run_sh(f"huimages put {photo}", base, put_env).stdout.strip()
    server = ShellServer(script, base, env)
    try:
        url = f"http://127.0.0.1:{web}/120x90/{imageid}/a-name.jpeg"
        status, headers, body = eventually(lambda: (lambda a: a if a[0] == 200 else None)(
            fetch(url)), server)
        assert headers["Content-Type"] == "image/jpeg" and body[:3] == b"\xff\xd8\xff"
        cache = base / "cache" if "--cache-dir" in text else data / "cache"
        assert (cache / "120x90" / f"{imageid}.jpeg").is_file()
        assert fetch(url)[0] == 200  # a hit, from the webserver
    finally:
        server.stop()


def test_deployment_gunicorn_runs_the_worker_and_the_follower(base: Path):
    port = free_port()
    script = substituted(doc_block("deploy-gunicorn"), {
        "/srv/huimages": str(base), "127.0.0.1:8080": f"127.0.0.1:{port}"})
    photo = write_photo(base / "photo.jpg", seed=8)
    imageid = run_sh(f"huimages put {photo}", base,
                     shell_env(HUIMAGES_DATA_DIR=str(base))).stdout.strip()
    server = ShellServer(script, base, shell_env())
    try:
        def follower_ok() -> bool:
            status, _, body = fetch(f"http://127.0.0.1:{port}/_health")
            return status == 200 and json.loads(body)["checks"]["follower"]["ok"]

        eventually(follower_ok, server)
        assert fetch(f"http://127.0.0.1:{port}/75x75!/{imageid}.jpeg")[0] == 200
        assert "Using worker: gthread" in server.output()
    finally:
        server.stop()


def test_deployment_flask_and_dispatcher(base: Path):
    code = substituted(doc_block("deploy-flask"), {"/srv/huimages": str(base)})
    write_photo(base / "bike.jpg")
    out = run_python(code, base, shell_env(), epilogue="\n".join((
        "imageid = ImageStore(config).save_image(open('bike.jpg', 'rb').read())",
        "client = app.test_client()",
        "print(client.get(f'/img/75x75!/{imageid}.jpeg').status_code)",
        "print(client.get('/img/_health').status_code)",
    )))
    assert out.split() == ["200", "200"]  # the dispatcher mounts make_app, /_health too


# -- docs/api.md ------------------------------------------------------------------------


def _api_script(name: str, url: str) -> str:
    return substituted(doc_block(name), {"http://127.0.0.1:8080": url})


def test_api_upload_then_the_other_calls(served):
    url, cwd = served
    upload = substituted(_api_script("api-upload", url), {"$(openssl rand -hex 24)": TOKEN})
    uploaded = [json.loads(line) for line in run_sh(upload, cwd, shell_env()).stdout.split("\n")
                if line.startswith("{")]
    assert len(uploaded) == 2 and uploaded[0]["id"] == uploaded[1]["id"]  # the same bytes
    calls = substituted(_api_script("api-calls", url),
                        {"UMM7BZ5MT6BUVAHN5VL4SACUXLO7OSGS01": uploaded[0]["id"]})
    out = run_sh(f"{upload}\n{calls}", cwd, shell_env()).stdout
    assert '"Blue bike"' in out and '"deleted": true' in out and '"id"' in out
    assert f'{{"ids": ["{uploaded[0]["id"]}"]}}' in out  # found by reference and tag
    assert '{"tags": [["bikes", 1], ["red", 1]]}' in out
    assert '"focus": [0.3, 0.4]' in out


def test_api_client_over_http(served):
    url, cwd = served
    script = substituted(doc_block("api-client-over-http"), {
        "http://images.internal:8080": url,
        "HUIMAGES_UPLOAD_TOKEN=…": f"HUIMAGES_UPLOAD_TOKEN={TOKEN}"})
    imageid = run_sh(script, cwd, shell_env()).stdout.strip()
    assert re.fullmatch(r"[A-Z2-7]{32}01", imageid)
    assert fetch(f"{url}/_api/images/{imageid}")[0] == 401  # it is there, behind the token


def test_api_health(served):
    url, cwd = served
    (command,) = console_commands(_api_script("api-health", url))
    answer = json.loads(run_sh(command, cwd, shell_env()).stdout)
    assert answer["status"] in ("ok", "degraded") and "catalog" in answer["checks"]


def test_api_probes(served):
    url, cwd = served
    live, ready = console_commands(_api_script("api-probes", url))
    assert json.loads(run_sh(live, cwd, shell_env()).stdout)["status"] == "ok"
    assert eventually(lambda: run_sh(ready, cwd, shell_env()).stdout.strip() == "200")


# -- docs/migrating.md -------------------------------------------------------------------


def test_migrating_code_runs_as_huimages_code_did(base: Path):
    write_photo(base / "bike.jpg")
    env = shell_env(HUIMAGES_DATA_DIR=str(base / "data"))
    out = run_python(doc_block("migrating-code"), base, env, epilogue="\n".join((
        "print(huimages.update_metadata(imageid, None, 'x'))",
        "print(huimages.scaled_tag(imageid, 'vga', 'border=\"0\"', alt='Red bike'))",
        "print(huimages.get_next_imageid(imageid))",
        "print(huimages.get_imagedoc('AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA01'))",
    )))
    imageid, tag, following, nothing = out.splitlines()
    assert re.fullmatch(r"[A-Z2-7]{32}01", imageid) and following == imageid  # the only one
    assert tag.startswith(f'<img src="https://i.example.com/640x480/{imageid}/red-bike.jpeg"')
    assert ' border="0" ' in tag and nothing == "{}"


# -- docs/operations.md ------------------------------------------------------------------


def test_operations_metrics_and_prune(served):
    url, cwd = served
    write_photo(cwd / "p.jpg")
    env = shell_env(HUIMAGES_DATA_DIR=str(cwd / "data"))
    imageid = run_sh("huimages put p.jpg", cwd, env).stdout.strip()
    for _ in range(2):
        assert fetch(f"{url}/100x100/{imageid}.jpeg")[0] == 200  # a miss, then a hit
    (command,) = console_commands(_api_script("operations-metrics", url))
    out = eventually(lambda: run_sh(command, cwd, env).stdout)
    assert 'huimages_http_request_duration_seconds_count{route="hit",status="2xx"} 1.0' in out
    assert 'huimages_http_request_duration_seconds_count{route="miss",status="2xx"} 1.0' in out
    prune, scrape = console_commands(_api_script("operations-prune", url))
    assert run_sh(prune, cwd, env).stdout.startswith("scanned 1 files")
    assert run_sh(scrape, cwd, env).stdout.strip() == "huimages_cache_files 1.0"


def test_operations_promtool_checks_contrib():
    out = run_sh(doc_block("operations-promtool"), REPO, shell_env()).stdout
    assert out.count("SUCCESS") >= 3  # the configuration, its rule file, the rules


# -- docs/cluster.md, docs/configuration.md, docs/formats.md ------------------------------


def test_cluster_follower_metrics(served):
    url, cwd = served
    (command,) = console_commands(substituted(doc_block("cluster-metrics"), {
        "http://node-1:8080": url}))

    def reported() -> str | None:  # the follower starts beside the server: its first beat
        out = run_sh(command, cwd, shell_env()).stdout
        return out if "huimages_follower_stuck 0" in out else None

    out = eventually(reported)
    assert "huimages_follower_last_seq" in out


def test_cluster_shards_make_every_preview_once(base: Path):
    store = ImageStore(Config(data_dir=base / "data"))
    ids = [store.save_image(imagefactory.photo_jpeg(1600, 1200, seed=s)) for s in range(6)]
    for imageid in ids:  # as if uploaded before previews existed
        store.catalog.update(imageid, lambda doc: doc.pop("previews", None))
    out = run_sh(doc_block("cluster-shards"), base,
                 shell_env(HUIMAGES_DATA_DIR=str(base / "data"))).stdout
    made = sum(int(m) for m in re.findall(r"(\d+) made", out))
    assert made == len(ids), out
    assert all(store.catalog.get(imageid).get("previews") for imageid in ids)


def test_configuration_in_python(base: Path):
    code = substituted(doc_block("config-python"), {
        "/srv/images": str(base / "images"), "/var/cache/huimages": str(base / "cache")})
    out = run_python(code, base, shell_env(), epilogue=(
        "print(store.config.secret, config.cache_root)"))
    assert out.split() == ["a-long-random-secret", str(base / "cache")]


def test_formats_scaled_tag(base: Path):
    write_photo(base / "bike.jpg")
    block = doc_block("formats-scaled-tag")
    out = run_python("tag = " + block, base, shell_env(), prelude="\n".join((
        "from huimages_wsgi import Config, ImageStore",
        f"store = ImageStore(Config(data_dir={str(base / 'data')!r},"
        " server_url='http://img.example.com/'))",
        "imageid = store.save_image(open('bike.jpg', 'rb').read(), title='Red bike')",
    )), epilogue="print(tag)")
    assert out.startswith('<picture><source type="image/avif" srcset="http://img.example.com/')
    assert 'loading="lazy" alt="Red bike" /></picture>' in out
