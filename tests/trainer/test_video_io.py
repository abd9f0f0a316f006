"""probe/read_frames: exact frame selection (frames encode their own index), seeking, errors."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from trainer.video_io import VideoError, VideoMeta, probe, read_frames


def test_probe_reads_counts_rate_and_keyframes(index_video):
    meta = probe(index_video)
    assert (meta.num_frames, meta.width, meta.height) == (60, 32, 32)
    assert meta.fps == pytest.approx(30.0)
    assert meta.duration == pytest.approx(2.0)
    # A keyframe every 16 frames (the fixture's GOP).
    assert [meta.frame_index(k) for k in meta.keyframe_pts] == [0, 16, 32, 48]
    assert VideoMeta.from_dict(meta.to_dict()) == meta


@pytest.mark.parametrize(
    "indices",
    [
        [0, 1, 2, 3],
        [5, 10, 15, 20, 25],  # a strided clip across a keyframe
        [50, 51, 59],  # near the end: needs a seek past three keyframes
        [40, 3, 40, 17],  # any order, repeats: returned in the order asked
        [0, 33, 34, 58],  # runs separated by keyframes
    ],
)
def test_read_frames_returns_exactly_the_requested_frames(index_video, frame_index, indices):
    frames = read_frames(index_video, indices, probe(index_video))
    assert frames.shape == (len(indices), 32, 32, 3) and frames.dtype == np.uint8
    assert [frame_index(f) for f in frames] == indices


def test_read_frames_matches_a_full_decode_bit_for_bit(index_video):
    import av

    with av.open(str(index_video)) as c:
        every = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    idx = [7, 8, 21, 30, 45, 46, 47]
    for threads in (False, True):
        got = read_frames(index_video, idx, threads=threads)
        assert np.array_equal(got, np.stack([every[i] for i in idx]))


def test_indices_past_the_end_repeat_the_last_frame(index_video, frame_index):
    frames = read_frames(index_video, [58, 59, 60, 75], probe(index_video))
    assert [frame_index(f) for f in frames] == [58, 59, 59, 59]


def test_short_video(short_video):
    meta = probe(short_video)
    assert meta.num_frames == 3
    frames = read_frames(short_video, [0, 1, 2, 2], meta)
    assert [round(float(f.mean()) / 60) for f in frames] == [1, 2, 3, 3]


def test_unreadable_files_raise_video_error(corrupt_video, text_file, tmp_path):
    for path in (corrupt_video, text_file):
        with pytest.raises(VideoError, match="not a readable video") as e:
            probe(path)
        assert e.value.path == str(path) and str(path) in str(e.value)
    with pytest.raises(VideoError):
        probe(tmp_path / "missing.mp4")


def test_audio_only_file_has_no_video_stream(tmp_path):
    import av

    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 8000
        for p in [*s.encode(frame), *s.encode()]:
            c.mux(p)
    with pytest.raises(VideoError, match="no video stream"):
        probe(path)


def test_truncated_video_decodes_what_is_there_or_fails_cleanly(index_video, tmp_path):
    data = index_video.read_bytes()
    meta = probe(index_video)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    try:
        frames = read_frames(cut, [0, 55], meta)
    except VideoError:
        return  # a clean, typed failure is acceptable
    assert frames.shape == (2, 32, 32, 3)


def test_other_codecs_and_containers(tmp_path):
    """MPEG-4 Part 2 in AVI: no H.264-specific assumption in seeking or frame selection."""
    import av

    path = tmp_path / "idx.avi"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        s.options = {"g": "10", "qscale": "1"}
        for t in range(40):
            img = np.full((32, 32, 3), 20 + 5 * t, np.uint8)  # lossy codec: wider steps
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode())
    meta = probe(path)
    assert meta.num_frames == 40 and meta.fps == pytest.approx(25)
    assert meta.keyframe_pts[0] == 0 and len(meta.keyframe_pts) >= 4  # g=10 or scene cuts
    idx = [3, 12, 25, 39]
    assert [round((f.mean() - 20) / 5) for f in read_frames(path, idx, meta)] == idx


def test_variable_frame_rate_takes_the_nearest_earlier_frame(tmp_path):
    """Frames at irregular times: asking for a time with no frame gives the one before it."""
    import av

    path = tmp_path / "vfr.mp4"
    times = [0, 1, 2, 3, 6, 7, 8, 12, 13, 14]  # in 1/10 s; gaps after 3 and 8
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        s.time_base = Fraction(1, 10)
        s.options = {"crf": "0", "bf": "0"}
        for t in times:
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 10 * t, np.uint8), "rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 10)
            c.mux(s.encode(frame))
        c.mux(s.encode())
    meta = probe(path)
    # Frame indices are time-based: 15 frame slots of 1/10 s, 10 of them filled.
    assert meta.num_frames == 15 and meta.fps == pytest.approx(10)
    got = [round(f.mean() / 10) for f in read_frames(path, [0, 3, 4, 5, 6, 9, 12, 14], meta)]
    assert got == [0, 3, 3, 3, 6, 8, 12, 14]
