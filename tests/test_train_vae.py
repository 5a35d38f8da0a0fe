"""The VAE trainer: its loss by hand, exact resume, and a scaling factor measured on the latents."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from safetensors.torch import load_file

from training.train_vae import latent_std, train, vae_loss

pytestmark = pytest.mark.usefixtures("one_thread")


class _FixedVAE:
    """encode -> given moments, decode -> given frames (whatever the latent)."""

    def __init__(self, moments: torch.Tensor, frames: torch.Tensor):
        self.moments, self.frames = moments, frames

    def encode(self, video: torch.Tensor) -> DiagonalGaussianDistribution:
        return DiagonalGaussianDistribution(self.moments)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.frames


def test_vae_loss_by_hand():
    video = torch.zeros(1, 3, 2, 2, 2)
    recon = torch.zeros_like(video)
    recon[0, :, :, 0, 0] = 0.5  # error 0.5 at pixel (0, 0) of every channel and frame
    weight = torch.ones(1, 1, 1, 2, 2)
    weight[..., 0, 0] = 4.0  # the face pixel counts 4x
    moments = torch.zeros(1, 8, 1, 1, 1)
    moments[:, 0] = 1.0  # one latent mean of 1, unit variance: KL = 0.5 * 1 / 4 elements
    total, parts = vae_loss(_FixedVAE(moments, recon), video, weight, kl_weight=0.1, generator=torch.Generator())
    assert parts["l1"] == pytest.approx((0.5 * 4 / 4) / (7 / 4))  # weighted mean over weighted area
    assert parts["l2"] == pytest.approx((0.25 * 4 / 4) / (7 / 4))
    assert parts["kl"] == pytest.approx(0.125)
    assert parts["loss"] == pytest.approx(parts["l1"] + parts["l2"] + 0.1 * 0.125)
    assert float(total) == pytest.approx(parts["loss"])


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from training.synthetic.__main__ import write_dataset

    return write_dataset(tmp_path_factory.mktemp("synthetic"), clips=2, seed=11)


def test_vae_training_resumes_exactly_and_measures_its_scaling_factor(clips, tmp_path):
    common = dict(config="tiny", batch=1, images=2, frames=8, size=64, save_every=2)
    whole = train(str(clips), str(tmp_path / "whole"), steps=4, **common)
    train(str(clips), str(tmp_path / "split"), steps=2, **common)
    split = train(str(clips), str(tmp_path / "split"), steps=4, **common)  # resumes from step 2
    a = load_file(str(whole / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(split / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1]  # logged every 25 steps and at step 1

    from ditalker_core.checkpoints import load_vae
    from training.dataset import read_metadata

    vae = load_vae(whole)
    measured = latent_std(vae, read_metadata(clips), 8, 64)
    assert vae.config.scaling_factor == pytest.approx(1 / measured, rel=1e-4)
    assert np.isfinite(measured) and measured > 0

    # --init continues a finished VAE: its weights, not a fresh initialisation.
    again = train(str(clips), str(tmp_path / "again"), steps=0, init=str(whole), **common)
    c = load_file(str(again / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_warm_start_widens_the_latent_without_changing_the_reconstruction():
    from ditalker_core.models import get_vae_config
    from ditalker_core.models.vae import AutoencoderKLMagvit
    from training.train_vae import warm_start

    torch.manual_seed(0)
    trained = AutoencoderKLMagvit(**get_vae_config("tiny")).eval()
    wider = AutoencoderKLMagvit(**get_vae_config("tiny", latent_channels=16)).eval()
    assert warm_start(wider, trained.state_dict()) == []  # every tensor set from the trained VAE
    video = torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        before, after = trained.encode(video), wider.encode(video)
        assert torch.allclose(after.mean[:, :4], before.mean[:, :4], atol=1e-6)
        assert torch.allclose(after.logvar[:, :4], before.logvar[:, :4], atol=1e-6)
        assert float(after.logvar[:, 4:].max()) == pytest.approx(-10.0)  # the new channels start nearly certain
        assert float(after.mean[:, 4:].abs().mean()) > 1e-3  # ... and not stuck at zero
        torch.testing.assert_close(wider.decode(after.mode()), trained.decode(before.mode()), atol=1e-5, rtol=0)
