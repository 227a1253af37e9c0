import json

import pytest

from huimages_wsgi.cli.main import build_parser, main
from huimages_wsgi.cli.options import Progress

from .. import imagefactory as f


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("HUIMAGES_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IMAGESERVERURL", "http://i.example.com/")
    return tmp_path


def write_images(directory, count):
    paths = []
    for i in range(count):
        path = directory / f"img{i}.jpg"
        path.write_bytes(f.solid_jpeg(40 + i, 30, colour=(i * 20, 100, 50)))
        paths.append(str(path))
    return paths


def test_put_info_url_delete(env, capsys):
    (path,) = write_images(env, 1)
    assert main(["put", path, "--title", "Bike", "--reference", "sku=123"]) == 0
    imageid = capsys.readouterr().out.strip()
    assert len(imageid) == 34
    assert main(["info", imageid]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["title"] == ["Bike"] and doc["references"] == {"sku": ["123"]} and doc["width"] == 40
    assert main(["url", imageid, "--size", "square"]) == 0
    assert capsys.readouterr().out.strip() == f"http://i.example.com/75x75!/{imageid}/bike.jpeg"
    assert main(["url", imageid]) == 0
    assert capsys.readouterr().out.strip() == f"http://i.example.com/o/{imageid}.jpeg"
    assert main(["url", imageid, "--size", "240x160", "--ext", "webp"]) == 0
    assert capsys.readouterr().out.strip() == f"http://i.example.com/240x160/{imageid}/bike.webp"
    assert main(["delete", imageid]) == 0
    assert main(["info", imageid]) == 2
    assert "no image" in capsys.readouterr().err


def test_put_many_prints_one_id_per_line_with_progress(env, capsys):
    paths = write_images(env, 5)
    assert main(["put", "--progress", *paths]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.split()) == 5
    assert "5/5" in captured.err and "#" in captured.err


def test_put_reports_bad_files_and_keeps_going(env, capsys):
    paths = write_images(env, 2)
    bad = env / "notes.txt"
    bad.write_text("not an image")
    assert main(["put", paths[0], str(bad), paths[1]]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.split()) == 2
    assert "notes.txt" in captured.err and "JPEG" in captured.err


def test_invalid_id_is_a_clear_error(env, capsys):
    assert main(["info", "nonsense"]) == 2
    assert "invalid image id" in capsys.readouterr().err


def test_purge(env, capsys):
    from huimages_wsgi import Config, ImageStore

    (path,) = write_images(env, 1)
    main(["put", path])
    imageid = capsys.readouterr().out.strip()
    store = ImageStore(Config.from_env())
    store.variant_path(imageid, store.size_for("10x10"))
    assert main(["purge", imageid]) == 0
    assert "removed 1" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["serve", "put", "info", "url", "delete", "purge"])
def test_help_for_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert f"huimages {command}" in capsys.readouterr().out


def test_progress_is_silent_when_not_a_tty(capsys):
    import sys

    progress = Progress(3, "x", stream=sys.stderr)
    for _ in range(3):
        progress.step()
    assert capsys.readouterr().err == ""


def _stored(data_dir):
    """Everything an upload could leave behind: catalog entries and original files."""
    from huimages_wsgi import Config, ImageStore

    ids = set(ImageStore(Config(data_dir=data_dir)).catalog.ids(include_deleted=True))
    files = {p for p in (data_dir / "originals").rglob("*") if p.is_file()}
    return ids, files


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("oversize", f.photo_jpeg(400, 300), "the limit is 4096"),
        ("bomb", f.declared_size_jpeg(60_000, 60_000), "too many pixels"),
        ("warning band", f.declared_size_jpeg(10_000, 10_000), "pixels; the limit is 89478485"),
        ("truncated", f.photo_jpeg(400, 300)[:3000], "truncated JPEG"),
        ("tga", f.tga_image(20, 20), "HEIC/HEIF, GIF, TIFF or BMP originals"),
        ("empty", b"", "originals are accepted"),
    ],
)
def test_put_refuses_with_one_clear_line_and_stores_nothing(
    env, monkeypatch, capsys, name, data, message
):
    monkeypatch.setenv("HUIMAGES_MAX_UPLOAD_BYTES", "4K")
    (good,) = write_images(env, 1)
    assert main(["put", good]) == 0
    capsys.readouterr()
    before = _stored(env / "data")
    bad = env / f"{name}.jpg"
    bad.write_bytes(data)
    assert main(["put", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(f"huimages: {bad}: ") and message in captured.err
    assert _stored(env / "data") == before


def test_url_is_signed_for_its_size_and_format(env, capsys, monkeypatch):
    from webob import Request

    from huimages_wsgi import Config, make_app
    from huimages_wsgi.core.signing import sign

    secret = "cli-secret-0123456789"
    monkeypatch.setenv("HUIMAGES_SECRET", secret)
    (path,) = write_images(env, 1)
    assert main(["put", path, "--title", "Bike"]) == 0
    imageid = capsys.readouterr().out.strip()
    app = make_app(Config.from_env())
    for ext in ("jpeg", "webp", "png"):
        assert main(["url", imageid, "--size", "square", "--ext", ext]) == 0
        url = capsys.readouterr().out.strip()
        assert url.endswith(f"/bike.{ext}?sig={sign(secret, '75x75!', imageid, ext)}")
        path = url.removeprefix("http://i.example.com")
        assert Request.blank(path).get_response(app).status_int == 200, ext
