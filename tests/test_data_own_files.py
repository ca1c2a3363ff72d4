"""The data scan takes only the user's images: never sdft's own previews or masks; it names what it ignores and
captions it cannot decode (issue 20, items 3 and 9)."""

from __future__ import annotations

import logging

from helpers.images import noise_image
from sdft.config import DataConfig
from sdft.cli.data_check import main
from sdft.data.datamodule import scan_dataset
from sdft.data.images import list_images


def dataset(root):
    noise_image(root / "a.png", seed=0)
    noise_image(root / "b.png", seed=1)
    return root


def test_data_check_writes_nothing_into_the_dataset(tmp_path, monkeypatch, capsys):
    ds = dataset(tmp_path / "ds")
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in ds.iterdir())
    assert main([str(ds), "--prompt", "photo of sks dog", "--set", "resolution=64"]) == 0
    assert sorted(p.name for p in ds.iterdir()) == before, "sdft data check wrote into the dataset"
    out = capsys.readouterr().out
    preview = out.split("Preview: ")[1].split()[0]
    assert (tmp_path / preview).is_file() and tmp_path / "ds" not in (tmp_path / preview).parents
    assert main([str(ds), "--prompt", "x", "--set", "resolution=64", "--out", str(tmp_path / "checks")]) == 0
    assert (tmp_path / "checks" / "data_check.png").is_file()


def test_scan_skips_sdft_files_and_reports_strays(tmp_path, caplog):
    ds = dataset(tmp_path / "ds")
    noise_image(ds / "data_check.png", seed=2)  # a preview an older sdft wrote here
    noise_image(ds / "a.mask.png", seed=3)  # masked-loss masks sit beside their images
    (ds / "notes.md").write_text("where I took these photos")
    assert [p.name for p in list_images(ds)] == ["a.png", "b.png"]
    with caplog.at_level(logging.WARNING, logger="sdft"):
        report = scan_dataset(DataConfig(instance_dir=str(ds), instance_prompt="photo of sks dog"))
    assert len(report.examples) == 2
    ignored = {p.name for p in report.ignored}
    assert "notes.md" in ignored and "a.mask.png" not in ignored
    assert any("notes.md" in r.getMessage() for r in caplog.records)


def test_non_utf8_caption_is_named_in_a_warning(tmp_path, caplog):
    ds = dataset(tmp_path / "ds")
    (ds / "a.txt").write_bytes("photo of sks dog, caf\u00e9".encode("latin-1"))
    with caplog.at_level(logging.WARNING, logger="sdft"):
        report = scan_dataset(DataConfig(instance_dir=str(ds), instance_prompt="photo of sks dog"))
    assert any("a.txt" in r.getMessage() and "UTF-8" in r.getMessage() for r in caplog.records), caplog.text
    assert any("café" in e.prompt for e in report.examples), "latin-1 text should still be read correctly"


def test_root_folder_and_unreadable_folders_are_data_errors(tmp_path, monkeypatch):
    import pytest

    from sdft.data import images
    from sdft.errors import DataError

    with pytest.raises(DataError, match="root"):
        scan_dataset(DataConfig(instance_dir="/", instance_prompt="photo of sks dog"))
    ds = dataset(tmp_path / "ds")

    def denied(self, pattern):
        raise PermissionError(13, "Permission denied", str(self / "proc"))

    monkeypatch.setattr(images.Path, "glob", denied)
    with pytest.raises(DataError, match="Permission denied"):
        images.list_images(ds)
