"""Issue 20, items 8 and 11 as a new user and an attacker met them: a 389 KB PNG that says 20,000 × 20,000
(2.46 GB when decoded), a 0-byte photo, and setup problems, in `read`, `classify`, `calibrate` and the
agent's folder camera. Real files, real model, the real commands (subprocesses where memory is measured)."""

from __future__ import annotations

import json
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from contract.images import ImageRefused, check_image
from edge.calibrate.cli import calibrate
from edge.capture.backends.folder import FolderCamera
from edge.capture.simulator import SIM_ROIS, render_reference
from edge.infer.cli import classify


def png_bomb(path: Path, side: int = 20_000) -> Path:
    """A valid grey PNG of side × side black pixels: ~400 KB on disk, side² bytes (×3 as BGR) decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # filter byte + pixels
    body = b"".join(z.compress(row * 200) for _ in range(side // 200)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return png_bomb(tmp_path_factory.mktemp("bomb") / "20261124T170000Z.png")


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("layout")
    ref = d / "reference.png"
    cv2.imwrite(str(ref), render_reference())
    out = d / "layout.toml"
    result = CliRunner().invoke(calibrate, ["--image", str(ref), "--rois", SIM_ROIS, "--decimals", "3",
                                            "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_the_header_says_how_large_before_anything_is_decoded(bomb: Path) -> None:
    assert bomb.stat().st_size < 500_000
    with pytest.raises(ImageRefused, match=r"20,000 × 20,000 pixels.*refused before decoding"):
        check_image(bomb)
    with pytest.raises(ImageRefused, match="6,000 × 6,000 pixels"):  # under Pillow's limit, over ours
        check_image(png_bomb(bomb.with_name("small-bomb.png"), 6_000), max_pixels=20_000_000)
    with pytest.raises(ImageRefused, match="0 bytes"):
        check_image(b"")
    with pytest.raises(ImageRefused, match="not a readable image"):
        check_image(b"GIF89a-but-truncated")
    _, encoded = cv2.imencode(".png", render_reference())
    header = check_image(encoded.tobytes())
    assert (header.width, header.height, header.format) == (render_reference().shape[1],
                                                            render_reference().shape[0], "PNG")


def _peak_rss_mib_of(cmd: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run `cmd` in a fresh child whose only job is to run it: ru_maxrss of that child alone."""
    code = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(p.returncode)")
    proc = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, timeout=300)
    return proc, int(proc.stderr.strip().splitlines()[-1]) / 1024


def test_read_refuses_a_png_bomb_and_a_0_byte_frame_and_reads_the_rest(bomb: Path, layout: Path,
                                                                        tmp_path: Path) -> None:
    empty = tmp_path / "20261124T180000Z.png"
    empty.write_bytes(b"")
    good = tmp_path / "20261124T190000Z.png"
    cv2.imwrite(str(good), render_reference())
    edge = str(Path(sys.executable).parent / "meter-edge")
    proc, peak = _peak_rss_mib_of([edge, "read", str(bomb), str(empty), str(good), "--layout", str(layout)])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert [x["status"] for x in lines[:2]] == ["error", "error"], proc.stderr[-2000:]
    assert "refused before decoding" in lines[0]["reason"]
    assert "0 bytes" in lines[1]["reason"]
    assert len(lines) == 3 and lines[2]["status"] != "error", "the frames after a bad one are still read"
    assert proc.returncode == 1
    assert peak < 600, f"`meter-edge read` peaked at {peak:.0f} MiB"


def test_read_exits_2_for_setup_problems_as_its_help_says(tmp_path: Path) -> None:
    frame = tmp_path / "f.png"
    cv2.imwrite(str(frame), render_reference())
    edge = str(Path(sys.executable).parent / "meter-edge")
    missing = subprocess.run([edge, "read", str(frame), "--layout", str(tmp_path / "nope.toml")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr, missing.stderr
    bad_model = tmp_path / "model.tflite"
    bad_model.write_bytes(b"not a model")
    layout_file = tmp_path / "layout.toml"
    layout_file.write_text("")
    proc = subprocess.run([edge, "read", str(frame), "--layout", str(layout_file), "--model", str(bad_model)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr


def test_classify_skips_a_0_byte_crop_and_a_bomb_as_its_help_promises(bomb: Path, tmp_path: Path) -> None:
    folder = tmp_path / "crops"
    folder.mkdir()
    (folder / "a-empty.png").write_bytes(b"")
    (folder / "b-bomb.png").write_bytes(bomb.read_bytes())
    crop = render_reference()[62:133, 198:247]
    cv2.imwrite(str(folder / "c-good.png"), crop)
    out = tmp_path / "preds.csv"
    result = CliRunner().invoke(classify, [str(folder), "--out", str(out)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1
    assert "2 unreadable image(s) skipped" in result.output
    assert out.read_text().splitlines()[1].startswith("c-good.png,")


def test_calibrate_refuses_a_bomb_and_an_empty_picture_plainly(bomb: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for image in (bomb, empty):
        result = CliRunner().invoke(calibrate, ["--image", str(image), "--rois", SIM_ROIS, "--out",
                                                str(tmp_path / "layout.toml")])
        assert result.exit_code != 0 and not isinstance(result.exception, MemoryError | cv2.error)
        assert "take another frame" in result.output, result.output


def test_the_folder_camera_skips_a_bomb_before_decoding_it(bomb: Path, tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / bomb.name).write_bytes(bomb.read_bytes())
    (folder / "20261124T170500Z.png").write_bytes(b"")
    cv2.imwrite(str(folder / "20261124T171000Z.png"), render_reference())
    cam = FolderCamera(folder, tmp_path / "state", loop=False)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    frame = cam.capture()
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert frame.source.endswith("20261124T171000Z.png")
    assert cam.corrupt == 2
    assert grew_mib < 200, f"capturing grew the process by {grew_mib:.0f} MiB"
