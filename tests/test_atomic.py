"""sdft.atomic: a write lands whole or not at all, and leaves no temp file either way."""

from __future__ import annotations

import pytest

from sdft.atomic import atomic_path, write_text


def test_a_finished_write_replaces_the_target_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "sub" / "summary.json"
    write_text(target, "old")
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".tmp-summary.json")
        tmp.write_text("new")
        assert target.read_text() == "old"  # not visible before the block ends
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["summary.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp_file(tmp_path):
    target = write_text(tmp_path / "a.txt", "old")
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_shared_temp_name_is_renamed_only_by_its_owner(tmp_path):
    target = tmp_path / "state.ckpt"
    with atomic_path(target, shared=True, owner=False) as tmp:
        tmp.write_text("written by rank 0")  # stands for the writer on rank 0
    assert not target.exists() and tmp.exists()  # a non-owner neither renames nor removes it
    with atomic_path(target, shared=True) as same:
        assert same == tmp
    assert target.read_text() == "written by rank 0" and not tmp.exists()
