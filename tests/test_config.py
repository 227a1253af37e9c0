from pathlib import Path

import pytest

from huimages_wsgi.config import Config


def test_embedded_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = Config.from_env({})
    assert config.data_dir == tmp_path / "huimages-data"
    assert config.cache_dir == tmp_path / "huimages-data" / "cache"
    assert config.server_url == "http://127.0.0.1:8080/"
    assert config.s3_bucket is None and config.couch_server is None
    assert config.jpeg_quality == 85


def test_historic_environment_variables():
    config = Config.from_env(
        {
            "HUIMAGESCOUCHSERVER": "http://couch:5984",
            "HUIMAGES3BUCKET": "originals",
            "IMAGESERVERURL": "http://i.example.com",
            "HUIMAGESALTADDITION": "- Example Shop",
        }
    )
    assert config.couch_server == "http://couch:5984"
    assert config.s3_bucket == "originals"
    assert config.server_url == "http://i.example.com/"
    assert config.alt_addition == "- Example Shop"
    older = Config.from_env({"COUCHSERVER": "http://old:5984", "S3BUCKET": "older"})
    assert (older.couch_server, older.s3_bucket) == ("http://old:5984", "older")
    both = Config.from_env({"HUIMAGES3BUCKET": "new", "S3BUCKET": "old"})
    assert both.s3_bucket == "new"


def test_keyword_overrides_win_and_unknown_keys_fail():
    config = Config.from_env({"HUIMAGES_DATA_DIR": "/srv/a"}, data_dir=Path("/srv/b"))
    assert config.data_dir == Path("/srv/b")
    with pytest.raises(TypeError):
        Config.from_env({}, not_a_setting=1)


def test_presets_quality_and_limits_from_environment():
    config = Config.from_env(
        {
            "HUIMAGES_PRESETS": "hero=1200x400!,thumb=60x60",
            "HUIMAGES_JPEG_QUALITY": "70",
            "HUIMAGES_MAX_UPLOAD_BYTES": "2M",
        }
    )
    assert config.presets["hero"] == "1200x400!" and config.presets["thumb"] == "60x60"
    assert config.presets["square"] == "75x75!"
    assert config.jpeg_quality == 70 and config.max_upload_bytes == 2 << 20


@pytest.mark.parametrize(
    "env",
    [
        {"HUIMAGES_JPEG_QUALITY": "abc"},
        {"HUIMAGES_JPEG_QUALITY": "0"},
        {"HUIMAGES_PRESETS": "o=1x1"},
        {"HUIMAGES_XSENDFILE": "bogus"},
    ],
)
def test_bad_settings_fail_with_a_message(env):
    with pytest.raises(ValueError):
        Config.from_env(env)
