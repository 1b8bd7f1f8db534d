"""`fleet bench media-codecs` measures what it says: sizes from the real encoders, errors from decoding."""

from benchmarks.media_codecs import bench_media_codecs


def test_the_codec_bench_decodes_what_it_encoded_and_compares_it_with_the_frames():
    result = bench_media_codecs(episodes=2, frames=10, size=32, noise=2.0)
    for rows in (result.camera_like, result.noise_free):
        zstd, crf10, crf23 = rows
        assert zstd.mean_abs_error == 0  # lossless: decoded bytes are the frames
        assert 0 < crf10.mean_abs_error <= crf23.mean_abs_error < 8  # lossy, more so at the higher CRF
        assert crf23.kib_per_episode < crf10.kib_per_episode
    # sensor noise is what zstd cannot squeeze out; the simulator's renders it can
    assert result.camera_like[0].kib_per_episode > 10 * result.noise_free[0].kib_per_episode
