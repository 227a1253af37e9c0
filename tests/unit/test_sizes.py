import pytest

from huimages_wsgi.core.errors import InvalidSize
from huimages_wsgi.core.sizes import (
    CROP,
    DEFAULT_PRESETS,
    FIT,
    ORIGINAL,
    parse_size,
    validate_presets,
)


def test_original():
    size = parse_size("o")
    assert size.kind == ORIGINAL and size.is_original and size.spec == "o"


def test_fit_and_crop():
    assert parse_size("240x160") == parse_size("240x160")
    fit = parse_size("240x160")
    assert (fit.kind, fit.width, fit.height, fit.spec) == (FIT, 240, 160, "240x160")
    crop = parse_size("75x75!")
    assert (crop.kind, crop.width, crop.height, crop.spec) == (CROP, 75, 75, "75x75!")


def test_default_presets_are_the_original_table():
    assert DEFAULT_PRESETS == {
        "mini": "23x40",
        "thumb": "50x200",
        "sidebar": "179x600",
        "small": "240x160",
        "medium": "480x320",
        "full": "477x800",
        "vga": "640x480",
        "svga": "800x600",
        "xvga": "1024x768",
        "square": "75x75!",
    }
    square = parse_size("square")
    assert (square.name, square.kind, square.spec) == ("square", CROP, "75x75!")
    assert parse_size("thumb").spec == "50x200"


def test_custom_presets():
    presets = {"hero": "1200x400!"}
    assert parse_size("hero", presets).spec == "1200x400!"
    with pytest.raises(InvalidSize):
        parse_size("thumb", presets)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "x",
        "0x10",
        "10x0",
        "010x10",
        "10X10",
        "10x10!!",
        "10x",
        "x10",
        "-1x10",
        "10x10 ",
        "100000x10",
        "unknownpreset",
        "../o",
        "o/",
        "Thumb",
        "10x10?",
        "1e3x10",
        "１0x10",
    ],
)
def test_invalid_sizes_raise_invalid_size(bad):
    with pytest.raises(InvalidSize):
        parse_size(bad)


@pytest.mark.parametrize("table", [{"o": "1x1"}, {"Bad": "1x1"}, {"ok": "1x"}, {"a/b": "1x1"}])
def test_invalid_preset_tables_fail_at_configuration_time(table):
    with pytest.raises(ValueError):
        validate_presets(table)
