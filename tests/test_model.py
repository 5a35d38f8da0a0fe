"""The tiny model on CPU: zero-init promise, gradients, null conditions, shapes, checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ditalker_core.checkpoints import load_transformer, save_checkpoint
from ditalker_core.errors import InputError, MissingModelError
from ditalker_core.models import DiTalkerTransformer3DModel, get_config, module_group
from ditalker_core.models.audio_projection import AudioProjection

BACKBONE_ONLY = dict(enable_audio_attention=False, enable_style_attn=False, enable_scale_adapter=False,
                     enable_eca=False, enable_pose_adapter=False, enable_repa=False)


CONTEXT_PARALLEL_FRAMES = 4  # latent frames of the context-parallel check: 2 per process


def tiny(**overrides) -> DiTalkerTransformer3DModel:
    torch.manual_seed(0)
    return DiTalkerTransformer3DModel(**get_config("tiny", **overrides)).eval()


@torch.no_grad()
def randomize(model: torch.nn.Module, groups: set[str] | None = None, seed: int = 1) -> None:
    """Give every parameter (of ``groups``) non-trivial values, zero-initialised layers included."""
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in model.named_parameters():
        if groups is None or module_group(name) in groups:
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)


def inputs(model: DiTalkerTransformer3DModel, batch: int = 1, frames: int = 2, height: int = 4, width: int = 6,
           seed: int = 2) -> dict[str, torch.Tensor]:
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(batch, 4, frames, height, width, generator=g),
        timestep=torch.randint(0, 1000, (batch,), generator=g),
        inpaint_latents=torch.randn(batch, 8, frames, height, width, generator=g),
        encoder_hidden_states=torch.randn(batch, 5, cfg.caption_channels, generator=g),
        encoder_attention_mask=torch.tensor([[1, 1, 1, 0, 0]] * batch),
        clip_encoder_hidden_states=torch.randn(batch, cfg.clip_embed_dim, generator=g),
        audio_encoder_hidden_states=torch.randn(batch, cfg.audio_frames, cfg.audio_window, cfg.audio_feature_dim,
                                                generator=g),
        phoneme_win=torch.randint(0, cfg.phoneme_vocab, (batch, cfg.audio_frames, cfg.phoneme_window), generator=g),
        style_clip=torch.randn(batch, cfg.style_max_len, cfg.exp_dim, generator=g),
        pixel_values_pose=torch.rand(batch, 3, 4 * frames, 4 * height, 4 * width, generator=g),
    )


def test_tiny_has_every_module_under_10m_parameters() -> None:
    model = tiny()
    groups = {module_group(n) for n, _ in model.named_parameters()}
    assert groups == {"backbone", "audio_projection", "asfm.audio_attention", "asfm.style_attention", "eca",
                      "seem.style", "scale_adapter", "pose_adapter", "repa_head"}
    assert sum(p.numel() for p in model.parameters()) < 10_000_000


def test_fresh_ditalker_modules_keep_the_backbone_output() -> None:
    model = tiny()
    randomize(model, {"backbone"})
    backbone = tiny(**BACKBONE_ONLY)
    missing = backbone.load_state_dict({k: v for k, v in model.state_dict().items()
                                        if module_group(k) == "backbone"}, strict=True)
    assert not missing.missing_keys
    x = inputs(model)
    with torch.no_grad():
        full = model(**x).sample
        bare = backbone(**{k: x[k] for k in ("hidden_states", "timestep", "inpaint_latents",
                                             "encoder_hidden_states", "encoder_attention_mask",
                                             "clip_encoder_hidden_states")}).sample
    assert full.abs().max() > 0.1
    torch.testing.assert_close(full, bare, rtol=0, atol=1e-6)


def test_gradients_reach_every_ditalker_module_once_perturbed() -> None:
    model = tiny()
    randomize(model)
    model.train()
    out = model(**inputs(model, batch=2), repa_index=0)
    (out.sample.square().mean() + out.repa.square().mean()).backward()
    dead = [n for n, p in model.named_parameters()
            if module_group(n) != "backbone" and (p.grad is None or p.grad.abs().max() == 0)]
    assert not dead, dead


@pytest.mark.parametrize("dropped", ["audio_encoder_hidden_states", "phoneme_win", "style_clip",
                                     "pixel_values_pose", "encoder_hidden_states", "clip_encoder_hidden_states",
                                     "all"])
def test_each_condition_can_be_dropped(dropped: str) -> None:
    model = tiny()
    randomize(model)
    x = inputs(model)
    conditions = ["audio_encoder_hidden_states", "phoneme_win", "style_clip", "pixel_values_pose",
                  "encoder_hidden_states", "clip_encoder_hidden_states"]
    without = {k: v for k, v in x.items() if k not in (conditions if dropped == "all" else [dropped])}
    if "encoder_hidden_states" not in without:
        without.pop("encoder_attention_mask")
    with torch.no_grad():
        full, null = model(**x).sample, model(**without).sample
    assert torch.isfinite(null).all() and null.shape == full.shape
    assert (full - null).abs().max() > 1e-4, "dropping a condition must change the prediction"


def test_null_conditions_are_the_official_unconditional_inputs() -> None:
    """None = zeros for audio, phonemes, style and pose; CLIP None = zero embedding with a zero mask."""
    model = tiny()
    randomize(model)
    x = inputs(model)
    zeros = dict(x, audio_encoder_hidden_states=torch.zeros_like(x["audio_encoder_hidden_states"]),
                 phoneme_win=torch.zeros_like(x["phoneme_win"]), style_clip=torch.zeros_like(x["style_clip"]),
                 pixel_values_pose=torch.zeros_like(x["pixel_values_pose"]),
                 clip_encoder_hidden_states=torch.zeros_like(x["clip_encoder_hidden_states"]),
                 clip_attention_mask=torch.zeros(1, model.config.clip_tokens))
    nones = {k: v for k, v in x.items() if k not in ("audio_encoder_hidden_states", "phoneme_win", "style_clip",
                                                      "pixel_values_pose", "clip_encoder_hidden_states")}
    with torch.no_grad():
        torch.testing.assert_close(model(**nones).sample, model(**zeros).sample, rtol=0, atol=1e-6)


@pytest.mark.parametrize("frames,height,width", [(1, 4, 4), (2, 4, 6), (5, 6, 4), (16, 2, 4)])
def test_frame_counts_and_non_square_sizes(frames: int, height: int, width: int) -> None:
    model = tiny()
    with torch.no_grad():
        out = model(**inputs(model, batch=2, frames=frames, height=height, width=width), repa_index=0)
    assert out.sample.shape == (2, 8, frames, height, width)
    assert out.repa.shape == (2, height * width // 4, model.config.repa_dim)


def test_wrong_audio_length_is_explained() -> None:
    model = tiny()
    x = inputs(model)
    x["audio_encoder_hidden_states"] = x["audio_encoder_hidden_states"][:, :10]
    with pytest.raises(InputError, match="exactly 32 video frames"):
        model(**x)


def test_one_attention_backend_switch_reaches_every_block_attention() -> None:
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry
    from diffusers.models.attention_processor import Attention

    from ditalker_core.pipeline.speed import Speedups, applied

    model = tiny()
    randomize(model)
    x = inputs(model)
    with torch.no_grad():
        native = model(**x).sample
    attentions = [m for m in model.transformer_blocks.modules() if isinstance(m, Attention)]
    # per block: frame-wise self, caption/CLIP, audio, style, emotion, and the motion module's two frame attentions
    assert len(attentions) == len(model.transformer_blocks) * 7
    with applied(model, Speedups(attention="_native_math")):
        assert {a.processor._attention_backend for a in attentions} == {AttentionBackendName._NATIVE_MATH}
        with torch.no_grad():
            math = model(**x).sample
    # diffusers makes a set backend the process-wide default; the run's settings give the old default back
    assert _AttentionBackendRegistry.get_active_backend()[0] == AttentionBackendName.NATIVE
    assert {a.processor._attention_backend for a in attentions} == {None}
    # One attention agrees to 5e-7; eight randomized blocks amplify that to a few 1e-4.
    torch.testing.assert_close(math, native, rtol=0, atol=1e-3 * float(native.abs().max()))


def test_first_block_cache_threshold_zero_is_uncached_and_a_skip_replays_the_last_step() -> None:
    from diffusers import FirstBlockCacheConfig

    model = tiny()
    randomize(model)
    assert model.num_skips > 0  # U-ViT long skips: the part a cached step must not add again
    x, y = inputs(model), inputs(model, seed=3)
    with torch.no_grad():
        plain_x, plain_y = model(**x).sample, model(**y).sample
    tail_calls = []
    model.transformer_blocks[-1].ff.register_forward_hook(lambda *_: tail_calls.append(1))

    model.enable_cache(FirstBlockCacheConfig(threshold=0.0))
    with torch.no_grad(), model.cache_context("cond"):
        assert torch.equal(model(**x).sample, plain_x)
        assert torch.equal(model(**y).sample, plain_y)
    assert len(tail_calls) == 2
    model.disable_cache()

    model.enable_cache(FirstBlockCacheConfig(threshold=1e9))  # every step after the first is skipped
    with torch.no_grad(), model.cache_context("cond"):
        assert torch.equal(model(**x).sample, plain_x)
        replay = model(**x).sample
    assert len(tail_calls) == 3  # the replay ran only the first block
    # head output + (last output - head output): the last output up to rounding, no long skip added twice
    torch.testing.assert_close(replay, plain_x, rtol=0, atol=1e-6 * float(plain_x.abs().max()))
    model.disable_cache()


def test_gradient_checkpointing_computes_the_plain_forward() -> None:
    model = tiny()
    randomize(model)
    x = inputs(model, batch=2)

    def loss_and_grads() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        out = model(**x, repa_index=0)
        loss = out.sample.square().mean() + out.repa.square().mean()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.train()
    for module in model.modules():  # SEEM dropout would draw different masks in the two runs
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        elif isinstance(module, torch.nn.MultiheadAttention):
            module.dropout = 0.0
    plain_loss, plain_grads = loss_and_grads()
    model.enable_gradient_checkpointing()
    ckpt_loss, ckpt_grads = loss_and_grads()
    torch.testing.assert_close(ckpt_loss, plain_loss, rtol=0, atol=1e-6)
    assert plain_grads.keys() == ckpt_grads.keys()
    for name in plain_grads:
        torch.testing.assert_close(ckpt_grads[name], plain_grads[name], rtol=1e-5, atol=1e-6, msg=name)


# ---------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------
def test_save_load_round_trip_is_exact(tmp_path) -> None:
    model = tiny()
    randomize(model)
    path = tmp_path / "ditalker_tiny.safetensors"
    save_checkpoint(model, path)
    loaded = load_transformer(path)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(model.config)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x = inputs(model)
    with torch.no_grad():
        assert torch.equal(model(**x).sample, loaded(**x).sample)


def test_easyanimate_file_loads_with_only_the_ditalker_modules_missing(tmp_path) -> None:
    backbone = tiny(**BACKBONE_ONLY)
    randomize(backbone)
    path = tmp_path / "diffusion_pytorch_model.safetensors"  # upstream file: plain tensors, no metadata
    save_file({k: v for k, v in backbone.state_dict().items() if not k.endswith(".pe")}, str(path))
    model = load_transformer(path, config=get_config("tiny"))
    for name, value in backbone.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    pth = tmp_path / "transformer.pth"
    torch.save(backbone.state_dict(), pth)
    assert torch.equal(load_transformer(pth, config=get_config("tiny")).proj_out.weight, backbone.proj_out.weight)


def test_bad_checkpoints_fail_with_the_keys_named(tmp_path) -> None:
    model = tiny()
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(".pe")}
    missing = dict(state)
    missing.pop("transformer_blocks.3.attn1.to_q.weight")
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(InputError, match=r"1 missing keys \(backbone 1; e.g. transformer_blocks.3.attn1.to_q"):
        load_transformer(tmp_path / "missing.safetensors", config=get_config("tiny"))

    misshaped = dict(state, **{"audio_projection.fc1.weight": torch.zeros(3, 3)})
    save_file(misshaped, str(tmp_path / "misshaped.safetensors"))
    with pytest.raises(InputError, match=r"1 misshaped keys: audio_projection.fc1.weight: file \(3, 3\)"):
        load_transformer(tmp_path / "misshaped.safetensors", config=get_config("tiny"))

    two = {k: v for k, v in state.items() if k not in ("transformer_blocks.3.attn1.to_q.weight",
                                                         "audio_projection.fc1.weight")}
    save_file(two, str(tmp_path / "two.safetensors"))
    with pytest.raises(InputError, match=r"2 missing keys \(audio_projection 1, backbone 1; e.g. "):
        load_transformer(tmp_path / "two.safetensors", config=get_config("tiny"))

    extra = dict(state, **{"some_other_model.weight": torch.zeros(1)})
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(InputError, match=r"1 unexpected keys \(backbone 1; e.g. some_other_model.weight"):
        load_transformer(tmp_path / "extra.safetensors", config=get_config("tiny"))


def test_truncated_and_absent_files_fail_clearly(tmp_path) -> None:
    model = tiny()
    path = tmp_path / "ditalker_tiny.safetensors"
    save_checkpoint(model, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        load_transformer(path)
    with pytest.raises(MissingModelError, match=r"checkpoint nowhere.safetensors not found .* get it from the "
                                                 r"DiTalker release, or EasyAnimateV3-XL-2-InP-512x512 on Hugging"):
        load_transformer(tmp_path / "nowhere.safetensors")


def test_an_official_config_maps_to_ours_by_hand() -> None:
    """config_from_official: copied keys, the enable_* renames (absent = off), either scale-fusion flag turns the
    Scale Adapter on, REPA depth forced to 8; a fixed layout key with another value, or REPA 1, is refused."""
    from ditalker_core.checkpoints import config_from_official

    official = {"num_layers": 4, "attention_head_dim": 8, "norm_type": "ada_norm_single", "enable_eca": True,
                "enable_audio_attention": 1, "enable_audio_scale_fusion": True, "enable_repa_2": True,
                "unrelated": 3}
    assert config_from_official(official) == {
        "num_layers": 4, "attention_head_dim": 8, "enable_audio_attention": True, "enable_style_attn": False,
        "enable_eca": True, "enable_pose_adapter": False, "enable_scale_adapter": True, "enable_repa": True,
        "repa_depth": 8}
    assert config_from_official({"enable_scale_fusion": True})["enable_scale_adapter"] is True
    assert config_from_official({})["enable_scale_adapter"] is False
    with pytest.raises(ValueError, match="config qk_norm=True is not the EasyAnimateV3 layout"):
        config_from_official({"qk_norm": True})
    with pytest.raises(ValueError, match="enable_repa_1"):
        config_from_official({"enable_repa_1": True})


def test_our_files_own_config_wins_over_a_passed_config_unless_forced(tmp_path) -> None:
    model = tiny()
    path = tmp_path / "ditalker_tiny.safetensors"
    save_checkpoint(model, path)
    other = get_config("tiny", num_layers=model.config.num_layers + 2)
    assert load_transformer(path, config=other).config.num_layers == model.config.num_layers
    with pytest.raises(InputError, match="missing keys"):
        load_transformer(path, config=other, force_config=True)  # built as told: its extra blocks have no weights


def test_a_file_of_some_modules_loads_over_a_model_and_refuses_to_stand_alone(tmp_path) -> None:
    """``save_checkpoint(modules=...)`` (phase-2/3 exports): without the backbone it is refused alone and loads
    over a full model; with the backbone it loads alone, the groups it lacks freshly initialised."""
    from ditalker_core.checkpoints import load_modules

    model = tiny()
    randomize(model)
    audio_only, with_backbone = tmp_path / "audio.safetensors", tmp_path / "backbone_audio.safetensors"
    save_checkpoint(model, audio_only, modules=["audio_projection"])
    save_checkpoint(model, with_backbone, modules=["backbone", "audio_projection"])
    with pytest.raises(InputError, match=r"holds only the modules \['audio_projection'\]: load the full model"):
        load_transformer(audio_only)
    fresh = tiny()
    assert load_modules(fresh, audio_only) == ["audio_projection"]
    assert torch.equal(fresh.audio_projection.fc1.weight, model.audio_projection.fc1.weight)
    assert not torch.equal(fresh.proj_out.weight, model.proj_out.weight)
    alone = load_transformer(with_backbone)
    assert torch.equal(alone.proj_out.weight, model.proj_out.weight)
    assert torch.equal(alone.audio_projection.fc1.weight, model.audio_projection.fc1.weight)
    assert not torch.equal(alone.style_projection.fc1.weight, model.style_projection.fc1.weight)


def test_a_vae_single_file_keeps_its_config_dtype_and_kind(tmp_path) -> None:
    from ditalker_core.checkpoints import load_vae
    from ditalker_core.errors import WrongWeightsError
    from ditalker_core.models import get_vae_config
    from ditalker_core.models.vae import AutoencoderKLMagvit

    torch.manual_seed(0)
    vae = AutoencoderKLMagvit(**get_vae_config("tiny")).eval()
    path = tmp_path / "vae.safetensors"
    save_checkpoint(vae, path)
    loaded = load_vae(path)
    assert loaded.config.ch == vae.config.ch != AutoencoderKLMagvit().config.ch  # not the default V3 width
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), vae.state_dict().values()))
    assert load_vae(path, dtype=torch.bfloat16).encoder.conv_in.weight.dtype == torch.bfloat16
    save_checkpoint(tiny(), tmp_path / "transformer.safetensors")
    with pytest.raises(WrongWeightsError, match="transformer.safetensors is .*, not .*: pick"):
        load_vae(tmp_path / "transformer.safetensors")


@pytest.mark.parametrize("key, kind", [
    ("transformer_blocks.0.attn1.to_q.weight", "transformer"), ("pos_embed.proj.weight", "transformer"),
    ("adaln_single.linear.weight", "transformer"), ("encoder.conv_in.weight", "vae"),
    ("decoder.conv_in.weight", "vae"), ("post_quant_conv.weight", "vae"), ("encoder.block.0.layer.0.x", "t5"),
    ("shared.weight", "t5"), ("vision_model.embeddings.x", "clip_vision"), ("encoder.conv1.weight", "whisper"),
    ("model.encoder.conv1.weight", "whisper"), ("encoder.embed_positions.weight", "whisper"),
    ("wav2vec2.encoder.x", "wav2vec2"), ("net_recon.conv1.weight", "3dmm"), ("final_layers.0.weight", "3dmm"),
    ("something.else", None)])
def test_a_weights_file_is_told_by_its_key_names(tmp_path, key: str, kind: str | None) -> None:
    from ditalker_core.checkpoints import identify_weights

    save_file({key: torch.zeros(1)}, str(tmp_path / "w.safetensors"))
    assert identify_weights(tmp_path / "w.safetensors") == kind


def test_model_folders_and_our_files_are_told_without_reading_tensors(tmp_path) -> None:
    from ditalker_core.checkpoints import check_kind, identify_weights, kind_of_keys
    from ditalker_core.errors import WrongWeightsError

    for name, described, kind in (("vae", {"_class_name": "AutoencoderKLMagvit"}, "vae"),
                                  ("t5", {"model_type": "t5"}, "t5"), ("clip", {"model_type": "clip"}, "clip_vision"),
                                  ("whisper", {"architectures": ["WhisperModel"]}, "whisper"),
                                  ("w2v", {"model_type": "wav2vec2"}, "wav2vec2"),
                                  ("dit", {"_class_name": "Transformer3DModel"}, "transformer"),
                                  ("other", {"model_type": "bert"}, None)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(described))
        assert identify_weights(tmp_path / name) == kind, name
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    (tmp_path / "pipeline" / "text_encoder").mkdir(parents=True)
    (tmp_path / "ctranslate2").mkdir()
    for file in ("model.bin", "vocabulary.txt"):
        (tmp_path / "ctranslate2" / file).write_text("x")
    assert [identify_weights(tmp_path / n) for n in ("broken", "pipeline", "ctranslate2", "nothing")] == [
        None, "t5", "whisper", None]
    (tmp_path / "w.pth").write_bytes(b"x")
    assert identify_weights(tmp_path / "w.pth") is None  # pickles are told apart when loaded
    assert kind_of_keys(["decoder.conv_in.weight"], {"format": "ditalker", "model": "DiTalkerTransformer3DModel"}
                        ) == "transformer"  # our own files say what they are
    assert kind_of_keys(["x"], {"format": "ditalker", "model": "AutoencoderKLMagvit"}) == "vae"
    check_kind(tmp_path / "w.pth", "vae")  # unknown: nothing to refuse
    with pytest.raises(WrongWeightsError) as refused:
        check_kind(tmp_path / "dit", "vae")
    assert str(refused.value) == ("dit is a DiTalker / EasyAnimateV3 transformer, not a MagViT VAE: pick a MagViT VAE "
                                  "here and load this file where a DiTalker / EasyAnimateV3 transformer is taken")
    assert (refused.value.kind, refused.value.expected) == ("transformer", "vae")


@pytest.mark.parametrize("wrapper", ["state_dict", "module", "model"])
def test_wrapped_torch_checkpoints_are_unwrapped(tmp_path, wrapper: str) -> None:
    from ditalker_core.checkpoints import read_state_dict

    weights = {"proj_out.weight": torch.arange(6.0).view(2, 3)}
    torch.save({wrapper: weights, "epoch": 3}, tmp_path / "wrapped.pth")
    state, metadata = read_state_dict(tmp_path / "wrapped.pth")
    assert list(state) == ["proj_out.weight"] and torch.equal(state["proj_out.weight"], weights["proj_out.weight"])
    assert metadata == {}


def test_grouped_audio_tokens_hear_only_their_own_frames() -> None:
    """groups=2 over 8 frames: tokens 0-1 are made from frames 0-3's rows only, tokens 2-3 from frames 4-7's."""
    torch.manual_seed(0)
    projection = AudioProjection(frames=8, window=2, feature_dim=3, tokens=4, hidden_dim=5, out_dim=6, groups=2)
    windows = torch.randn(2, 8, 2, 3)
    rows = windows.reshape(2, 16, 3)
    weight, bias = projection.conv1.weight[..., 0], projection.conv1.bias
    mixed = torch.cat([weight[:2, :8] @ rows[:, :8], weight[2:, 8:] @ rows[:, 8:]], dim=1) + bias[:, None]
    gelu = torch.nn.functional.gelu
    expected = projection.fc2(gelu(projection.fc1(gelu(mixed, approximate="tanh")), approximate="tanh"))
    torch.testing.assert_close(projection(windows), expected, rtol=1e-5, atol=1e-6)
    assert projection.state_dict().keys() == AudioProjection(8, 2, 3, 4, 5, 6).state_dict().keys()
    with pytest.raises(ValueError, match=r"groups \(3\) must divide both the frames \(8\) and the tokens \(4\)"):
        AudioProjection(frames=8, window=2, feature_dim=3, tokens=4, hidden_dim=5, out_dim=6, groups=3)


def test_grouped_audio_attention_reads_each_latent_frame_its_own_group() -> None:
    """A block's ACA with grouped tokens: latent frame f's tokens attend to group f alone (checked by hand)."""
    model = tiny(audio_token_groups=2)
    randomize(model)
    block, dim = model.transformer_blocks[0], model.config.cross_attention_dim
    hidden, audio = torch.randn(1, 2 * 6, dim), torch.randn(1, 2, 8, dim)
    with torch.no_grad():
        heard = block._hear(hidden, audio, num_frames=2)
        by_hand = [block.audio_attention(hidden[:, 6 * f:6 * (f + 1)], encoder_hidden_states=audio[:, f])
                   for f in range(2)]
        changed = block._hear(hidden, torch.cat([audio[:, :1], audio[:, 1:] + 1], dim=1), num_frames=2)
    torch.testing.assert_close(heard, torch.cat(by_hand, dim=1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(changed[:, :6], heard[:, :6], rtol=0, atol=0)
    assert (changed[:, 6:] - heard[:, 6:]).abs().max() > 1e-3


def test_grouped_audio_needs_one_group_per_latent_frame() -> None:
    model = tiny(audio_token_groups=2)
    assert model(**inputs(model, frames=2)).sample.shape == (1, 8, 2, 4, 6)
    with pytest.raises(InputError, match="the latent has 3 frames but the model's audio tokens come in 2 groups"):
        model(**inputs(model, frames=3))


@pytest.mark.parametrize("dtype, tolerance", [(torch.bfloat16, 0.03), (torch.float16, 0.005)])
def test_reduced_precision_stays_within_its_documented_tolerance_of_fp32(dtype, tolerance) -> None:
    """The shipped demo model on one window in bf16 / fp16 against fp32 (norms compute in fp32, as upstream):
    relative L2 error of the prediction under 3 % (bf16, measured 1.0 %) and 0.5 % (fp16, 0.12 %), with the weights
    loaded in the reduced dtype (the ``_keep_in_fp32_modules`` kept float32) and with float32 weights under the
    Speed node's autocast."""
    from ditalker_core.checkpoints import load_transformer
    from ditalker_core.pipeline.speed import computed_in
    from ditalker_core.demo import TRANSFORMER

    model = load_transformer(TRANSFORMER)
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    x = inputs(model, frames=8, height=8, width=8)
    x["hidden_states"] = torch.randn(1, cfg.in_channels // 3, 8, 8, 8, generator=g)
    x["inpaint_latents"] = torch.randn(1, 2 * cfg.in_channels // 3, 8, 8, 8, generator=g)
    x["pixel_values_pose"] = torch.rand(1, 3, 32, 64, 64, generator=g)
    with torch.no_grad():
        reference = model(**x).sample
        reduced = load_transformer(TRANSFORMER, dtype=dtype)
        out = reduced(**{k: v.to(dtype) if v.is_floating_point() else v for k, v in x.items()}).sample
        with computed_in(torch.device("cpu"), {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]):
            autocast = model(**x).sample  # the Speed node's precision: float32 weights, reduced matmuls
    assert out.dtype == dtype
    kept = {n for n, p in reduced.named_parameters() if p.dtype == torch.float32}
    assert kept == {n for n, _ in reduced.named_parameters() if set(n.split(".")) & set(reduced._keep_in_fp32_modules)}
    assert len(kept) == 6 + 8 * 6  # adaln_single's 6; per block 3 affine LayerNorms
    for name, value in (("weights", out), ("autocast", autocast)):
        error = ((value.float() - reference).norm() / reference.norm()).item()
        assert error < tolerance, (name, error)
    assert not torch.equal(autocast.float(), reference)  # autocast did compute in the reduced precision


def test_compiled_blocks_compute_what_the_eager_ones_do_and_compile_once() -> None:
    """Speedups(compile=True): diffusers' compile_repeated_blocks (one torch.compile'd block, inductor on a CPU)
    gives the eager output within float32 reordering (measured 1.1e-4 on outputs up to 9.6: within 5e-5 of the
    largest output), and a second run reuses the compiled blocks instead of compiling again."""
    from ditalker_core.pipeline.speed import Speedups, applied

    model = tiny()
    randomize(model)
    x = inputs(model)
    with torch.no_grad():
        eager = model(**x).sample
        with applied(model, Speedups(compile=True)) as used:
            compiled = model(**x).sample
        assert used.compile
        calls = [block._compiled_call_impl for block in model.transformer_blocks]
        assert all(call is not None for call in calls)
        with applied(model, Speedups(compile=True)):
            again = model(**x).sample
    assert [block._compiled_call_impl for block in model.transformer_blocks] == calls
    torch.testing.assert_close(compiled, eager, rtol=0, atol=5e-5 * float(eager.abs().max()))
    torch.testing.assert_close(again, compiled, rtol=0, atol=0)


def test_two_processes_split_by_frames_compute_what_one_does(tmp_path: Path) -> None:
    """diffusers' context parallelism with the model's ``_cp_plan`` on 2 CPU processes (torchrun, gloo, Ulysses):
    each holds 2 of the 4 latent frames, the motion modules exchange them, and the gathered output equals one
    process's forward. Global attention, frame positions, grouped audio and the pose offset all cross the split."""
    out = tmp_path / "parallel.pt"
    worker = Path(__file__).with_name("context_parallel_worker.py")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(worker), str(out)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]

    model = tiny(audio_token_groups=CONTEXT_PARALLEL_FRAMES)
    randomize(model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: this randomised model turns 2 threads' rounding into 7e-4 of its range
    try:
        with torch.no_grad():
            single = model(**inputs(model, frames=CONTEXT_PARALLEL_FRAMES)).sample
    finally:
        torch.set_num_threads(threads)
    parallel = torch.load(out, weights_only=True)
    assert parallel.shape == single.shape
    assert (parallel - single).abs().max().item() < 1e-5 * single.abs().max().item()
