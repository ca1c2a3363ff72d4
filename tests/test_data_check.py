"""`sdft data check`: the report (counts, sizes, buckets, captions, problems) and the crop preview PNG."""

from __future__ import annotations

from PIL import Image

from helpers.images import noise_image, odd_folder
from sdft.cli.data_check import main


def test_check_folder_writes_report_and_preview(tmp_path, capsys):
    noise_image(tmp_path / "ds" / "a.png", size=(96, 48), seed=0)
    noise_image(tmp_path / "ds" / "b.png", size=(48, 48), seed=1)
    (tmp_path / "ds" / "a.txt").write_text("sks dog running")
    rc = main(
        [
            str(tmp_path / "ds"),
            "--prompt",
            "photo of sks dog",
            "--preview",
            str(tmp_path / "p.png"),
            "--report",
            str(tmp_path / "r.txt"),
            "--set",
            "enable_bucket=true",
            "--set",
            "resolution=64",
            "--set",
            "min_bucket_reso=32",
            "--set",
            "max_bucket_reso=128",
            "--set",
            "bucket_reso_steps=32",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "2 instance images" in out and "1 of 2 images have a .txt caption" in out
    assert "96x32: 1 images" in out and "64x64: 1 images" in out
    assert "upscaled" in out and "b.png" in out  # 48x48 -> 64x64
    assert (tmp_path / "r.txt").read_text().strip() == out.strip()
    preview = Image.open(tmp_path / "p.png")
    assert preview.size == (2 * 128, 128 + 14)
    red = [px for px in preview.convert("RGB").getdata() if px == (255, 0, 0)]
    assert red  # crop boxes drawn


def test_check_names_bad_files_and_fails(tmp_path, capsys):
    f = odd_folder(tmp_path / "odd")
    rc = main([str(tmp_path / "odd"), "--preview", str(tmp_path / "p.png")])
    out = capsys.readouterr()
    assert rc == 1 and (tmp_path / "p.png").is_file()
    for key in f:
        if key.startswith("bad_"):
            assert f"unreadable: {f[key]}" in out.out
    assert "identical files" in out.out and "notes.bin" in out.out and "Training would stop" in out.err


def test_check_kohya_toml_and_bad_source(tmp_path, capsys):
    noise_image(tmp_path / "img" / "3_sks dog" / "a.png", seed=0)
    (tmp_path / "d.toml").write_text(
        "[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = 'img/3_sks dog'\n"
    )
    assert main([str(tmp_path / "d.toml"), "--out", str(tmp_path / "checks")]) == 0
    out = capsys.readouterr().out
    assert "3 repeats" in out and "'sks'" in out and (tmp_path / "checks" / "data_check.png").is_file()
    assert main([str(tmp_path / "nothing.txt")]) == 2
