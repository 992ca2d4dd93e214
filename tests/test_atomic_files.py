"""ditjax.atomic_files: a target is replaced whole or not at all, with ordinary permissions."""

import json
import os
import stat

import pytest

from ditjax.atomic_files import (
    replacing,
    temporary_path_for,
    write_bytes,
    write_json,
    write_text,
)


def test_writers_make_the_directory_and_replace_the_contents(tmp_path):
    target = tmp_path / "a" / "b" / "out.json"
    write_json(target, {"x": [1, 2]})
    assert json.loads(target.read_text()) == {"x": [1, 2]}
    assert target.read_text().endswith("\n")
    write_text(str(target), "second")
    assert target.read_text() == "second"
    write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert os.listdir(target.parent) == ["out.json"]


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_an_error_while_writing_keeps_the_old_file_and_no_temporary(tmp_path, error):
    target = tmp_path / "report.txt"
    target.write_text("old and whole")
    with pytest.raises(type(error)), replacing(target) as f:
        f.write(b"new but half")
        f.flush()
        raise error
    assert target.read_text() == "old and whole"
    assert os.listdir(tmp_path) == ["report.txt"]


def test_a_failed_first_write_leaves_nothing(tmp_path):
    target = tmp_path / "new.bin"
    with pytest.raises(ValueError), replacing(target) as f:
        f.write(b"partial")
        raise ValueError("encoder failed")
    assert os.listdir(tmp_path) == []


def test_the_temporary_file_is_hidden_next_to_the_target_until_renamed(tmp_path):
    target = tmp_path / "shard-00000"
    with temporary_path_for(target) as temporary:
        assert os.path.dirname(temporary) == str(tmp_path)
        assert os.path.basename(temporary).startswith(".shard-00000.")
        assert os.path.exists(temporary) and not target.exists()
        with open(temporary, "wb") as f:  # a writer that opens the file by name
            f.write(b"records")
    assert target.read_bytes() == b"records"
    assert not os.path.exists(temporary)


def test_concurrent_writers_get_distinct_temporary_files(tmp_path):
    target = tmp_path / "same"
    with temporary_path_for(target) as first, temporary_path_for(target) as second:
        assert first != second


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_the_file_gets_the_mode_an_ordinary_write_would_give(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_text(tmp_path / "atomic", "x")
        (tmp_path / "plain").write_text("x")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "atomic").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o666 & ~umask
