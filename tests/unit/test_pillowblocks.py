"""deploy/pillowblocks.py: which variables a restart adds, and which processes restart."""

import pytest

from huimages_wsgi.deploy.pillowblocks import (
    PILLOW_BLOCKS,
    missing_pillow_blocks,
    restart_with_pillow_blocks,
    started_as_command,
)


def test_only_the_variables_the_environment_lacks_are_added():
    assert missing_pillow_blocks({}) == {"PILLOW_BLOCKS_MAX": "8", "PILLOW_BLOCK_SIZE": "4m"}
    assert missing_pillow_blocks({"PILLOW_BLOCKS_MAX": "0"}) == {"PILLOW_BLOCK_SIZE": "4m"}
    assert missing_pillow_blocks(dict(PILLOW_BLOCKS) | {"OTHER": "1"}) == {}


@pytest.mark.parametrize(("argv0", "command"), [
    ("/srv/venv/bin/huimages", True),
    ("huimages", True),
    ("/srv/app/huimages_wsgi/cli/__main__.py", True),
    ("/srv/venv/bin/pytest", False),
    ("/srv/venv/bin/gunicorn", False),
    ("/srv/app/myapp/__main__.py", False),
    ("/srv/venv/bin/huimages-other", False),
    ("", False),
])
def test_only_the_huimages_command_restarts_itself(argv0, command):
    assert started_as_command(argv0) is command


def test_a_test_process_is_never_replaced(monkeypatch):
    for name in PILLOW_BLOCKS:
        monkeypatch.delenv(name, raising=False)
    restart_with_pillow_blocks()  # pytest's own process: returns, nothing replaced
