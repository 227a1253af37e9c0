"""prometheus_client's multiprocess mode as the servers set it up (deploy/multiprocess.py)
and the workers use it (web/metrics.py), in real processes: the mode is chosen when
prometheus_client is first imported, so each case runs in a fresh interpreter."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

from huimages_wsgi import Config
from huimages_wsgi.deploy import multiprocess
from huimages_wsgi.deploy.multiprocess import SHARED_MEMORY, VARIABLE, default_directory, prepare


def run(code: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_prepare_empties_only_prometheus_files_once_and_keeps_an_operators_choice(tmp_path):
    config = Config(data_dir=tmp_path / "data")
    mine = tmp_path / "counted"
    mine.mkdir()
    theirs = ["catalog.sqlite3", "cache.prom", "notes.db", "counter_x.db", "gauge_1.db"]
    for name in [*theirs, "counter_123.db", "histogram_9.db", "gauge_livesum_77.db"]:
        (mine / name).write_text("x")
    environ = {VARIABLE: str(mine)}
    assert prepare(config, environ) == mine and environ[VARIABLE] == str(mine)
    assert sorted(path.name for path in mine.iterdir()) == sorted([*theirs, ".lock"])

    (mine / "counter_5.db").write_text("a live server's")  # it holds the lock: kept
    assert prepare(config, {VARIABLE: str(mine)}) == mine
    assert (mine / "counter_5.db").exists()

    environ = {}
    assert prepare(Config(data_dir=tmp_path / "off", metrics=False), environ) is None
    assert environ == {} and not (tmp_path / "off").exists()


def test_the_default_directory_is_this_users_alone_in_shared_memory(tmp_path, monkeypatch):
    config = Config(data_dir=tmp_path / "data")
    directory = default_directory(config)
    assert directory.parent == SHARED_MEMORY and directory == default_directory(config)
    found = directory.stat()
    assert found.st_uid == os.getuid() and stat.S_IMODE(found.st_mode) == 0o700
    assert default_directory(Config(data_dir=tmp_path / "other")) != directory
    try:
        directory.chmod(0o777)  # as if another user had made it for us: not used
        assert default_directory(config) == tmp_path / "data" / "metrics"
    finally:
        directory.rmdir()
    monkeypatch.setattr(multiprocess, "SHARED_MEMORY", tmp_path / "no-shm")
    assert default_directory(config) == tmp_path / "data" / "metrics"


def test_the_command_and_the_servers_load_prometheus_client_only_after_prepare():
    """Imported before the variable is set, prometheus_client would count per process."""
    out = run("""
        import sys
        import huimages_wsgi, huimages_wsgi.cli.main, huimages_wsgi.deploy.server
        import huimages_wsgi.deploy.fcgi, huimages_wsgi.deploy.multiprocess
        print("prometheus_client" in sys.modules)
    """, dict(os.environ))
    assert out.strip() == "False"


def test_workers_add_up_and_a_dead_workers_gauges_leave_the_sums(tmp_path):
    directory = tmp_path / "metrics"
    directory.mkdir()
    env = {**os.environ, VARIABLE: str(directory)}
    worker = """
        import os
        from huimages_wsgi import Config
        from huimages_wsgi.web.metrics import Metrics
        metrics = Metrics(Config(data_dir={data!r}))
        metrics.request("hit", 200, 0.001, 100)
        metrics.admission("queued", 1)  # dies with a miss queued: no one takes it out
        os._exit(0)
    """.format(data=str(tmp_path / "data"))
    for _ in range(2):
        run(worker, env)
    # the second worker, starting, took the first's gauges out; its own are left
    assert len(list(directory.glob("gauge_livesum_*.db"))) == 1
    scrape = run("""
        from huimages_wsgi import Config
        from huimages_wsgi.web.metrics import Metrics
        metrics = Metrics(Config(data_dir={data!r}))
        metrics.admission("queued", 1)
        print(metrics.exposition()[0].decode())
    """.format(data=str(tmp_path / "data")), env)
    assert 'huimages_http_request_duration_seconds_count{route="hit",status="2xx"} 2.0' in scrape
    assert 'huimages_http_response_bytes_total{route="hit"} 200.0' in scrape
    assert "huimages_render_queue_depth 1.0" in scrape  # the live one's alone
    assert len(list(directory.glob("gauge_livesum_*.db"))) == 1  # the dead ones' went
