"""Emotion prompt -> T5 tokens (with the lazy, on-disk cache) and reference image -> CLIP embedding."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from tiny_models import save_tiny_clip_vision, save_tiny_t5

from ditalker_core.errors import InputError, MissingModelError
from ditalker_core.extract import emotion, reference

@pytest.fixture(scope="module")
def t5_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("easyanimate")
    save_tiny_t5(root)
    return root


@pytest.fixture
def load_count(monkeypatch):
    """Counts how often T5 is built."""
    calls = []
    real = emotion.load_t5

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(emotion, "load_t5", counting)
    return calls


def test_build_prompt_follows_the_paper_template():
    assert emotion.build_prompt("happy") == "This person is happy and talks"
    assert emotion.build_prompt(" Surprise ") == "This person is surprised and talks"
    assert emotion.build_prompt("sad", subject="woman") == "This woman is sad and talks"
    assert emotion.build_prompt("angry", lowercase=True) == "this person is angry and talks"
    assert emotion.build_prompt("This man is very calm and talks") == "This man is very calm and talks"
    with pytest.raises(InputError):
        emotion.build_prompt("  ")
    with pytest.raises(InputError):
        emotion.build_prompt("happy", subject="dog")


def test_cache_returns_fresh_tokens_and_never_builds_t5_on_a_hit(t5_root, tmp_path, load_count):
    from transformers import AutoTokenizer, T5EncoderModel

    prompt = emotion.build_prompt("happy")
    encoder = emotion.T5PromptEncoder(t5_root, cache_dir=tmp_path / "cache")
    assert load_count == []  # constructing the cache never builds T5
    tokens = encoder(prompt)
    assert len(load_count) == 1
    assert tokens.embeds.shape == (1, emotion.DEFAULT_MAX_LENGTH, 16) and tokens.mask.dtype == torch.int64

    tokenizer = AutoTokenizer.from_pretrained(t5_root / "tokenizer")
    model = T5EncoderModel.from_pretrained(t5_root / "text_encoder").eval()
    ids = tokenizer(prompt, padding="max_length", max_length=120, truncation=True, return_tensors="pt")
    with torch.no_grad():
        fresh = model(ids.input_ids, attention_mask=ids.attention_mask)[0]
    assert torch.equal(tokens.mask, ids.attention_mask) and int(tokens.mask.sum()) == 7  # 6 words + </s>
    torch.testing.assert_close(tokens.embeds, fresh, atol=0, rtol=0)

    # A new cache object (a new session) reads the file and never builds T5.
    again = emotion.T5PromptEncoder(t5_root, cache_dir=tmp_path / "cache")(prompt)
    assert len(load_count) == 1
    assert torch.equal(again.embeds, tokens.embeds) and torch.equal(again.mask, tokens.mask)
    encoder(prompt)
    assert len(load_count) == 1

    # New prompt or new max length: a miss, encoded by the T5 that is already loaded.
    assert not torch.equal(encoder(emotion.build_prompt("sad")).embeds, tokens.embeds)
    assert len(load_count) == 1
    assert emotion.T5PromptEncoder(t5_root, tmp_path / "cache", max_length=32)(prompt).embeds.shape[1] == 32
    assert len(load_count) == 2


def test_cache_key_follows_the_encoder_files(t5_root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(t5_root, copy)
    original = emotion.T5PromptEncoder(t5_root).cache_key("x")
    assert emotion.T5PromptEncoder(copy).cache_key("x") != original  # another path
    before = emotion.T5PromptEncoder(copy).cache_key("x")
    config = copy / "text_encoder" / "config.json"
    changed = json.loads(config.read_text())
    changed["num_heads"] += 1
    config.write_text(json.dumps(changed))
    assert emotion.T5PromptEncoder(copy).cache_key("x") != before
    assert emotion.T5PromptEncoder(t5_root, dtype=torch.bfloat16).cache_key("x") != original


def test_missing_t5_files_name_folder_and_source(tmp_path):
    with pytest.raises(MissingModelError) as error:
        emotion.T5PromptEncoder(tmp_path)
    assert "models/text_encoders/" in str(error.value) and "EasyAnimateV3-XL-2-InP-512x512" in str(error.value)
    (tmp_path / "text_encoder").mkdir()
    (tmp_path / "text_encoder" / "config.json").write_text("{}")
    (tmp_path / "text_encoder" / "model.safetensors").write_bytes(b"")
    with pytest.raises(MissingModelError, match="tokenizer"):
        emotion.find_t5(tmp_path)


def test_emotion_cli_writes_tokens_and_mask(t5_root, tmp_path, load_count):
    from ditalker_core.extract.__main__ import main

    out = tmp_path / "happy.safetensors"
    args = ["emotion", "happy", "--out", str(out), "--t5", str(t5_root), "--cache", str(tmp_path / "c")]
    assert main(args) == 0
    saved = load_file(out)
    assert saved["prompt_embeds"].shape == (1, 120, 16)
    assert int(saved["prompt_attention_mask"].sum()) == 7
    assert main(args) == 0 and len(load_count) == 1  # second run: cache hit


# --- reference image -> CLIP image embedding ------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return save_tiny_clip_vision(tmp_path_factory.mktemp("easyanimate_clip") / "image_encoder")


def test_reference_embedding_matches_the_official_recipe(clip_folder):
    model, processor = reference.load_clip_vision(clip_folder.parent)  # EasyAnimate root also accepted
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    embeds = reference.encode_reference(picture, model, processor, size=(64, 64))
    assert embeds.shape == (1, 12)

    # The official pipeline: PIL resize to the video size, CLIPImageProcessor, image_embeds.
    resized = Image.fromarray(picture).resize((64, 64))
    with torch.no_grad():
        official = model(**processor(images=resized, return_tensors="pt")).image_embeds
    torch.testing.assert_close(embeds, official, atol=0, rtol=0)

    # ComfyUI IMAGE (1, H, W, 3) float in [0, 1] gives the same embedding as the uint8 array.
    comfy = torch.from_numpy(picture).float()[None] / 255.0
    torch.testing.assert_close(reference.encode_reference(comfy, model, processor, (64, 64)), embeds)
    other = reference.encode_reference(255 - picture, model, processor, (64, 64))
    assert not torch.allclose(other, embeds)
    with pytest.raises(InputError):
        reference.encode_reference(torch.zeros(2, 8, 8, 3), model, processor)


def test_missing_clip_folder_names_folder_and_source(tmp_path):
    with pytest.raises(MissingModelError) as error:
        reference.load_clip_vision(tmp_path)
    assert "models/clip_vision/" in str(error.value) and "image_encoder" in str(error.value)
