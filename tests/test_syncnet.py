"""SyncNet: Wav2Lip's layout and checkpoint format, its mel spectrogram and face crops, the differentiable sync
loss of the trainer, and the SyncNet trainer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ditalker_core.errors import InputError, MissingModelError
from ditalker_core.models.syncnet import (SyncNet, face_box, load_syncnet, mel_filterbank, melspectrogram,
                                          mouth_crops, save_syncnet, sync_loss)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_released_layout_and_shapes():
    with torch.device("meta"):
        net = SyncNet()
    state = net.state_dict()
    # Wav2Lip SyncNet_color: 17 face and 14 audio conv blocks, each conv_block.0 (conv) + conv_block.1 (BN).
    assert state["face_encoder.0.conv_block.0.weight"].shape == (32, 15, 7, 7)
    assert state["face_encoder.1.conv_block.0.weight"].shape == (64, 32, 5, 5)
    assert state["face_encoder.16.conv_block.0.weight"].shape == (512, 512, 1, 1)
    assert state["audio_encoder.0.conv_block.0.weight"].shape == (32, 1, 3, 3)
    assert state["audio_encoder.13.conv_block.0.weight"].shape == (512, 512, 1, 1)
    assert "face_encoder.17.conv_block.0.weight" not in state and "audio_encoder.14.conv_block.0.weight" not in state
    assert "face_encoder.3.conv_block.1.running_var" in state

    tiny = SyncNet(base_channels=4).eval()
    audio, face = tiny(torch.randn(2, 1, 80, 16), torch.rand(2, 15, 48, 96))
    assert audio.shape == face.shape == (2, 64)
    torch.testing.assert_close(audio.norm(dim=1), torch.ones(2))
    assert (audio >= 0).all() and (face >= 0).all()  # ReLU embeddings: the cosine is a probability
    with pytest.raises(InputError):
        tiny(torch.randn(2, 1, 80, 20), torch.rand(2, 15, 48, 96))


def test_loader_reads_wav2lip_checkpoints_and_our_files(tmp_path):
    torch.manual_seed(0)
    net = SyncNet(base_channels=4).eval()
    for module in net.modules():  # non-trivial BN statistics must survive the round trip
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
    # Wav2Lip's save_checkpoint: state_dict (DataParallel "module." prefix) + optimizer + counters.
    wav2lip = {"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()},
               "optimizer": torch.optim.Adam(net.parameters()).state_dict(), "global_step": 7, "global_epoch": 1}
    torch.save(wav2lip, tmp_path / "lipsync_expert.pth")
    mel, faces = torch.randn(3, 1, 80, 16), torch.rand(3, 15, 48, 96)
    expected = net(mel, faces)
    for path in (tmp_path / "lipsync_expert.pth", tmp_path / "ours.safetensors"):
        if path.suffix == ".safetensors":
            save_syncnet(net, path)
        loaded = load_syncnet(path)
        assert loaded.base_channels == 4 and not loaded.training
        for got, want in zip(loaded(mel, faces), expected):
            torch.testing.assert_close(got, want)

    with pytest.raises(MissingModelError) as error:
        load_syncnet(tmp_path / "missing.pth")
    assert "lipsync_expert.pth" in str(error.value) and "Wav2Lip" in str(error.value)
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(InputError, match="not a Wav2Lip SyncNet"):
        load_syncnet(tmp_path / "other.pth")


def test_mel_spectrogram_follows_wav2lip_hparams():
    rate = 16000
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    mel = melspectrogram(tone)
    assert mel.shape == (80, 1 + rate // 200) and mel.dtype == np.float32  # 80 steps per second
    assert mel.min() >= -4 and mel.max() <= 4
    bank = mel_filterbank()
    strongest = int(np.argmax(mel[:, 40]))
    centres = np.linspace(0, 8000, 401)[bank.argmax(axis=1)]
    assert abs(centres[strongest] - 1000) < 80  # the 1 kHz tone lands in the filter centred on 1 kHz
    assert np.all(melspectrogram(np.zeros(3200, np.float32)) == -4)  # silence is the floor
    # Slaney normalisation: each triangle has unit area in Hz (checked where filters span many FFT bins).
    areas = bank.sum(axis=1) * (8000 / 400)
    np.testing.assert_allclose(areas[40:], 1.0, rtol=0.05)
    assert np.all(np.diff(bank.argmax(axis=1)) >= 0)


def test_mouth_crops_take_the_lower_half_of_the_face_box_in_bgr():
    frames = torch.zeros(1, 3, 5, 64, 64)
    frames[:, 0, :, 32:48] = 1.0  # red lower half of the box rows 16..48
    frames[:, 2, :, 16:32] = 1.0  # blue upper half
    mask = torch.zeros(64, 64)
    mask[16:48, 8:56] = 1
    box = face_box(mask)
    assert box == (16, 48, 8, 56)
    faces = mouth_crops(frames, [box], mask[None, None, None])
    assert faces.shape == (1, 15, 48, 96)
    # Red (lower half) lands in channel 2 (BGR); the blue upper half is cut (bar the interpolated seam row).
    assert faces[0, 2].mean() > 0.95 and faces[0, 0, 2:].abs().max() == 0
    assert face_box(torch.zeros(8, 8)) == (0, 8, 0, 8)


def test_sync_loss_backpropagates_through_the_vae_decoder():
    from ditalker_core.models import get_vae_config
    from ditalker_core.models.vae import AutoencoderKLMagvit
    from training.losses import sync_losses

    torch.manual_seed(0)
    vae = AutoencoderKLMagvit(**get_vae_config("tiny", layers_per_block=1)).requires_grad_(False)
    syncnet = SyncNet(base_channels=4).eval().requires_grad_(False)
    x0 = torch.randn(2, 4, 2, 4, 4)
    x0_hat = torch.randn(2, 4, 2, 4, 4, requires_grad=True)
    masks = torch.zeros(2, 32, 32)
    masks[:, 4:28, 6:26] = 1
    mel = torch.randn(2, 80, 40)
    generator = torch.Generator().manual_seed(0)
    l2, bce = sync_losses(vae, syncnet, x0, x0_hat, masks, mel, torch.tensor([True, True]), generator)
    assert l2 > 0 and bce > 0
    (grad,) = torch.autograd.grad(bce, x0_hat)
    assert grad.abs().sum() > 0  # the SyncNet term reaches the predicted latents
    _, none = sync_losses(vae, syncnet, x0, x0_hat, masks, mel, torch.tensor([False, False]), generator)
    assert none == 0  # samples whose audio was dropped have nothing to be in sync with
    per_sample = sync_loss(syncnet, torch.randn(2, 1, 80, 16), torch.rand(2, 15, 48, 96))
    assert per_sample.shape == (2,) and (per_sample > 0).all()


def test_syncnet_trainer_learns_and_writes_a_loadable_expert(tmp_path):
    """Mouth opening follows the loudness of the speech; the tiny expert learns to tell matching audio."""
    from test_training import SIZE, _write_masks
    from test_training_preprocess import TEXT, talking_frames

    from ditalker_core.media import write_video
    from training.synthetic.speech import synthesize
    from training import train_syncnet
    from training.preprocess import crop_resize, write_wav

    speech = synthesize(TEXT + " " + TEXT)
    audio = np.interp(np.arange(0, len(speech.audio), speech.rate / 16000), np.arange(len(speech.audio)),
                      speech.audio).astype(np.float32)
    frames = crop_resize(talking_frames(audio, 16000), (0, 48, 240), SIZE)
    (tmp_path / "videos_25").mkdir()
    (tmp_path / "audio").mkdir()
    write_video(tmp_path / "videos_25" / "talk.mp4", frames, 25)
    write_wav(tmp_path / "audio" / "talk.wav", audio)
    _write_masks(tmp_path, "talk")
    record = {"file_path": "videos_25/talk.mp4", "audio_path": "audio/talk.wav", "num_frames": len(frames),
              "audio_emb_path": "-", "phoneme_dir": "-", "3dmm_dir": "-", "pose_video_path": "-"}
    (tmp_path / "metadata.json").write_text(json.dumps([record]))

    out = train_syncnet.main(["--metadata", str(tmp_path / "metadata.json"), "--out", str(tmp_path / "s.safetensors"),
                              "--base-channels", "4", "--steps", "60", "--batch-size", "8", "--lr", "1e-3",
                              "--save-every", "30", "--num-workers", "0", "--device", "cpu"])
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 60
    first, last = np.mean([m["loss"] for m in lines[:10]]), np.mean([m["loss"] for m in lines[-10:]])
    assert last < first, (first, last)
    assert load_syncnet(out).base_channels == 4


def test_sync_loss_is_the_bce_of_the_embeddings_cosine_by_hand():
    from ditalker_core.models.syncnet import sync_loss

    audio = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    face = torch.tensor([[0.6, 0.8], [0.6, 0.8], [1.0, 0.0]])
    expert = lambda mel, faces: (audio, face)  # noqa: E731  (unit embeddings, as the expert normalises them)
    loss = sync_loss(expert, torch.zeros(3), torch.zeros(3))
    # cosines 0.6, 1.0 and 0.0: -log p, with p kept inside (1e-7, 1 - 1e-7) as Wav2Lip's BCE clamps it
    torch.testing.assert_close(loss, torch.tensor([-np.log(0.6), -np.log(1 - 1e-7), -np.log(1e-7)]).float(),
                               rtol=1e-5, atol=1e-6)


class _ConstantFramesVAE(torch.nn.Module):
    """Decodes each latent to 4 frames (8x8 pixels each) whose pixels all equal that latent's first channel, so a
    decoded frame says which latent it came from."""

    config = type("Config", (), {"scaling_factor": 2.0})
    dtype = torch.float32

    def __init__(self):
        super().__init__()
        self.post_quant_conv = torch.nn.Identity()
        self.decoder = self

    def windows(self, num_latents: int):
        yield slice(0, num_latents), slice(0, num_latents), True

    def decode_window(self, z: torch.Tensor, own: slice, expand_time: bool) -> torch.Tensor:
        frames = z[:, :1, own].repeat_interleave(4, dim=2)
        return frames.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4).expand(-1, 3, -1, -1, -1)


class _RecordingExpert(torch.nn.Module):
    """Records what it is shown; embeddings with cosines 0.6 (sample 0) and 0.8 (sample 1)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1, dtype=torch.bfloat16))

    def forward(self, mel: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen = (mel, faces)
        return torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.6, 0.8], [0.8, 0.6]])


def test_sync_losses_score_the_drawn_frames_against_their_own_mel_by_hand():
    """Which 2 latents are decoded and which 5 frames and mel steps the expert sees (drawn in that order from
    the generator), the [-1, 1] -> [0, 1] mapping with clipping, the masked mouth crops in the expert's dtype, and
    the mean over the samples whose audio was kept."""
    from training.losses import sync_losses

    x0_hat = torch.tensor([[3.0, 0.4, -3.0, -0.4, 0.7, -0.7],
                           [-3.0, -0.4, 3.0, 0.4, -0.7, 0.7]]).view(2, 1, 6, 1, 1)  # (B, C, F, h, w)
    x0 = torch.zeros_like(x0_hat)
    masks = torch.ones(2, 8, 8)
    masks[:, 7, 0] = 0  # the face mask is applied inside the face box
    mel = torch.arange(64.0).expand(2, 80, 64)  # mel step index everywhere
    expert, vae = _RecordingExpert(), _ConstantFramesVAE()
    seed = 4
    draws = torch.Generator().manual_seed(seed)
    pair = 2 * int(torch.randint(0, 3, (1,), generator=draws))
    first = int(torch.randint(0, 8 - 5 + 1, (1,), generator=draws))
    assert (pair, first) == (2, 2)  # this seed draws the middle pair and a window not at its start
    torch.manual_seed(0)  # the global generator draws otherwise

    def score(keep: list[bool]) -> tuple[float, float]:
        l2, bce = sync_losses(vae, expert, x0, x0_hat, masks, mel, torch.tensor(keep),
                              torch.Generator().manual_seed(seed))
        return float(l2), float(bce)

    assert score([True, True]) == (pytest.approx(float((x0_hat ** 2).mean())),
                                   pytest.approx(-(np.log(0.6) + np.log(0.8)) / 2, rel=1e-6))
    assert score([True, False])[1] == pytest.approx(-np.log(0.6), rel=1e-6)
    assert score([False, False])[1] == 0
    audio, faces = expert.seen
    step = int(80 * (4 * pair + first) / 25)  # Wav2Lip's mel index of the first scored frame
    assert audio.shape == (2, 1, 80, 16) and audio[0, 0, 0].tolist() == list(range(step, step + 16))
    latent = (x0_hat[:, 0, pair:pair + 2, 0, 0] / 2).repeat_interleave(4, dim=1)[:, first:first + 5]
    pixels = ((latent + 1) / 2).clamp(0, 1)  # sample 0: -1.5 -> 0 (clipped), -0.2 -> 0.4; sample 1: 1, 0.6
    frames = pixels[:, None, :, None, None].expand(-1, 3, -1, 8, 8)
    expected = mouth_crops(frames, [(0, 8, 0, 8)] * 2, masks[:, None, None])
    assert faces.dtype == torch.bfloat16 and audio.dtype == torch.bfloat16
    torch.testing.assert_close(faces.float(), expected, atol=1e-2, rtol=0)
    assert faces[1, 0, 0].min() == 1 and faces[0, :3].max() == 0  # clipped at 1 (top row) and at 0
