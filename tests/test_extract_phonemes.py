import json
import logging
import math
import sys

import numpy as np
import pytest
import torch
from training.synthetic.speech import english_words, mandarin_syllables, synthesize, write_wav
from tiny_models import save_tiny_wav2vec2

from ditalker_core.errors import InputError, MissingModelError
from ditalker_core.extract import phonemes
from ditalker_core.extract.__main__ import main
from ditalker_core.extract.phonemes import (Aligner, PhonemeTable, english_phonemes, extract_phonemes,
                                            frame_phonemes, ipa_to_arpabet, mandarin_phonemes)

FPS = 25
ENGLISH = ["Hello world, the quick brown fox jumps over the lazy dog.",
           "She sells sea shells by the sea shore. My friend made a big pot of soup."]
MANDARIN = ["你好世界，今天天气很好。", "他说明天去北京开会。"]


@pytest.fixture(scope="module")
def table():
    return PhonemeTable.load()


@pytest.fixture(scope="module")
def wav2vec2(tmp_path_factory):
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("wav2vec2"))


def frames_within_one_frame(ours, truth, duration, silence):
    """Split frames into (pause ok, pause total, speech ok, speech total).

    ``truth`` is [(start, end, allowed ids or None to skip)]; uncovered time is silence. A frame
    at t is correct when its id sounds somewhere in (t - 1 frame, t + 1 frame).
    """
    truth = sorted(truth)
    spans = list(truth)
    edges = [0.0] + [t for s, e, _ in truth for t in (s, e)] + [duration]
    spans += [(a, b, {silence}) for a, b in zip(edges[::2], edges[1::2]) if b > a]
    counts = np.zeros(4, int)
    for k, label in enumerate(ours):
        t = k / FPS
        here = [ids for s, e, ids in spans if s <= t < e]
        if here and here[0] is None:
            continue
        near = set().union(*[ids for s, e, ids in spans if ids and s < t + 1 / FPS and e > t - 1 / FPS])
        slot = 0 if here and here[0] == {silence} else 2
        counts[slot] += label in near
        counts[slot + 1] += 1
    return counts


def test_table_fits_the_official_embedding(table):
    assert table.size <= 75 and table.padding == 74
    assert table["SIL"] == table.silence == 31  # StyleTalk ids kept for English
    assert table["AA"] == 0 and table["ZH"] == 40
    assert len({table[s] for s in ("z", "c", "j", "q", "x", "zh", "ch", "sh", "r")}) == 9
    assert table["b"] == table["B"] and table["i-"] == table["Y"]
    with pytest.raises(InputError, match="not in the phoneme table"):
        table["QQ"]


def test_custom_table_replaces_the_bundled_one(tmp_path):
    custom = tmp_path / "authors.json"
    custom.write_text(json.dumps({"ids": {"sil": 0, "AH": 1, "pad": 9}, "aliases": {"a": "AH"},
                                  "silence": "sil", "padding": "pad"}))
    table = PhonemeTable.load(custom)
    assert (table.silence, table.padding, table["a"], table.size) == (0, 9, 1, 10)
    result = {"segments": [{"words": [{"word": "a", "start": 0.04, "end": 0.12}]}]}
    assert frame_phonemes(result, 5, FPS, "en", table) == [0, 1, 1, 0, 0]
    (tmp_path / "bad.json").write_text(json.dumps({"ids": {"a": 1}}))
    with pytest.raises(InputError, match="malformed"):
        PhonemeTable.load(tmp_path / "bad.json")


def test_windows_match_official_get_audio_window():
    from ditalker_core.pipeline.conditioning import phoneme_windows

    windows = phoneme_windows([1, 2, 3], padding=74)
    assert windows.dtype == torch.long and windows.shape == (3, 11)
    assert windows[0].tolist() == [74] * 5 + [1, 2, 3] + [74] * 3
    assert windows[2].tolist() == [74] * 3 + [1, 2, 3] + [74] * 5


def test_english_g2p_dictionary_and_espeak_fallback(table):
    assert [p for p, _ in english_phonemes("Hello,")] == ["HH", "AH", "L", "OW"]
    weights = dict(english_phonemes("sofa"))
    assert weights["OW"] > weights["AH"]  # stressed vowel outlasts the schwa
    for oov in ("zorblaxian", "42"):  # not in the CMU dictionary: espeak-ng spells it out
        phones = [p for p, _ in english_phonemes(oov)]
        assert len(phones) >= 4 and all(table[p] >= 0 for p in phones)
    assert english_phonemes("—") == []
    assert [p for p, _ in ipa_to_arpabet("ðɪs ɪz ɐ tˈɛst")] == ["DH", "IH", "S", "IH", "Z", "AH", "T", "EH", "S", "T"]


def test_mandarin_g2p_initials_and_finals(table):
    cases = {"你": ["n", "i"], "双": ["sh", "u-", "ang"], "日": ["r", "-i"], "去": ["q", "ü"], "云": ["ü", "-n"],
             "学": ["x", "ü-", "ê"], "贵": ["g", "u-", "ei"], "安": ["an"], "嗯": ["N"]}
    for char, expected in cases.items():
        phones = mandarin_phonemes(char)
        assert [p for p, _ in phones] == expected, char
        assert all(table[p] >= 0 for p, _ in phones)


def test_ipa_stress_marks_reach_only_the_next_vowel():
    assert phonemes.ipa_to_arpabet("bəˈtɑ") == [("B", 0), ("AH", 0), ("T", 0), ("AA", 1)]
    assert phonemes.ipa_to_arpabet("ˌkætˈdɔɡ") == [("K", 0), ("AE", 2), ("T", 0), ("D", 0), ("AO", 1), ("G", 0)]


def test_an_unknown_pinyin_final_is_the_noise_phoneme(table, monkeypatch, caplog):
    monkeypatch.setattr(phonemes, "_FINALS", {})
    with caplog.at_level(logging.WARNING):
        assert [p for p, _ in mandarin_phonemes("好")] == ["h", "NSN"]
    assert "unknown pinyin final 'ao'" in caplog.text and table["NSN"] >= 0


def test_a_transcript_file_is_read_as_text_or_as_whisperx_json(tmp_path):
    (tmp_path / "t.txt").write_text("big cat", encoding="utf-8")
    (tmp_path / "t.json").write_text(json.dumps({"segments": []}), encoding="utf-8")
    assert phonemes._read_transcript(str(tmp_path / "t.txt")) == "big cat"
    assert phonemes._read_transcript(str(tmp_path / "t.json")) == {"segments": []}
    assert phonemes._read_transcript("big cat") == "big cat" and phonemes._read_transcript(None) is None


def test_unaligned_words_share_the_gap_by_length(table):
    words = [{"word": "hello", "start": 0.0, "end": 0.4}, {"word": "to"}, {"word": "everybody"},
             {"word": "world", "start": 1.6, "end": 2.0}]
    timed = phonemes.timed_words({"segments": [{"start": 0, "end": 2.0, "words": words}]}, "en", 2.0)
    spans = [(round(s, 3), round(e, 3)) for s, e, _ in timed]
    assert spans[0] == (0.0, 0.4) and spans[3] == (1.6, 2.0)
    assert spans[1][0] == 0.4 and spans[2][1] == pytest.approx(1.6) and spans[1][1] == spans[2][0]
    assert spans[2][1] - spans[2][0] > 3 * (spans[1][1] - spans[1][0])  # "everybody" is much longer than "to"
    # one unaligned word between aligned ones fills exactly their gap; a later segment's unaligned first word
    # starts at its own segment's start, not at the previous segment's last word
    one = [{"word": "hello", "start": 0.0, "end": 0.5}, {"word": "to"}, {"word": "big", "start": 1.0, "end": 1.5},
           {"word": "cat", "start": 2.0, "end": 2.5}]
    two = [{"word": "to"}, {"word": "world", "start": 4.0, "end": 4.5}]
    assert phonemes.timed_words({"segments": [{"start": 0.0, "end": 1.0}]}, "en", 1.0) == []  # nothing said
    timed = phonemes.timed_words({"segments": [{"start": 0, "end": 2.5, "words": one},
                                               {"start": 3.0, "end": 4.5, "words": two}]}, "en", 5.0)
    assert [(round(s, 3), round(e, 3)) for s, e, _ in timed] == [(0.0, 0.5), (0.5, 1.0), (1.0, 1.5), (2.0, 2.5),
                                                                 (3.0, 4.0), (4.0, 4.5)]
    # alignment failed entirely: the segment text is spread over the segment
    frames = frame_phonemes({"segments": [{"text": "big cat", "start": 1.0, "end": 2.0}]}, 75, FPS, "en", table)
    assert set(frames[:25]) == set(frames[50:]) == {table.silence}
    assert table["B"] in frames[25:30] and table["T"] in frames[45:50]


@pytest.mark.parametrize("text", ENGLISH)
def test_english_frames_match_espeak_timing(text, table):
    """Word spans from espeak's events in, phoneme frames within one frame of espeak's own phonemes out."""
    speech = synthesize(text, "en-us")
    words, truth, agreeing = [], [], 0
    for word, phones in english_words(speech, text):
        words.append({"word": word, "start": phones[0][0], "end": phones[-1][1], "score": 1.0})
        spoken = [(s, e, [p for p, _ in ipa_to_arpabet(ipa)]) for s, e, ipa in phones]
        same = [p for _, _, ps in spoken for p in ps] == [p for p, _ in english_phonemes(word)]
        agreeing += same
        for s, e, ps in spoken:  # compare only words the CMU dictionary pronounces like espeak
            step = (e - s) / len(ps)
            truth += [(s + i * step, s + (i + 1) * step, {table[p]} if same else None) for i, p in enumerate(ps)]
    assert agreeing >= 0.8 * len(words)
    result = {"segments": [{"text": text, "start": 0.0, "end": speech.duration, "words": words}]}
    ours = frame_phonemes(result, math.ceil(speech.duration * FPS), FPS, "en", table)
    pause_ok, pauses, speech_ok, spoken = frames_within_one_frame(ours, truth, speech.duration, table.silence)
    assert pauses >= 5 and pause_ok == pauses
    assert spoken >= 50 and speech_ok >= 0.95 * spoken


@pytest.mark.parametrize("text", MANDARIN)
def test_mandarin_frames_match_espeak_timing(text, table):
    """Per character: initial frames and final frames within one frame of espeak's syllable onsets/rhymes."""
    speech = synthesize(text, "cmn")
    chars = [c for c in text if "\u4e00" <= c <= "\u9fff"]
    syllables = mandarin_syllables(speech)
    assert len(syllables) == len(chars)
    words, truth = [], []
    for char, phones in zip(chars, syllables):
        units = mandarin_phonemes(char)
        words.append({"word": char, "start": phones[0][0], "end": phones[-1][1], "score": 1.0})
        truth.append((phones[0][0], phones[0][1], {table[units[0][0]]}))
        truth.append((phones[1][0], phones[-1][1], {table[u] for u, _ in units[1:]}))
    words.append({"word": "。"})  # punctuation WhisperX could not align: no phonemes, no time
    result = {"segments": [{"text": text, "start": 0.0, "end": speech.duration, "words": words}]}
    ours = frame_phonemes(result, math.ceil(speech.duration * FPS), FPS, "zh", table)
    pause_ok, pauses, speech_ok, spoken = frames_within_one_frame(ours, truth, speech.duration, table.silence)
    assert pauses >= 1 and pause_ok == pauses
    assert spoken >= 40 and speech_ok >= 0.95 * spoken


def test_whisperx_align_runs_on_real_speech(wav2vec2, table):
    text = ENGLISH[0]
    speech = synthesize(text)
    aligner = Aligner.from_pretrained(wav2vec2, "en")
    frames = extract_phonemes(speech.audio, text, "en", aligner, fps=30, sample_rate=speech.rate)
    bin_folder = wav2vec2.parent / "wav2vec2_bin"  # the same model as pytorch_model.bin loads too
    if not bin_folder.exists():  # (transformers 5 writes safetensors whatever save_pretrained is told)
        from safetensors.torch import load_file

        bin_folder.mkdir()
        for extra in wav2vec2.iterdir():
            if extra.suffix != ".safetensors":
                (bin_folder / extra.name).write_bytes(extra.read_bytes())
        torch.save(load_file(wav2vec2 / "model.safetensors"), bin_folder / "pytorch_model.bin")
    assert not (bin_folder / "model.safetensors").exists()
    assert extract_phonemes(speech.audio, text, "en", Aligner.from_pretrained(bin_folder, "en"), fps=30,
                            sample_rate=speech.rate).ids == frames.ids
    words = [w for segment in frames.result["segments"] for w in segment["words"]]
    assert [w["word"] for w in words] == text.split()
    for word in words:  # random weights: timings are arbitrary, but real and inside the clip
        assert 0.0 <= word["start"] <= word["end"] <= speech.duration + 1e-3
    assert len(frames.ids) == math.ceil(speech.duration * 30)
    assert set(frames.ids) - {table.silence}


def test_without_aligner_text_is_spread_evenly(table, caplog):
    speech = synthesize("big cat")
    with caplog.at_level(logging.WARNING):
        frames = extract_phonemes(speech.audio, "big cat", "en", sample_rate=speech.rate)
    assert "pip install --no-deps whisperx" in caplog.text and "and pass a Wav2Vec2 CTC folder (" in caplog.text
    assert frames.ids[0] == table["B"] and frames.ids[-1] == table["T"]
    assert table["K"] in frames.ids


def test_missing_whisperx_and_models_say_what_to_install(wav2vec2, tmp_path, monkeypatch):
    with pytest.raises(MissingModelError, match="models/ditalker/wav2vec2"):
        Aligner.from_pretrained(tmp_path / "none", "zh")
    monkeypatch.setitem(sys.modules, "whisperx", None)
    with pytest.raises(ImportError, match="pip install --no-deps whisperx"):
        Aligner.from_pretrained(wav2vec2, "en")


def test_no_transcript_without_whisperx_asr_asks_for_one(monkeypatch):
    real = phonemes.importlib.util.find_spec
    monkeypatch.setattr(phonemes.importlib.util, "find_spec", lambda name: None if name == "torchaudio" else real(name))
    with pytest.raises(InputError, match=r"no transcript given; .*\(pip install whisperx, which needs torchaudio\) "
                                          r"and pass a faster-whisper model folder as the ASR model"):
        extract_phonemes(np.zeros(16000, np.float32), None, "en", sample_rate=16000)


@pytest.mark.parametrize("device, compute_type", [("cpu", "int8"), ("cuda:0", "float16")])
def test_asr_transcribes_with_the_given_model_language_and_device(monkeypatch, device: str, compute_type: str):
    """The WhisperX ASR call (its models are not available offline, so WhisperX is a recording stand-in)."""
    calls = []

    class Model:
        def transcribe(self, audio, batch_size, language):
            calls.append(("transcribe", len(audio), batch_size, language))
            return {"segments": [{"text": "hi", "start": 0.0, "end": 0.5}], "language": language}

    whisperx = type(sys)("whisperx")
    whisperx.load_model = lambda *args, **kwargs: calls.append(("load", args, kwargs)) or Model()
    monkeypatch.setitem(sys.modules, "whisperx", whisperx)
    monkeypatch.setattr(phonemes.importlib.util, "find_spec", lambda name: object())  # torchaudio, faster_whisper
    segments = phonemes.transcribe(np.zeros(800, np.float32), "models/fw-tiny", "zh", device)
    assert segments == [{"text": "hi", "start": 0.0, "end": 0.5}]
    assert calls == [("load", ("models/fw-tiny", device), {"compute_type": compute_type, "language": "zh"}),
                     ("transcribe", 800, 8, "zh")]
    for missing in ("torchaudio", "faster_whisper"):
        monkeypatch.setattr(phonemes.importlib.util, "find_spec", lambda name, gone=missing: None if name == gone
                            else object())
        with pytest.raises(InputError, match="no transcript given; pass the spoken text as the transcript"):
            phonemes.transcribe(np.zeros(800, np.float32), "models/fw-tiny", "zh", device)
    monkeypatch.setattr(phonemes.importlib.util, "find_spec", lambda name: object())
    with pytest.raises(InputError, match="install the full WhisperX"):
        phonemes.transcribe(np.zeros(800, np.float32), None, "zh", device)


def test_a_transcript_in_the_other_language_is_named():
    from ditalker_core.extract.phonemes import language_mismatch

    assert language_mismatch("hello 你", "zh") == ("the transcript is mostly Latin letters but language is zh: "
                                                   "set language to en")
    assert language_mismatch("你好 a", "en") == ("the transcript is mostly Chinese characters but language is en: "
                                                "set language to zh")
    assert language_mismatch("你好 ab", "en") is None and language_mismatch("ab 你好", "zh") is None  # a tie is fine
    assert language_mismatch("hello", "en") is None and language_mismatch("你好", "zh") is None


def test_cli_writes_official_json(wav2vec2, tmp_path, table):
    speech = synthesize(MANDARIN[0], "cmn")
    wav = write_wav(tmp_path / "zh.wav", speech.audio, speech.rate)
    out = tmp_path / "ph" / "zh.json"
    assert main(["phonemes", str(wav), "--out", str(out), "--transcript", MANDARIN[0], "--language", "zh",
                 "--align-model", str(wav2vec2), "--fps", "30", "--device", "cpu"]) == 0
    ids = json.loads(out.read_text())
    assert len(ids) == math.ceil(speech.duration * 30) and all(isinstance(i, int) for i in ids)
    spoken = {table[u] for char in MANDARIN[0] for u, _ in phonemes.word_phonemes(char, "zh")}
    assert set(ids) - {table.silence} and set(ids) <= spoken | {table.silence}


def test_cli_accepts_a_user_timed_whisperx_json(tmp_path, table):
    wav = write_wav(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    timings = {"segments": [{"text": "big cat", "words": [{"word": "big", "start": 0.2, "end": 0.5},
                                                          {"word": "cat", "start": 0.6, "end": 0.9}]}]}
    (tmp_path / "t.json").write_text(json.dumps(timings))
    out = tmp_path / "ids.json"
    main(["phonemes", str(wav), "--out", str(out), "--transcript", str(tmp_path / "t.json")])
    ids = json.loads(out.read_text())
    assert ids == frame_phonemes(timings, 25, FPS, "en", table)
    assert ids[:5] == [table.silence] * 5 and ids[5] == table["B"] and ids[15] == table["K"]
