import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vistok.errors import DatasetError, UsageError
from vistok.record import (
    InputId,
    Member,
    TokenRecord,
    clip_key,
    crop_key,
    input_key,
    parse_input_id,
    parse_key,
)

names = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), min_size=1, max_size=60)


@given(names, st.integers(0, 999), st.integers(0, 9999))
def test_keys_are_safe_and_parse_back(name, crop, clip):
    key = input_key(name)
    TokenRecord(key, np.zeros(1, np.uint16))  # a valid record key: letters, digits, '_' and '-'
    assert parse_key(key) == (key, None, None)
    assert parse_key(crop_key(key, crop)) == (key, crop, None)
    assert parse_key(clip_key(key, clip)) == (key, None, clip)


def test_key_is_the_slug_of_the_stem_and_a_hash_of_the_whole_name():
    a, b = input_key("photos/cat.jpg"), input_key("other/cat.jpg")
    assert a.startswith("cat-") and b.startswith("cat-") and a != b
    assert input_key("photos/cat.jpg") == a  # stable
    assert parse_key("from-another-tool").input == "from-another-tool"


@given(names, st.text(min_size=1, max_size=40).filter(lambda s: "\0" not in s),
       st.none() | st.tuples(st.integers(0, 2**40), st.integers(0, 2**31), st.integers(-1, 2**40), st.integers(0, 2**20)))
def test_input_ids_round_trip(name, path, member):
    ref = InputId(name, path, Member(*member) if member else None)
    assert parse_input_id(str(ref)) == ref


def test_input_id_sources_and_bad_ids():
    m = InputId("shard.tar/dir/0001.jpg", "/data/shard.tar", Member(512, 10, -1, 0))
    assert m.source == "/data/shard.tar:dir/0001.jpg" and m.key.startswith("0001-")
    assert InputId("photos/a.png", "/x/photos/a.png").source == "/x/photos/a.png"
    with pytest.raises(UsageError):
        parse_input_id("/no/name/separator.png")
    with pytest.raises(UsageError):
        parse_input_id("a\0b\0not:numbers")


def test_keys_must_be_dot_free():
    with pytest.raises(DatasetError, match="no dots"):
        TokenRecord("a.b", np.zeros(3, np.uint16))


def test_record_json_is_canonical(photo_records):
    rec = photo_records(1)[0]
    assert rec.to_sample()["json"] == json.dumps(rec.meta, sort_keys=True, separators=(",", ":")).encode()
