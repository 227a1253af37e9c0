"""``huimages fcgi`` and ``huimages config``: the command-line fronts of the deployment.

Serving real requests through lighttpd and Apache is tests/system/test_deployment.py;
here: arguments, the socket's permissions and clean shutdown of a real
``huimages fcgi`` process, and the rendered config's defaults.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from huimages_wsgi import Config
from huimages_wsgi.cli.main import build_parser, main
from huimages_wsgi.deploy.multiprocess import default_directory

from ..processes import environment_of, process_tree
from ..webservers import HUIMAGES, make_base_dir, remove_base_dir


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("HUIMAGES_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("HUIMAGES_CACHE_DIR", raising=False)
    return tmp_path


@pytest.mark.parametrize("command", ["fcgi", "config"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert f"huimages {command}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["fcgi"],
        ["fcgi", "--socket", "/tmp/a.sock", "--bind", "127.0.0.1:9000"],
        ["fcgi", "--socket", "/tmp/a.sock", "--umask", "999"],
        ["fcgi", "--socket", "/tmp/a.sock", "--max-workers", "0"],
        ["config", "iis", "--port", "80", "--fcgi-bind", "127.0.0.1:9000"],
        ["config", "lighttpd", "--port", "80"],
    ],
)
def test_usage_errors(argv, env, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage: huimages" in capsys.readouterr().err


def test_fcgi_bad_bind_is_a_clear_error(env, capsys):
    assert main(["fcgi", "--bind", "localhost"]) == 1
    assert "HOST:PORT" in capsys.readouterr().err


def test_config_uses_the_configured_cache_dir(env, capsys):
    assert main(["config", "lighttpd", "--port", "8081", "--fcgi-socket", "/run/h.sock"]) == 0
    out = capsys.readouterr().out
    assert f'server.document-root = "{env}/data/cache"' in out
    assert f'server.pid-file      = "{env}/data/run/lighttpd.pid"' in out
    assert '"socket" => "/run/h.sock"' in out

    assert main(["--cache-dir", str(env / "c"), "config", "apache", "--port", "8081",
                 "--fcgi-bind", "127.0.0.1:9000"]) == 0
    out = capsys.readouterr().out
    assert f'DocumentRoot "{env}/c"' in out
    assert 'RewriteRule "^/" "fcgi://127.0.0.1:9000/" [P,L]' in out

    assert main(["config", "apache", "--cache-dir", str(env / "d"), "--port", "8081",
                 "--fcgi-bind", "127.0.0.1:9000", "-o", str(env / "apache.conf")]) == 0
    assert f'DocumentRoot "{env}/d"' in (env / "apache.conf").read_text()


def _wait_for_socket(path, process, log):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        if os.path.exists(path):
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(path))
                    return
                except OSError:
                    pass
        time.sleep(0.05)
    raise AssertionError(f"no socket at {path}: {log.read_text()}")


@contextlib.contextmanager
def fcgi_server(*options: str, **env: str) -> Iterator[tuple[subprocess.Popen, Path, Path]]:
    """``huimages fcgi --socket ... *options`` (with ``env`` over the test's environment),
    once it listens: (process, socket path, log); killed if still running and its
    directory removed afterwards."""
    base = make_base_dir()
    try:
        path, log = base / "app.sock", base / "fcgi.log"
        environ = {**os.environ, "HUIMAGES_DATA_DIR": str(base / "data"), **env}
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [str(HUIMAGES), "fcgi", "--socket", str(path), *options],
                env=environ, stdout=out, stderr=subprocess.STDOUT,
            )
        try:
            _wait_for_socket(path, process, log)
            yield process, path, log
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    finally:
        remove_base_dir(base)


def forking_fcgi() -> contextlib.AbstractContextManager:
    """Two forked processes on one socket, without the node's follower."""
    return fcgi_server("--forking", "--max-workers", "2", HUIMAGES_FOLLOW="0")


@pytest.mark.parametrize(
    ("options", "mode"),
    [
        ([], 0o666),
        (["--max-workers", "4"], 0o666),
        (["--umask", "117", "--forking", "--max-workers", "2"], 0o660),
    ],
)
def test_fcgi_socket_mode_and_clean_shutdown(options, mode):
    with fcgi_server(*options) as (process, path, log):
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == mode
        assert f"on {path}" in log.read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, log.read_text()
        assert not path.exists()  # flup leaves it; serve_fcgi removes it


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry))
    return found


def _wait_until(predicate, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(what)


def test_forking_restarts_a_dead_process_and_stops_them_all():
    """``--forking`` runs its own processes on one socket: one that dies is replaced,
    and SIGTERM stops every one of them (none left serving the socket)."""
    with forking_fcgi() as (process, path, log):
        def two_children(without=None):
            children = _children(process.pid)
            return children if len(children) == 2 and without not in children else None

        victim = min(_wait_until(two_children, "two FastCGI processes"))
        os.kill(victim, signal.SIGKILL)
        again = _wait_until(lambda: two_children(without=victim),
                            "a new process for the one that died")
        assert "exited" in log.read_text()
        with socket.socket(socket.AF_UNIX) as probe:  # wakes every process; one accepts
            probe.connect(str(path))
        time.sleep(0.5)  # the others have tried to accept too
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, log.read_text()
        assert "killed" not in log.read_text()  # each stopped on SIGTERM, none blocked
        for pid in again:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def test_forked_processes_leave_when_their_parent_is_killed():
    """A parent killed without warning (the OOM killer, SIGKILL) must not leave its
    processes serving the socket forever: each notices and stops."""
    with forking_fcgi() as (process, _, _):
        children = _wait_until(lambda: len(_children(process.pid)) == 2 and
                               _children(process.pid), "two FastCGI processes")
        process.kill()
        process.wait()

        def gone():
            for pid in children:
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                            return False  # still running (a zombie has stopped)
                except OSError:
                    pass
            return True

        _wait_until(gone, f"orphaned FastCGI processes {children} still run")


def test_forked_processes_count_together_and_a_dead_ones_counters_stay():
    """/_metrics of ``--forking``: whichever process answers, the sum of all of them
    (prometheus_client's multiprocess mode), also after one was killed and replaced."""
    from prometheus_client.parser import text_string_to_metric_families

    from .. import imagefactory
    from ..fcgi_client import fcgi_get

    with forking_fcgi() as (process, path, log):
        data = path.parent / "data"
        photo = path.parent / "p.jpg"
        photo.write_bytes(imagefactory.photo_jpeg(200, 150))
        put = subprocess.run([str(HUIMAGES), "put", str(photo)], capture_output=True, text=True,
                             env={**os.environ, "HUIMAGES_DATA_DIR": str(data)}, check=True)
        imageid = put.stdout.strip()

        def get(url: str) -> bytes:
            status, body = fcgi_get(str(path), url)
            assert status == 200, body
            return body

        def hits() -> float:
            families = text_string_to_metric_families(get("/_metrics").decode())
            return sum(sample.value for family in families for sample in family.samples
                       if sample.name == "huimages_http_request_duration_seconds_count"
                       and sample.labels["route"] == "hit")

        get(f"/80x80/{imageid}.jpeg")  # the miss
        served = 0  # hits, until both processes have answered some (they race to accept)
        counted = default_directory(Config(data_dir=data))
        while served < 10 or len(list(counted.glob("histogram_*.db"))) < 2:
            assert served < 500, "one process took every connection"
            get(f"/80x80/{imageid}.jpeg")
            served += 1
        children = _wait_until(lambda: len(_children(process.pid)) == 2 and
                               _children(process.pid), "two FastCGI processes")
        assert [hits() for _ in range(6)] == [served] * 6  # whichever process answered
        os.kill(min(children), signal.SIGKILL)
        _wait_until(lambda: len(_children(process.pid) - children) == 1, "a new process")
        get(f"/80x80/{imageid}.jpeg")
        assert [hits() for _ in range(6)] == [served + 1] * 6  # the dead one's still count


def test_fcgi_processes_run_with_pillows_block_cache(monkeypatch):
    """deploy/pillowblocks.py: ``huimages fcgi`` starts itself again (the pid the
    webserver knows stays) with Pillow's block-cache variables, which its forks inherit."""
    monkeypatch.delenv("PILLOW_BLOCKS_MAX", raising=False)
    monkeypatch.delenv("PILLOW_BLOCK_SIZE", raising=False)
    with forking_fcgi() as (process, _, log):
        tree = process_tree(process.pid)
        assert len(tree) >= 3, log.read_text()  # the parent and its 2 forks
        for pid in tree:
            env = environment_of(pid)
            assert env.get("PILLOW_BLOCKS_MAX") == "8", pid
            assert env.get("PILLOW_BLOCK_SIZE") == "4m", pid
