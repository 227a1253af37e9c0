"""deploy/pillowblocks.py: which variables a restart adds, and which processes restart."""

import logging
import os
import sys

import pytest

from huimages_wsgi.cli.main import main
from huimages_wsgi.deploy import pillowblocks
from huimages_wsgi.deploy.pillowblocks import PILLOW_BLOCKS, pillow_blocks_to_add


class Restarted(Exception):
    """What the patched ``os.execve`` raises instead of replacing the test's process."""


@pytest.fixture
def execve(monkeypatch):
    """``os.execve`` recording its arguments; the variables out of the environment."""
    calls = []

    def fake(path, argv, env):
        calls.append((path, list(argv), dict(env)))
        raise Restarted

    monkeypatch.setattr(os, "execve", fake)
    for name in PILLOW_BLOCKS:
        monkeypatch.delenv(name, raising=False)
    return calls


def test_both_variables_are_added_or_none():
    assert pillow_blocks_to_add({}) == {"PILLOW_BLOCKS_MAX": "8", "PILLOW_BLOCK_SIZE": "4m"}
    assert pillow_blocks_to_add({"PILLOW_BLOCKS_MAX": "0"}) == {}
    assert pillow_blocks_to_add({"PILLOW_BLOCK_SIZE": "16m", "OTHER": "1"}) == {}


def test_the_restart_runs_the_same_command_line_with_the_variables(execve, monkeypatch):
    monkeypatch.setenv("HUIMAGES_EXAMPLE", "kept")
    with pytest.raises(Restarted):
        pillowblocks.restart_with_pillow_blocks()
    [(path, argv, env)] = execve
    assert (path, argv) == (sys.executable, list(sys.orig_argv))
    assert env == {**os.environ, **PILLOW_BLOCKS}
    assert env["HUIMAGES_EXAMPLE"] == "kept"


def test_a_chosen_setting_means_no_restart(execve, monkeypatch):
    monkeypatch.setenv("PILLOW_BLOCKS_MAX", "0")
    pillowblocks.restart_with_pillow_blocks()
    assert execve == []


def test_an_interpreter_that_cannot_start_again_is_a_warning(monkeypatch, caplog):
    def failing(path, argv, env):
        raise FileNotFoundError(2, "No such file or directory", path)

    monkeypatch.setattr(os, "execve", failing)
    for name in PILLOW_BLOCKS:
        monkeypatch.delenv(name, raising=False)
    with caplog.at_level(logging.WARNING, logger="huimages_wsgi"):
        pillowblocks.restart_with_pillow_blocks()  # returns: the server runs without it
    assert "not restarting with Pillow's block cache" in caplog.text


@pytest.fixture
def served(monkeypatch, tmp_path):
    """``run_server`` recorded instead of serving."""
    from huimages_wsgi.deploy import server

    calls = []
    monkeypatch.setattr(server, "run_server", lambda config, **kw: calls.append(kw))
    monkeypatch.setenv("HUIMAGES_DATA_DIR", str(tmp_path / "data"))
    return calls


def test_main_called_with_arguments_never_replaces_its_caller(execve, served):
    assert main(["serve", "--port", "0"]) == 0
    assert execve == [] and len(served) == 1


def test_the_command_line_of_the_process_restarts_it(execve, served, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["huimages", "serve", "--port", "0"])
    with pytest.raises(Restarted):
        main()
    assert len(execve) == 1 and served == []
