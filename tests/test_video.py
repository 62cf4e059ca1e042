"""Rollout videos: mp4/gif decode with the right frame count and size, captions, no-op."""
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from calql_robot.run.video import VideoRecorder, annotate, caption, write_video


def _frames(n: int, h: int, w: int) -> np.ndarray:
    """Smooth, distinct frames (a moving gradient) so lossy x264 stays close to the input."""
    y, x = np.mgrid[0:h, 0:w]
    shape = (n, h, w)
    r = np.broadcast_to((x * 255 // max(w - 1, 1)).astype(np.uint8), shape)
    g = np.broadcast_to((y * 255 // max(h - 1, 1)).astype(np.uint8), shape)
    b = np.broadcast_to((np.arange(n) * 255 // max(n - 1, 1)).astype(np.uint8)[:, None, None], shape)
    return np.stack([r, g, b], axis=-1)


def test_mp4_decodes_with_right_frame_count_size_and_content(tmp_path: Path) -> None:
    frames = _frames(12, 48, 64)
    path = write_video(tmp_path / "v.mp4", frames, fps=10)
    decoded = iio.imread(path, index=None)
    assert decoded.shape == (12, 48, 64, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 6  # lossy but faithful
    assert iio.immeta(path)["fps"] == 10
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


def test_odd_sizes_are_padded_to_even_not_rescaled(tmp_path: Path) -> None:
    frames = _frames(5, 33, 47)
    decoded = iio.imread(write_video(tmp_path / "odd.mp4", frames, fps=5), index=None)
    assert decoded.shape == (5, 34, 48, 3)
    assert np.abs(decoded[:, :33, :47].astype(int) - frames.astype(int)).mean() < 6


def test_gif_decodes_with_right_frame_count_and_size(tmp_path: Path) -> None:
    frames = _frames(6, 33, 47)
    path = write_video(tmp_path / "v.gif", frames, fps=10)
    decoded = iio.imread(path, index=None)
    assert decoded.shape == (6, 33, 47, 3)
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 6  # 256-colour palette
    assert iio.immeta(path)["duration"] == 100


def test_recorder_writes_captioned_mp4_and_gif(tmp_path: Path) -> None:
    rec = VideoRecorder(tmp_path / "eval" / "ep2.mp4", fps=10)
    for step, frame in enumerate(_frames(8, 64, 64)):
        rec.add(frame, [caption(2, step, 1.0, success=step == 7)])
    assert len(rec) == 8
    assert rec.save(gif=True) == tmp_path / "eval" / "ep2.mp4"
    assert iio.imread(tmp_path / "eval" / "ep2.mp4", index=None).shape == (8, 64, 64, 3)
    assert iio.imread(tmp_path / "eval" / "ep2.gif", index=None).shape == (8, 64, 64, 3)
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["ep2.gif", "ep2.mp4"]
    rec.reset()
    assert len(rec) == 0


def test_disabled_recorder_is_a_no_op(tmp_path: Path) -> None:
    for rec in (VideoRecorder(tmp_path / "v.mp4", enabled=False), VideoRecorder(None)):
        assert not rec.enabled
        rec.add(np.zeros((4, 4, 3), np.uint8), ["x"])
        rec.add("not even a frame")  # type: ignore[arg-type]  # no work at all when off
        assert len(rec) == 0 and rec.save(gif=True) is None
    assert list(tmp_path.iterdir()) == []


def test_caption_changes_only_the_top_left_box() -> None:
    frame = np.full((96, 128, 3), 200, np.uint8)
    out = annotate(frame, [caption(2, 17, 1.0, True)])
    assert out.shape == frame.shape and out.dtype == np.uint8
    changed = np.any(out != frame, axis=-1)
    rows, cols = np.nonzero(changed)
    assert changed.sum() > 100 and rows.max() < 96 // 2 and cols.min() == 0
    assert not changed[-10:].any()  # bottom rows untouched
    np.testing.assert_array_equal(annotate(frame, []), frame)
    assert caption(2, 17, 1.0, True) == "ep 2  step 17  return 1.0  success"
    assert caption(0, 3, -2.5) == "ep 0  step 3  return -2.5"


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8)],
)
def test_bad_frames_are_rejected_naming_the_file(tmp_path: Path, bad: np.ndarray) -> None:
    rec = VideoRecorder(tmp_path / "v.mp4")
    with pytest.raises(ValueError, match=r"v\.mp4: frame 0: expected a uint8 \(H, W, 3\)"):
        rec.add(bad)


def test_bad_paths_sizes_and_empty_videos_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.mp4"):
        VideoRecorder(tmp_path / "v.avi")
    rec = VideoRecorder(tmp_path / "v.mp4")
    rec.add(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="frame 1 has shape"):
        rec.add(np.zeros((4, 6, 3), np.uint8))
    with pytest.raises(ValueError, match="no frames"):
        VideoRecorder(tmp_path / "e.mp4").save()
    with pytest.raises(ValueError, match="must end in"):
        write_video(tmp_path / "v.webm", _frames(2, 4, 4))
    assert list(tmp_path.iterdir()) == []


def test_long_caption_shrinks_and_wraps_to_fit_small_frames() -> None:
    frame = np.full((64, 64, 3), 100, np.uint8)
    out = annotate(frame, [caption(12, 40, -123.25, False)])
    text_cols = np.nonzero(np.all(out > 200, axis=-1))[1]  # white glyph pixels
    assert text_cols.size > 0 and text_cols.max() < 62  # not clipped at the right edge
    box_rows = np.nonzero(np.any(out != frame, axis=-1))[0]
    assert box_rows.max() >= 14  # wrapped onto a second line
