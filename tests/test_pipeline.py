"""Sampling pipeline with tiny models on CPU: windows, guidance, determinism, progress/cancel, long audio."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ditalker_core.errors import InputError
from ditalker_core.models import DiTalkerTransformer3DModel, get_config, get_vae_config
from ditalker_core.models.vae import AutoencoderKLMagvit
from ditalker_core.pipeline import (Conditions, DiTalkerPipeline, Guidance, SampledVideo, SamplingOptions,
                                    prepare_reference)
from ditalker_core.pipeline.conditioning import output_size
from ditalker_core.pipeline.windows import Window, plan_windows

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipe() -> DiTalkerPipeline:
    torch.manual_seed(0)
    transformer = DiTalkerTransformer3DModel(**get_config("tiny")).eval()
    with torch.no_grad():  # non-trivial DiTalker modules, so every condition moves the output
        for name, p in transformer.named_parameters():
            if name.endswith("to_out.0.weight") or "conv_out" in name or "long_connect" in name:
                p.normal_(0, 0.05)
    vae = AutoencoderKLMagvit(**get_vae_config("tiny")).eval()
    return DiTalkerPipeline(transformer, vae)


def conditions(pipe: DiTalkerPipeline, frames: int, seed: int = 0) -> Conditions:
    cfg = pipe.transformer.config
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(48, 40, 3, generator=g)
    return Conditions(
        reference=prepare_reference(image, SIZE, SIZE), num_frames=frames,
        audio_features=torch.randn(frames, 50, cfg.audio_feature_dim, generator=g),
        phoneme_ids=torch.randint(0, 74, (frames,), generator=g),
        style_clip=torch.randn(20, 64, generator=g),
        pose_video=torch.rand(3, frames, SIZE // 2, SIZE // 2, generator=g),
        emotion_tokens=torch.randn(5, cfg.caption_channels, generator=g),
        negative_tokens=torch.randn(2, cfg.caption_channels, generator=g),
        clip_embedding=torch.randn(cfg.clip_embed_dim, generator=g),
    )


@pytest.mark.parametrize("frames", [1, 32, 33, 70, 1500])
def test_windows_cover_every_frame_on_latent_aligned_starts(frames: int) -> None:
    windows = plan_windows(frames, 32, 8)
    assert windows[0] == Window(0, 32, 0) and windows[-1].end >= frames > windows[-1].start
    for previous, current in zip(windows, windows[1:]):
        assert current.start == previous.end - 8 and current.known == 8 and current.start % 4 == 0
        assert current.end - current.start == 32


def test_output_size_keeps_aspect_in_model_multiples() -> None:
    assert output_size(512, 512, 512) == (512, 512)
    assert output_size(720, 1280, 512) == (384, 688)  # 512 / sqrt(720 * 1280) = 0.533: 384 x 682.7 -> 688
    assert output_size(2, 1000, 64) == (16, 1424)  # scale 1.43: 2.9 x 1431 -> never below one multiple
    assert output_size(1, 256, 64) == (16, 1024)  # a one-pixel-high image is small, not empty
    with pytest.raises(InputError, match=r"the reference image is empty \(0x5\)"):
        output_size(0, 5, 512)


def test_image_layouts_and_value_ranges_by_hand() -> None:
    from ditalker_core.pipeline.conditioning import image_tensor

    hwc = np.arange(2 * 5 * 3, dtype=np.uint8).reshape(2, 5, 3)
    expected = torch.from_numpy(hwc).permute(2, 0, 1).float() / 255
    assert torch.equal(image_tensor(hwc), expected)  # uint8 HWC
    assert torch.equal(image_tensor(expected), expected)  # float CHW passes through
    assert torch.equal(image_tensor(torch.from_numpy(hwc)[None]), expected)  # a batch of one
    assert torch.equal(image_tensor(np.full((2, 5), 51, np.uint8)), torch.full((3, 2, 5), 0.2))  # gray
    rgba = torch.tensor([1.0, 0.0, 0.0, 0.5]).expand(2, 2, 4)  # half-transparent red over white
    assert torch.allclose(image_tensor(rgba), torch.tensor([1.0, 0.5, 0.5]).view(3, 1, 1).expand(3, 2, 2))
    assert torch.equal(image_tensor(torch.full((2, 2, 3), 2.0)), torch.ones(3, 2, 2))  # clamped to [0, 1]
    with pytest.raises(InputError, match="expected one image, got a batch of 2"):
        image_tensor(np.zeros((2, 4, 4, 3), np.uint8))
    # Both end axes could be channels: the smaller one is. (4, 5, 3) is a 4 x 5 RGB image, (3, 5, 4) a 5 x 4 one.
    tiny_hwc = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    assert torch.equal(image_tensor(tiny_hwc), torch.from_numpy(tiny_hwc).permute(2, 0, 1).float() / 255)
    chw = torch.rand(3, 5, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(image_tensor(chw), chw)
    with pytest.raises(InputError, match=r"expected \(H, W, C\) or \(C, H, W\), got shape \(4,\)"):
        image_tensor(np.zeros(4))


def test_a_narrow_reference_is_scaled_up_to_cover_then_cropped_and_stays_in_range() -> None:
    """64 x 16, black above row 24, white below, to 32 x 32: scaled 2x to 128 x 32 and rows 48-79 kept, so the
    edge (at row 48) is the crop's top and the crop is white (squashing it to 32 rows would put the edge at row 12).
    Bicubic rings past [0, 1] at an edge; the result stays in [-1, 1]."""
    from ditalker_core.pipeline.conditioning import image_tensor

    tall = torch.zeros(64, 16, 3)
    tall[24:] = 1.0
    out = prepare_reference(tall, 32, 32)
    assert torch.allclose(out[:, 4:], torch.ones(3, 28, 32), atol=0.02) and out[:, :2].mean() < 0.9
    scaled = torch.nn.functional.interpolate(image_tensor(tall)[None], size=(128, 32), mode="bicubic",
                                             align_corners=False, antialias=True)
    assert scaled.max() > 1.0  # the ringing is there to be clamped
    assert out.max() <= 1.0 and out.min() >= -1.0


def test_a_reference_is_downscaled_with_antialiasing() -> None:
    """Every 4th column white, shrunk 4x: antialiased, a 25 % grey (-0.5 in [-1, 1]); plain bicubic samples
    between the white columns and gives black."""
    stripes = (torch.arange(64) % 4 == 0).float().expand(64, 64)
    out = prepare_reference(stripes[..., None].expand(-1, -1, 3), 16, 16)
    assert ((out[:, :, 2:-2] + 0.5).abs() < 0.1).all()


def test_the_mask_latent_cache_keeps_the_eight_latest(pipe: DiTalkerPipeline) -> None:
    from ditalker_core.pipeline.conditioning import _MASK_LATENTS, mask_latent

    _MASK_LATENTS.clear()
    first = mask_latent(pipe.vae, 1, 16, SIZE, SIZE).clone()
    for known in range(2, 11):
        mask_latent(pipe.vae, known, 16, SIZE, SIZE)
    assert len(_MASK_LATENTS) == 8 and not any(key[3] in (1, 2) for key in _MASK_LATENTS)  # oldest two gone
    assert torch.equal(mask_latent(pipe.vae, 1, 16, SIZE, SIZE), first)  # made again, the same


def test_reference_is_centre_cropped_to_cover_the_size() -> None:
    wide = torch.rand(32, 64, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(prepare_reference(wide, 32, 32), wide[:, 16:48].permute(2, 0, 1) * 2 - 1, atol=1e-6)
    tall = wide.transpose(0, 1)  # 64 x 32
    assert torch.allclose(prepare_reference(tall, 32, 32), tall[16:48].permute(2, 0, 1) * 2 - 1, atol=1e-6)
    flat = torch.full((8, 8, 3), 0.25)
    assert torch.allclose(prepare_reference(flat, 32, 16), torch.full((3, 32, 16), -0.5))  # upscaled to cover


def test_inpaint_latents_are_the_encoded_mask_and_masked_video(pipe: DiTalkerPipeline) -> None:
    from ditalker_core.pipeline.conditioning import inpaint_latents

    vae, scale = pipe.vae, pipe.vae.config.scaling_factor
    known = torch.rand(3, 8, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        got = inpaint_latents(vae, known, 8, 16, torch.Generator().manual_seed(2))
        mask = torch.ones(1, 3, 16, SIZE, SIZE)
        mask[:, :, :8] = 0  # 0 = known, 1 = generate
        masked = -torch.ones(1, 3, 16, SIZE, SIZE)
        masked[:, :, :8] = known
        expected = torch.cat([vae.encode(mask).mode() * scale,
                              vae.encode(masked).sample(torch.Generator().manual_seed(2)) * scale], dim=1)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_condition_slices_past_the_end_repeat_the_last_frame_or_a_value() -> None:
    from ditalker_core.pipeline.conditioning import slice_frames

    values = torch.arange(6.0).view(2, 3)  # 3 frames on axis 1
    assert slice_frames(values, 1, 3, "edge", axis=1).tolist() == [[1.0, 2.0], [4.0, 5.0]]
    assert slice_frames(values, 2, 5, "edge", axis=1).tolist() == [[2.0, 2.0, 2.0], [5.0, 5.0, 5.0]]
    assert slice_frames(values, 1, 4, -7.0, axis=1).tolist() == [[1.0, 2.0, -7.0], [4.0, 5.0, -7.0]]
    assert slice_frames(None, 0, 2, "edge") is None


def test_reference_accepts_rgba_gray_and_odd_sizes() -> None:
    rgba = torch.zeros(33, 47, 4)
    rgba[..., 3] = 0.0  # fully transparent -> white
    assert torch.allclose(prepare_reference(rgba, 16, 32), torch.ones(3, 16, 32))
    gray = (torch.rand(31, 29) * 255).to(torch.uint8)
    assert prepare_reference(gray.numpy(), 32, 16).shape == (3, 32, 16)
    with pytest.raises(InputError, match="multiples of 16"):
        prepare_reference(gray.numpy(), 30, 16)


def test_single_scale_equals_equal_weight_multi_condition(pipe: DiTalkerPipeline) -> None:
    cond = conditions(pipe, 16)
    single = pipe(cond, SamplingOptions(steps=2, guidance=Guidance.single(3.0)))
    branches = [b for b in Guidance(3.0, 3.0, 3.0 + 1e-9).branches()]
    assert len(branches) == 4
    multi = pipe(cond, SamplingOptions(steps=2, guidance=Guidance(3.0, 3.0, 3.0 + 1e-9)))
    torch.testing.assert_close(single, multi, rtol=0, atol=2e-4)


def test_branches_in_one_batch_equal_branches_one_by_one(pipe: DiTalkerPipeline) -> None:
    cond = conditions(pipe, 16)
    guidance = Guidance(2.0, 4.0, 6.0)
    batched = pipe(cond, SamplingOptions(steps=2, guidance=guidance))
    serial = pipe(cond, SamplingOptions(steps=2, guidance=guidance, branch_batch=1))
    torch.testing.assert_close(batched, serial, rtol=0, atol=1e-4)


def test_each_guidance_weight_matters(pipe: DiTalkerPipeline) -> None:
    cond = conditions(pipe, 16)
    base = pipe(cond, SamplingOptions(steps=2, guidance=Guidance(2.0, 2.0, 2.0)))
    for weights in ((6.0, 2.0, 2.0), (2.0, 6.0, 2.0), (2.0, 2.0, 6.0)):
        assert (pipe(cond, SamplingOptions(steps=2, guidance=Guidance(*weights))) - base).abs().max() > 1e-3


@pytest.mark.parametrize("scheduler", ["dpm++", "ddim", "euler"])
def test_fixed_seed_is_deterministic_and_frame_count_exact(pipe: DiTalkerPipeline, scheduler: str) -> None:
    cond = conditions(pipe, 21)
    options = SamplingOptions(steps=2, scheduler=scheduler, seed=7)
    first, second = pipe(cond, options), pipe(cond, options)
    assert first.shape == (21, SIZE, SIZE, 3) and torch.equal(first, second)
    other = pipe(cond, SamplingOptions(steps=2, scheduler=scheduler, seed=8))
    assert (other - first).abs().max() > 1e-3


def test_short_audio_and_denoise_strength(pipe: DiTalkerPipeline) -> None:
    cond = conditions(pipe, 5)
    assert pipe(cond, SamplingOptions(steps=4, denoise=0.5)).shape == (5, SIZE, SIZE, 3)
    calls = []
    pipe(cond, SamplingOptions(steps=4, denoise=0.5), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]


def test_progress_every_step_and_cancel_between_steps(pipe: DiTalkerPipeline) -> None:
    cond = conditions(pipe, 40)  # two windows
    calls: list[tuple[int, int]] = []
    pipe(cond, SamplingOptions(steps=3), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 6) for i in range(1, 7)]

    class Cancelled(Exception):
        pass

    seen: list[int] = []

    def cancel_at_two(done: int, total: int) -> None:
        seen.append(done)
        if done == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        pipe(cond, SamplingOptions(steps=3), progress=cancel_at_two)
    assert seen == [1, 2]


def test_mismatched_conditions_are_explained(pipe: DiTalkerPipeline) -> None:
    """The pipeline's one input check: each misfit names its Conditions field (the nodes reword by it)."""
    from ditalker_core.errors import ConditionError

    cases = {"audio_features": ("audio_features covers 10 frames but the audio gives 16",
                                lambda c: c.audio_features[:10]),
             "phoneme_ids": ("phoneme_ids covers 20 frames but the audio gives 16",
                             lambda c: torch.zeros(20, dtype=torch.long)),
             "pose_video": (f"pose_video frames are (8, 8) but this video needs half its size, "
                            f"({SIZE // 2}, {SIZE // 2})",
                            lambda c: torch.rand(3, 16, 8, 8)),
             "style_clip": (f"style_clip holds {pipe.transformer.config.style_max_len + 1} frames but this model "
                            f"reads at most {pipe.transformer.config.style_max_len}",
                            lambda c: torch.zeros(pipe.transformer.config.style_max_len + 1, 64))}
    for field, (words, make) in cases.items():
        cond = conditions(pipe, 16)
        setattr(cond, field, make(cond))
        with pytest.raises(ConditionError, match=words.replace("(", r"\(").replace(")", r"\)")) as error:
            pipe(cond, SamplingOptions(steps=1))
        assert error.value.field == field
    with pytest.raises(InputError, match="0 video frames"):
        pipe(Conditions(reference=conditions(pipe, 16).reference, num_frames=0), SamplingOptions(steps=1))
    with pytest.raises(InputError, match=r"denoise must be in \(0, 1\], got 0.0"):
        pipe(conditions(pipe, 16), SamplingOptions(steps=1, denoise=0.0))


def test_sixty_seconds_of_audio_exact_frames_and_no_seams(pipe: DiTalkerPipeline) -> None:
    frames = 60 * 25
    cond = conditions(pipe, frames, seed=3)
    options = SamplingOptions(steps=1, guidance=Guidance.single(1.0))
    windows = pipe.plan(frames, options.overlap)
    chunks = [chunk for chunk in pipe.stream(cond, options)]
    video = torch.cat(chunks)
    assert video.shape == (frames, SIZE, SIZE, 3)
    assert max(c.shape[0] for c in chunks) <= pipe.window_frames  # streamed window by window
    # Frame-to-frame change across window borders vs inside windows at the same phase: the VAE decodes 8 frames
    # (2 latents) per chunk, so changes are larger between chunks, and window borders are chunk borders.
    diffs = (video[1:] - video[:-1]).abs().mean(dim=(1, 2, 3))
    borders = torch.tensor([w.start + d for w in windows[1:] for d in (0, w.known)]) - 1
    same_phase = torch.zeros_like(diffs, dtype=torch.bool)
    same_phase[7::8] = True
    same_phase[borders] = False
    ratio = diffs[borders].mean() / diffs[same_phase].mean()
    assert 0.8 < ratio < 1.2, ratio


def test_guidance_combination_equals_the_hand_computed_value() -> None:
    # Branch predictions e0, e_a, e_as, e_ase as constants: the combination is arithmetic on four numbers.
    predictions = torch.tensor([1.0, 3.0, 4.0, 9.0]).view(4, 1, 1)
    guided = Guidance(audio=2.0, style=5.0, emotion=0.5).combine(predictions)
    assert guided.item() == 1.0 + 2.0 * (3 - 1) + 5.0 * (4 - 3) + 0.5 * (9 - 4)  # 12.5
    assert Guidance(audio=2.0, style=0.5, emotion=5.0).combine(predictions).item() == 1 + 4 + 0.5 + 25  # 30.5
    single = Guidance.single(3.0)
    assert single.branches() == [frozenset(), frozenset({"audio", "style", "emotion"})]
    assert single.combine(torch.tensor([1.0, 9.0]).view(2, 1, 1)).item() == 1.0 + 3.0 * 8.0
    assert Guidance.single(1.0).combine(torch.tensor([7.0]).view(1, 1, 1)).item() == 7.0


def test_later_windows_pin_the_overlap_to_the_previous_windows_latents(pipe: DiTalkerPipeline) -> None:
    cond = conditions(pipe, 40, seed=5)
    options = SamplingOptions(steps=3, guidance=Guidance(2.0, 3.0, 4.0))
    sampled = pipe.sample(cond, options)
    # 32-frame windows, 8 shared frames: the second window starts at 24 and runs 16 frames past the end.
    assert sampled.windows == [Window(0, 32, 0), Window(24, 56, 8)]
    first, second = sampled.latents
    assert torch.equal(second[:, :, :2], first[:, :, -2:])  # 8 frames = 2 latents, exactly the previous ones
    assert not torch.equal(second[:, :, 2:4], first[:, :, -2:])
    assert pipe(cond, options).shape == (40, SIZE, SIZE, 3)


@pytest.mark.parametrize("frames", [8, 16])
def test_the_next_windows_known_frames_are_the_full_decodes_last_frames_from_their_chunks_only(
        pipe: DiTalkerPipeline, frames: int) -> None:
    from ditalker_core.pipeline.generate import decode_latents

    latents = torch.randn(1, pipe.vae.config.latent_channels, 8, SIZE // 8, SIZE // 8,
                          generator=torch.Generator().manual_seed(3))
    calls = []
    hook = pipe.vae.decoder.conv_in.register_forward_hook(lambda *args: calls.append(1))
    try:
        with torch.no_grad():
            tail = pipe._decode_tail(latents, frames)
    finally:
        hook.remove()
    full = torch.cat(list(decode_latents(pipe.vae, latents)), dim=1)
    torch.testing.assert_close(tail, full[:, -frames:], rtol=0, atol=1e-5)
    assert len(calls) == frames // 4 // pipe.vae.config.mini_batch_decoder  # one decoder chunk per 2 latents


def test_crossfaded_windows_blend_the_overlap_linearly(pipe: DiTalkerPipeline) -> None:
    from ditalker_core.pipeline.generate import stitched_latents

    cond = conditions(pipe, 40, seed=5)
    options = SamplingOptions(steps=3, guidance=Guidance(2.0, 3.0, 4.0), seams="crossfade")
    sampled = pipe.sample(cond, options)
    first, second = sampled.latents
    assert not torch.equal(second[:, :, :2], first[:, :, -2:])  # the overlap is denoised again, not pinned
    stitched = stitched_latents(sampled)
    assert stitched.shape[2] == 8 + 8 - 2  # two 8-latent windows sharing 2 latents
    assert torch.equal(stitched[:, :, :6], first[:, :, :6])
    torch.testing.assert_close(stitched[:, :, 6], first[:, :, 6] * 2 / 3 + second[:, :, 0] / 3)
    torch.testing.assert_close(stitched[:, :, 7], first[:, :, 7] / 3 + second[:, :, 1] * 2 / 3)
    assert torch.equal(stitched[:, :, 8:], second[:, :, 2:])
    assert pipe(cond, options).shape == (40, SIZE, SIZE, 3)
    with pytest.raises(InputError, match="seams is 'blend': use one of pinned, crossfade"):
        pipe.sample(cond, replace(options, seams="blend"))
    windows = [Window(0, 32, 0), Window(24, 56, 8), Window(48, 80, 8)]  # three windows of constant latents 0, 1, 2
    three = SampledVideo([torch.full((1, 1, 8, 1, 1), float(i)) for i in range(3)], windows, 70, "crossfade")
    assert stitched_latents(three).flatten().tolist() == pytest.approx(
        [0.0] * 6 + [1 / 3, 2 / 3] + [1.0] * 4 + [4 / 3, 5 / 3] + [2.0] * 6)


def test_phoneme_windows_at_a_window_border_see_the_previous_frames(pipe: DiTalkerPipeline) -> None:
    cond = conditions(pipe, 40, seed=6)
    half = pipe.transformer.config.phoneme_window // 2
    ids = cond.phoneme_ids
    inputs = pipe.branch_inputs(cond, Window(24, 56, 8), SamplingOptions(guidance=Guidance.single(1.0)), True)
    rows = inputs["phoneme_win"][0]  # the branch that sees the style group
    assert rows[0].tolist() == ids[24 - half: 24 + half + 1].tolist()  # frame 24's window reaches back to 24 - half
    assert rows[15, : half + 1].tolist() == ids[39 - half: 40].tolist()
    assert rows[15, half + 1:].eq(74).all()  # past the audio's end: the pad id


def test_each_branch_sees_the_caption_and_its_mask_exactly_when_it_sees_the_emotion(pipe: DiTalkerPipeline) -> None:
    cond = conditions(pipe, 16)
    options = SamplingOptions(guidance=Guidance(2.0, 3.0, 4.0))
    inputs = pipe.branch_inputs(cond, Window(0, 32, 0), options, True)
    assert (cond.emotion_tokens.shape[0], cond.negative_tokens.shape[0]) == (5, 2)  # no masks: every token counts
    for i, branch in enumerate(options.guidance.branches()):
        tokens = cond.emotion_tokens if "emotion" in branch else cond.negative_tokens
        n = tokens.shape[0]
        assert torch.equal(inputs["encoder_hidden_states"][i, :n], tokens.to(inputs["encoder_hidden_states"].dtype))
        assert inputs["encoder_attention_mask"][i].tolist() == [1.0] * n + [0.0] * (5 - n)


def test_branch_inputs_are_in_the_models_dtype_with_or_without_each_condition(pipe: DiTalkerPipeline) -> None:
    import copy

    bf16 = DiTalkerPipeline(torch.nn.Module.to(copy.deepcopy(pipe.transformer), torch.bfloat16), pipe.vae)
    cond = conditions(pipe, 16)
    for given in (cond, replace(cond, audio_features=None, style_clip=None, pose_video=None)):
        inputs = bf16.branch_inputs(given, Window(0, 32, 0), SamplingOptions(guidance=Guidance(2.0, 3.0, 4.0)), True)
        for name in ("audio_encoder_hidden_states", "style_clip", "pixel_values_pose", "encoder_hidden_states",
                     "clip_encoder_hidden_states"):
            assert inputs[name].dtype == torch.bfloat16, name


def test_a_reference_off_the_16_pixel_grid_is_refused_on_either_side(pipe: DiTalkerPipeline) -> None:
    cond = conditions(pipe, 16)
    for height, width in ((SIZE, SIZE + 8), (SIZE + 8, SIZE)):
        bad = replace(cond, reference=torch.zeros(3, height, width))
        with pytest.raises(InputError, match=f"reference is {height}x{width}: prepare it with prepare_reference"):
            pipe.sample(bad, SamplingOptions(steps=1))


@pytest.mark.parametrize("ratio, seen", [(0.5, [False, False, True, True]), (0.25, [False, False, False, True]),
                                         (1.0, [True] * 4), (0.0, [False] * 4)])
def test_clip_reference_reaches_only_the_last_share_of_steps(pipe: DiTalkerPipeline, ratio: float,
                                                              seen: list[bool]) -> None:
    calls = []
    hook = pipe.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(bool(kwargs["clip_encoder_hidden_states"][-1].any())),
        with_kwargs=True)
    try:
        pipe(conditions(pipe, 16), SamplingOptions(steps=4, guidance=Guidance.single(1.0), clip_apply_ratio=ratio))
    finally:
        hook.remove()
    assert calls == seen


@pytest.mark.parametrize("scheduler", ["dpm++", "ddim", "euler"])
def test_denoised_estimate_recovers_the_clean_latent(scheduler: str) -> None:
    from ditalker_core.pipeline.scheduling import denoised_estimate, make_scheduler

    sched = make_scheduler(scheduler)
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(1, 4, 2, 3, 3, generator=g), torch.randn(1, 4, 2, 3, 3, generator=g)
    t = sched.timesteps[3]
    noisy = sched.add_noise(x0, eps, t.reshape(1))  # the scheduler's own sample at t (Euler: x0 + sigma eps)
    estimate = denoised_estimate(sched, sched.scale_model_input(noisy, t), eps, t)
    torch.testing.assert_close(estimate, x0, rtol=0, atol=1e-4)


@pytest.mark.parametrize("scheduler", ["dpm++", "ddim", "euler"])
def test_every_scheduler_samples_on_the_noise_schedule_the_trainer_trains_on(scheduler: str) -> None:
    from ditalker_core.pipeline.scheduling import make_scheduler
    from training.losses import GaussianDiffusion

    sched = make_scheduler(scheduler)
    with pytest.raises(ValueError, match=r"unknown scheduler 'unipc'; choose one of \['ddim', 'dpm\+\+', 'euler'\]"):
        make_scheduler("unipc")
    trained = GaussianDiffusion().tables["sqrt_ac"] ** 2
    np.testing.assert_allclose(sched.alphas_cumprod.double().numpy(), trained, rtol=1e-6)
    assert sched.config.prediction_type == "epsilon"


def test_ddim_steps_by_hand_unclipped_and_ending_on_the_first_trained_alpha() -> None:
    """EasyAnimate's DDIM: timesteps offset by 1, x0 not clipped, the last step lands on alphas_cumprod[0]."""
    from ditalker_core.pipeline.scheduling import make_scheduler

    sched = make_scheduler("ddim")
    sched.set_timesteps(10)
    assert sched.timesteps.tolist() == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    alphas = sched.alphas_cumprod.double()
    x, eps = torch.full((1, 1), 3.0, dtype=torch.float64), torch.full((1, 1), -0.5, dtype=torch.float64)
    for t, previous in ((901, alphas[801]), (1, alphas[0])):
        x0 = (x - (1 - alphas[t]).sqrt() * eps) / alphas[t].sqrt()  # about 3.0 / 0.99 at t = 1: outside [-1, 1]
        expected = previous.sqrt() * x0 + (1 - previous).sqrt() * eps
        torch.testing.assert_close(sched.step(eps, t, x).prev_sample, expected)


def test_preview_receives_every_steps_estimate_before_its_progress(pipe: DiTalkerPipeline) -> None:
    events = []
    cond = conditions(pipe, 40, seed=8)
    options = SamplingOptions(steps=3, guidance=Guidance(2.0, 3.0, 4.0))
    pipe.sample(cond, options, progress=lambda done, total: events.append(("progress", done)),
                preview=lambda x0: events.append(("preview", tuple(x0.shape))))
    latent = (1, pipe.vae.config.latent_channels, 8, SIZE // 8, SIZE // 8)
    assert events == [e for done in range(1, 7) for e in (("preview", latent), ("progress", done))]


def test_sampling_options_are_frozen() -> None:
    import dataclasses

    options = SamplingOptions(steps=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.steps = 4  # type: ignore[misc]
    assert dataclasses.replace(options, steps=4).steps == 4 and options.steps == 3


def test_step_cache_and_attention_backend_per_run(pipe: DiTalkerPipeline, caplog) -> None:
    from ditalker_core.pipeline.speed import Speedups

    cond = conditions(pipe, 16)
    plain = pipe(cond, SamplingOptions(steps=3))
    exact = pipe(cond, SamplingOptions(steps=3, speed=Speedups(cache="first_block", threshold=0.0)))
    assert torch.equal(exact, plain)  # threshold 0: every step computed
    tail_runs = []
    hook = pipe.transformer.transformer_blocks[-1].ff.register_forward_hook(lambda *_: tail_runs.append(1))
    pipe(cond, SamplingOptions(steps=3, speed=Speedups(cache="first_block", threshold=1e9)))
    hook.remove()
    assert len(tail_runs) == len(pipe.plan(16, 8))  # only each window's first step ran every block
    assert not pipe.transformer.is_cache_enabled  # taken off after the run
    with caplog.at_level("WARNING"):
        fallback = pipe(cond, SamplingOptions(steps=3, speed=Speedups(attention="flash")))
    assert "flash" in caplog.text and torch.equal(fallback, plain)
    with pytest.raises(InputError, match="cache"):
        Speedups(cache="tea")


def test_taylorseer_interval_one_is_uncached_and_skipped_steps_extrapolate(pipe: DiTalkerPipeline) -> None:
    """TaylorSeer (lite): the first three steps and then every ``interval``-th step run the blocks; on the others
    the output projection's output is its first-order extrapolation from the last two computed steps. The cache
    starts over in every window."""
    from ditalker_core.pipeline.speed import Speedups

    cond = conditions(pipe, 40)
    windows = len(pipe.plan(40, 8))
    assert windows > 1
    plain = pipe(cond, SamplingOptions(steps=6))
    assert torch.equal(pipe(cond, SamplingOptions(steps=6, speed=Speedups(cache="taylorseer", interval=1))), plain)

    tail_runs: list[int] = []
    projected: list[torch.Tensor] = []
    hooks = [pipe.transformer.transformer_blocks[-1].ff.register_forward_hook(lambda *_: tail_runs.append(1)),
             pipe.transformer.proj_out.register_forward_hook(lambda _m, _i, out: projected.append(out.clone()))]
    pipe(cond, SamplingOptions(steps=6, speed=Speedups(cache="taylorseer", interval=2)))
    for hook in hooks:
        hook.remove()
    assert len(tail_runs) == 4 * windows  # steps 0, 1, 2, 4 computed in each window; 3 and 5 predicted
    for w in range(windows):
        out = projected[6 * w: 6 * w + 6]
        torch.testing.assert_close(out[3], out[2] + (out[2] - out[1]))
        torch.testing.assert_close(out[5], out[4] + (out[4] - out[2]) / 2)
    assert not pipe.transformer.is_cache_enabled
    with pytest.raises(InputError, match="interval"):
        Speedups(cache="taylorseer", interval=0)


def test_mag_cache_measures_the_ratios_diffusers_would_once_then_skips(pipe: DiTalkerPipeline, capsys) -> None:
    """MagCache: the first window run with a model, scheduler and step count measures its magnitude ratios
    (the numbers diffusers' own calibration prints) without skipping; later windows and runs skip with them;
    threshold 0 computes every step."""
    import ast

    from diffusers import MagCacheConfig

    from ditalker_core.pipeline.speed import _MAG_RATIOS, Speedups

    cond = conditions(pipe, 40)
    windows = len(pipe.plan(40, 8))
    assert windows > 1
    plain = pipe(cond, SamplingOptions(steps=4))
    tail_runs: list[int] = []
    hook = pipe.transformer.transformer_blocks[-1].ff.register_forward_hook(lambda *_: tail_runs.append(1))
    pipe(cond, SamplingOptions(steps=4, speed=Speedups(cache="mag", threshold=1e9)))
    assert len(tail_runs) == 4 + (windows - 1)  # window 0 measured; then 1 retained step, 3 skipped (max_skip)
    tail_runs.clear()
    pipe(cond, SamplingOptions(steps=4, speed=Speedups(cache="mag", threshold=1e9)))
    hook.remove()
    assert len(tail_runs) == windows and not pipe.transformer.is_cache_enabled
    exact = pipe(cond, SamplingOptions(steps=4, speed=Speedups(cache="mag", threshold=0.0)))
    assert torch.equal(exact, plain)

    capsys.readouterr()
    pipe.transformer.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=4))
    pipe(cond, SamplingOptions(steps=4))  # the run takes the cache off after it
    printed = capsys.readouterr().out.split("mag_ratios=...):")[1].strip().splitlines()[0]
    ours = _MAG_RATIOS[pipe.transformer][("dpm++", 4, 1.0)]
    assert ours == pytest.approx(ast.literal_eval(printed), rel=1e-5)
    assert len(ours) == 4 and ours[0] == 1.0 and ours[1] != 1.0


def test_the_overlap_rule_refuses_each_way_to_break_it_and_names_the_fix() -> None:
    """check_overlap is the one overlap rule (the sampler node applies it at /prompt without a window)."""
    from ditalker_core.pipeline.windows import check_overlap

    for overlap in (0, 8, 24):
        check_overlap(overlap, 32)
        check_overlap(overlap)
    check_overlap(32)  # no window known yet: only the multiple of 8
    rule = ("it must be a multiple of 8 (0, 8, 16, ...) and below the model's clip of 32 frames, so consecutive "
            "windows share whole latents")
    for overlap in (5, -8, 32):
        with pytest.raises(InputError) as error:
            check_overlap(overlap, 32)
        assert str(error.value) == f"overlap is {overlap}: {rule}"
    with pytest.raises(InputError) as error:
        check_overlap(12)
    assert str(error.value) == "overlap is 12: it must be a multiple of 8 (0, 8, 16, ...), so consecutive windows " \
                               "share whole latents"
    assert [(w.start, w.end, w.known) for w in plan_windows(100, 32, 8)] == [(0, 32, 0), (24, 56, 8), (48, 80, 8),
                                                                            (72, 104, 8)]
    with pytest.raises(ValueError, match="window \\(30\\) must be a multiple of 8"):
        plan_windows(100, 30, 8)
    with pytest.raises(InputError, match="overlap is 32: .* below the model's clip of 32 frames"):
        plan_windows(100, 32, 32)  # the window reaches the rule
    assert [(w.start, w.end) for w in plan_windows(56, 32, 8)] == [(0, 32), (24, 56)]  # ends exactly: no extra
    with pytest.raises(ValueError) as error:
        plan_windows(0, 32, 8)
    assert str(error.value) == "nothing to generate: the audio gives 0 video frames"
