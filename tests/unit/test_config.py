from pathlib import Path

import pytest

from huimages_wsgi import ImageStore
from huimages_wsgi.core.config import Config, ConfigError
from huimages_wsgi.core.sizes import DEFAULT_PRESETS
from huimages_wsgi.storage.couch import CouchAttachmentStore, CouchCatalog
from huimages_wsgi.storage.disk import DiskBlobStore
from huimages_wsgi.storage.migrating import MigratingBlobStore
from huimages_wsgi.storage.s3 import S3BlobStore
from huimages_wsgi.storage.sqlite import SQLiteCatalog

from .. import imagefactory as f


def test_embedded_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = Config.from_env({})
    assert config.data_dir == tmp_path / "huimages-data"
    assert config.cache_dir == tmp_path / "huimages-data" / "cache"
    assert config.server_url == "http://127.0.0.1:8080/"
    assert config.s3_bucket is None and config.couch_server is None
    assert config.jpeg_quality == 85


def test_data_and_cache_directories_from_the_environment(tmp_path):
    config = Config.from_env({"HUIMAGES_DATA_DIR": str(tmp_path / "d"),
                              "HUIMAGES_CACHE_DIR": str(tmp_path / "www" / "cache")})
    assert config.data_dir == tmp_path / "d"
    assert config.cache_dir == config.cache_root == tmp_path / "www" / "cache"
    only_data = Config.from_env({"HUIMAGES_DATA_DIR": str(tmp_path / "d")})
    assert only_data.cache_dir == tmp_path / "d" / "cache"


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


# -- which backends a configuration builds ------------------------------------------------
COUCH = "http://couch.example.test:5984/"
BOTO_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)


@pytest.fixture
def boto_env(monkeypatch, tmp_path) -> pytest.MonkeyPatch:
    """boto3 reads os.environ, not our mapping: start it from a known, empty state."""
    for name in BOTO_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return monkeypatch


def built(env: dict[str, str], tmp_path: Path) -> ImageStore:
    """The store ``huimages serve`` would build from this environment (nothing is contacted)."""
    return ImageStore(Config.from_env({"HUIMAGES_DATA_DIR": str(tmp_path / "data"), **env}))


@pytest.mark.parametrize(
    "env, primary, catalog",
    [
        ({}, DiskBlobStore, SQLiteCatalog),
        ({"HUIMAGES3BUCKET": "originals"}, S3BlobStore, SQLiteCatalog),
        ({"S3BUCKET": "originals"}, S3BlobStore, SQLiteCatalog),
        ({"HUIMAGESCOUCHSERVER": COUCH}, DiskBlobStore, CouchCatalog),
        ({"COUCHSERVER": COUCH}, DiskBlobStore, CouchCatalog),
        ({"HUIMAGES3BUCKET": "originals", "HUIMAGESCOUCHSERVER": COUCH}, S3BlobStore, CouchCatalog),
        ({"S3BUCKET": "originals", "COUCHSERVER": COUCH}, S3BlobStore, CouchCatalog),
    ],
    ids=[
        "embedded",
        "s3",
        "s3-historic",
        "couch",
        "couch-historic",
        "s3+couch",
        "s3+couch-historic",
    ],
)
def test_each_combination_builds_its_classes(boto_env, tmp_path, env, primary, catalog):
    """Any mix works, and with CouchDB the legacy attachments are read (and moved) too."""
    store = built(env, tmp_path)
    assert type(store.catalog) is catalog
    if catalog is CouchCatalog:
        assert (store.catalog.url, store.catalog.dbname) == (COUCH, "huimages")
        assert type(store.blobs) is MigratingBlobStore
        assert type(store.blobs.legacy) is CouchAttachmentStore
        assert store.blobs.legacy.catalog is store.catalog  # one client, one database
        blobs = store.blobs.primary
    else:
        assert store.catalog.path == tmp_path / "data" / "catalog.sqlite3"
        blobs = store.blobs
    assert type(blobs) is primary
    if primary is S3BlobStore:
        assert blobs.bucket == "originals"
    else:
        assert blobs.root == tmp_path / "data" / "originals"


def test_boto3_reads_the_s3_endpoint_variables(boto_env, tmp_path):
    """Nothing S3-specific is configured twice: the endpoint is boto3's own setting."""
    boto_env.setenv("AWS_ENDPOINT_URL", "http://everything.example.test:9000")
    store = built({"HUIMAGES3BUCKET": "b"}, tmp_path / "one")
    assert store.blobs.client.meta.endpoint_url == "http://everything.example.test:9000"
    boto_env.setenv("AWS_ENDPOINT_URL_S3", "http://s3-only.example.test:8333")
    store = built({"HUIMAGES3BUCKET": "b"}, tmp_path / "two")
    assert store.blobs.client.meta.endpoint_url == "http://s3-only.example.test:8333"


def test_the_s3_only_endpoint_wins_against_a_real_server(boto_env, s3_server, tmp_path):
    """AWS_ENDPOINT_URL_S3 alone reaches the server; AWS_ENDPOINT_URL pointing elsewhere
    (here: a port nothing listens on) is ignored for S3."""
    for name, value in s3_server.env.items():
        boto_env.setenv(name, value)
    boto_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    boto_env.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    bucket = s3_server.create_bucket()
    store = built({"S3BUCKET": bucket}, tmp_path)
    data = f.solid_jpeg()
    imageid = store.save_image(data)
    head = s3_server.client().head_object(Bucket=bucket, Key=imageid)
    assert head["ContentLength"] == len(data)


def test_the_configuration_reference_is_generated_from_the_code():
    """docs/configuration.md shows exactly what config.py reads (scripts/config-reference)."""
    from dataclasses import fields

    from huimages_wsgi.core.settings import ENV_READERS, SETTINGS_HELP, reference_table

    page = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert reference_table() in page, "run scripts/config-reference"
    settings = {f.name for f in fields(Config)}
    assert set(ENV_READERS) == set(SETTINGS_HELP) == settings
    for name, (default, _meaning) in SETTINGS_HELP.items():
        value = getattr(Config(), name)
        if default.isdigit():  # the numbers the table states are the real defaults
            assert value == int(default), name


def test_a_configuration_exported_to_an_environment_reads_back_the_same():
    """How a server's workers and the follower get the configuration the CLI built."""
    config = Config(data_dir="/srv/x", allowed_sizes=frozenset({"o", "square"}), browse=True,
                    render_wait=2.5, secret="s" * 16, follow_heartbeat=1.0,
                    presets={**DEFAULT_PRESETS, "big": "800x600"}, max_upload_bytes=1234)
    env = {"HUIMAGES_SECRET": "old" * 6, "S3BUCKET": "older-name", "HUIMAGES_API_URL": "x"}
    config.export(env)
    assert Config.from_env(env) == config
    assert "S3BUCKET" not in env and "HUIMAGES_API_URL" not in env  # None: removed


@pytest.mark.parametrize("variable, field", [("HUIMAGES_UPLOAD_TOKEN", "upload_token"),
                                             ("HUIMAGES_SECRET", "secret")])
@pytest.mark.parametrize("weak", [" ", " " * 20, "short-token", "x" * 15, " " + "x" * 20,
                                  "x" * 20 + "\n"])
def test_weak_tokens_and_secrets_are_refused_at_start_up(variable, field, weak):
    """A token of one space or a few letters protects nothing: refused, naming the variable."""
    with pytest.raises(ConfigError, match=f"{variable} \\({field}\\) must be at least 16"):
        Config.from_env({variable: weak})
    with pytest.raises(ConfigError, match=variable):
        Config(**{field: weak})
    assert getattr(Config.from_env({variable: "x" * 16}), field) == "x" * 16
    assert getattr(Config.from_env({variable: ""}), field) is None  # empty: not set


def test_the_cli_refuses_a_weak_token_before_serving(tmp_path, capsys):
    from huimages_wsgi.cli.main import main

    env = {"HUIMAGES_UPLOAD_TOKEN": "secret", "HUIMAGES_DATA_DIR": str(tmp_path)}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        assert main(["url", "A" * 32 + "01"]) == 1
    assert "HUIMAGES_UPLOAD_TOKEN (upload_token) must be at least 16" in capsys.readouterr().err
