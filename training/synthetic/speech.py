"""Real synthesised speech, offline: espeak-ng (``espeakng-loader``) with its own phoneme timing events.

espeak-ng reports when every word and phoneme starts in the audio it synthesises, which makes
it a ground truth for alignment tests. Debian's espeak-ng package mispronounces Mandarin, so
only the library bundled with espeakng-loader is used.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ditalker_core.extract.phonemes import espeak

_EVENT_WORD, _EVENT_END, _EVENT_PHONEME, _EVENT_LIST_TERMINATED = 1, 5, 7, 0
_CHARS_UTF8 = 1
_RATE, _PITCH = 1, 3  # espeak_PARAMETER ids


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass
class Speech:
    """Synthesised audio and espeak's phoneme intervals (seconds); '' marks a pause."""

    audio: np.ndarray
    rate: int
    phonemes: list[tuple[float, float, str, int]] = field(default_factory=list)  # start, end, IPA, text position

    @property
    def duration(self) -> float:
        return len(self.audio) / self.rate


def synthesize(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50) -> Speech:
    """Speak ``text`` with espeak-ng (``rate`` in words per minute, ``pitch`` 0-100, espeak's defaults);
    phonemes carry the 1-based character position of their word.

    espeak-ng carries state from one utterance to the next (the same text comes out a few samples different
    each time), so every call speaks in a forked child of a process that never speaks itself: the same
    arguments always give the same samples.
    """
    espeak()  # initialised once, before any fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: speak, send the result (or the error), leave without cleanup
        try:
            payload = pickle.dumps(_speak(text, voice, rate, pitch))
        except BaseException as error:  # noqa: BLE001 - handed to the parent, which raises it
            payload = pickle.dumps(error)
        with os.fdopen(write, "wb") as handle:
            handle.write(payload)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as handle:
        result = pickle.loads(handle.read())
    os.waitpid(pid, 0)
    if isinstance(result, BaseException):
        raise result
    return result


def _speak(text: str, voice: str, rate: int, pitch: int) -> Speech:
    engine = espeak()
    engine.lib.espeak_ng_SetRandSeed(ctypes.c_long(0))  # voice variants add random breath and flutter
    chunks: list[np.ndarray] = []
    events: list[tuple[int, str, int]] = []

    def on_audio(wav, count, event):
        if count > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        i = 0
        while event[i].type != _EVENT_LIST_TERMINATED:
            e = event[i]
            if e.type == _EVENT_PHONEME:
                events.append((e.audio_position, e.id.decode("utf-8", "replace"), e.text_position))
            elif e.type == _EVENT_END:
                events.append((e.audio_position, "", e.text_position))
            i += 1
        return 0

    callback = _CALLBACK(on_audio)
    data = text.encode()
    with engine.lock:
        engine.lib.espeak_SetSynthCallback(callback)
        assert engine.lib.espeak_SetVoiceByName(voice.encode()) == 0, voice
        engine.lib.espeak_SetParameter(_RATE, int(rate), 0)
        engine.lib.espeak_SetParameter(_PITCH, int(pitch), 0)
        assert engine.lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None) == 0
        engine.lib.espeak_Synchronize()
    audio = np.concatenate(chunks).astype(np.float32) / 32768.0
    speech = Speech(audio, engine.sample_rate)
    for (start, ipa, pos), (end, _, _) in zip(events, events[1:] + [(round(speech.duration * 1000), "", 0)]):
        if end > start:
            speech.phonemes.append((start / 1000, end / 1000, ipa, pos))
    return speech


def english_words(speech: Speech, text: str) -> list[tuple[str, list[tuple[float, float, str]]]]:
    """Group espeak's phonemes into the words of ``text``: [(word, [(start, end, IPA)])], pauses dropped."""
    words: dict[int, list[tuple[float, float, str]]] = {}
    for start, end, ipa, position in speech.phonemes:
        if ipa:
            words.setdefault(position, []).append((start, end, ipa))
    return [(text[position - 1:].split()[0], phones) for position, phones in sorted(words.items())]


_VOWEL_LETTERS = set("aeiouyɑəɛɤɔʊɯɨ")


def _is_vowel(ipa: str) -> bool:
    return any(c in _VOWEL_LETTERS for c in ipa)


def mandarin_syllables(speech: Speech) -> list[list[tuple[float, float, str]]]:
    """Split espeak's Mandarin phonemes into syllables (for text whose syllables all have an initial).

    A syllable starts at a consonant that follows a vowel, a nasal coda, a pause or nothing and
    precedes a vowel or glide (说 = s. w o).
    """
    phones = speech.phonemes
    starts = []
    for i, (_, _, ipa, _) in enumerate(phones):
        before = phones[i - 1][2] if i else ""
        after = phones[i + 1][2] if i + 1 < len(phones) else ""
        onset = ipa and not _is_vowel(ipa) and (_is_vowel(after) or after in ("w", "j"))
        if onset and (not before or _is_vowel(before) or before in ("n", "ŋ")):
            starts.append(i)
    return [[(s, e, ipa) for s, e, ipa, _ in phones[a:b] if ipa]
            for a, b in zip(starts, starts[1:] + [len(phones)])]


def write_wav(path: Path, audio: np.ndarray, rate: int) -> Path:
    """(N,) or (N, C) float audio -> 16-bit PCM wav with the standard library."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1 if pcm.ndim == 1 else pcm.shape[1])
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())
    return path
