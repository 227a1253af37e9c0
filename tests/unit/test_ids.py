import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from huimages_wsgi.core.errors import InvalidImageId
from huimages_wsgi.core.ids import compute_id, is_valid_id, validate_id


def test_known_vector_matches_the_original_scheme():
    # base32(sha1(b"")) is 3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ
    assert compute_id(b"") == "3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ01"


@given(st.binary(max_size=256))
def test_ids_are_34_chars_content_derived_and_valid(data):
    imageid = compute_id(data)
    assert len(imageid) == 34 and imageid.endswith("01")
    assert imageid == compute_id(bytes(data))
    assert is_valid_id(imageid)
    assert validate_id(imageid) == imageid


def test_different_bytes_different_ids():
    assert compute_id(b"a") != compute_id(b"b")
    assert hashlib.sha1(b"a").digest() != hashlib.sha1(b"b").digest()


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        "3i42h3s6nnfq2msvx7xzkyayscx5qbyj01",
        "3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ0",
        "3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ011",
        "../../etc/passwd",
        "3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBY/01",
        "3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ01\x00",
        "3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBY101",
        None,
        42,
    ],
)
def test_invalid_ids_are_rejected(bad):
    assert not is_valid_id(bad)
    with pytest.raises(InvalidImageId):
        validate_id(bad)
