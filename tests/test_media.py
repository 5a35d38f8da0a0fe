import av
import numpy as np
import pytest
import torch
from training.synthetic.speech import write_wav

from ditalker_core.errors import InputError
from ditalker_core.media import frame_count, load_audio, read_video, write_video


def tone(rate: int, seconds: float = 1.0, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[np.argmax(spectrum)])


def test_load_audio_from_every_source_gives_16k_mono(tmp_path):
    rate = 22050
    mono = tone(rate)
    stereo = np.stack([mono, 0.5 * mono], axis=1)  # (N, 2)
    sources = {
        "wav file": (write_wav(tmp_path / "a.wav", stereo, rate), None),
        "path string": (str(write_wav(tmp_path / "b.wav", mono, rate)), None),
        "1-D array": (mono, rate),
        "(N, C) array": (stereo, rate),
        "(C, N) array": (stereo.T.copy(), rate),
        "int16 array": ((mono * 32767).astype(np.int16), rate),
        "tensor": (torch.from_numpy(mono), rate),
        "AUDIO dict": ({"waveform": torch.from_numpy(stereo.T.copy())[None], "sample_rate": rate}, None),
    }
    for name, (source, sample_rate) in sources.items():
        audio, out_rate = load_audio(source, sample_rate=sample_rate)
        assert out_rate == 16000, name
        assert audio.dtype == np.float32 and audio.ndim == 1, name
        assert abs(len(audio) - 16000) <= 2, name
        assert dominant_frequency(audio, 16000) == pytest.approx(440, abs=2), name
        assert 0.3 < np.abs(audio).max() < 0.55, name  # channels averaged, not summed


def test_load_audio_keeps_native_rate_on_request():
    audio, rate = load_audio(tone(44100), target_rate=None, sample_rate=44100)
    assert rate == 44100 and len(audio) == 44100


def test_load_audio_rejects_bad_input(tmp_path):
    with pytest.raises(InputError, match="sample_rate"):
        load_audio(tone(16000))
    with pytest.raises(InputError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(InputError, match="shape"):
        load_audio(np.zeros((2, 2, 100), np.float32), sample_rate=16000)
    with pytest.raises(InputError, match="waveform"):
        load_audio({"sample_rate": 16000})


def test_frame_count_is_ceil_of_duration_times_fps():
    assert frame_count(16000, 16000, 25) == 25
    assert frame_count(16001, 16000, 25) == 26
    assert frame_count(160000, 16000, 29.97) == 300  # 10 s * 2997/100 = 299.7
    assert frame_count(1, 16000, 25) == 1


@pytest.mark.parametrize("fps", [25.0, 29.97])
def test_write_read_video_round_trip_with_audio(tmp_path, fps):
    n, h, w = 12, 35, 47  # odd size: padded to even for yuv420p
    y, x = np.mgrid[0:h, 0:w]
    frames = np.stack([np.stack([(x * 5 + i * 10) % 256, y * 7 % 256, np.full_like(x, 128)], -1)
                       for i in range(n)]).astype(np.uint8)
    rate = 22050
    audio = np.zeros(int(rate * n / fps), np.float32)
    click = int(0.2 * rate)
    audio[click:click + 200] = 0.8
    path = write_video(tmp_path / "out.mp4", frames, fps, audio=audio, sample_rate=rate)

    video, read_fps = read_video(path)
    assert video.shape == (n, h + 1, w + 1, 3)
    assert read_fps == pytest.approx(fps, abs=1e-3)
    assert np.abs(video[:, :h, :w].astype(int) - frames.astype(int)).mean() < 4

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "aac"
        assert stream.codec_context.sample_rate == rate
        assert stream.codec_context.channels == 1
    decoded, decoded_rate = load_audio(path, target_rate=None)
    assert decoded_rate == rate
    onset = int(np.argmax(np.abs(decoded) > 0.3))
    assert abs(onset - click) < rate * 0.002  # no encoder-delay shift


def test_write_video_muxes_stereo_audio_dict(tmp_path):
    rate = 44100
    stereo = np.stack([tone(rate, 0.5), tone(rate, 0.5, 880)])
    path = write_video(tmp_path / "s.mp4", np.zeros((5, 16, 16, 3), np.uint8), 10,
                       audio={"waveform": torch.from_numpy(stereo)[None], "sample_rate": rate})
    with av.open(str(path)) as container:
        assert container.streams.audio[0].codec_context.channels == 2


def test_write_video_rejects_float_frames(tmp_path):
    with pytest.raises(InputError, match="uint8"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), np.float32), 25)


def test_stereo_downmix_is_the_mean_of_different_channels():
    rate = 16000
    left, right = tone(rate, 0.5, 440), tone(rate, 0.5, 1000) * 0.25
    audio, _ = load_audio(np.stack([left, right]), sample_rate=rate)
    np.testing.assert_allclose(audio, (left + right) / 2, atol=1e-7)
