"""3DMM style extraction: MTCNN points, Deep3DFaceRecon alignment, ResNet-50 regressor, files, style clip."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import loadmat, savemat
from tiny_models import save_random_recon

from ditalker_core.errors import InputError, MissingModelError
from ditalker_core.extract import style3dmm
from ditalker_core.extract.face import LM3D_STD, FaceDetector, align_face, batched_nms
from ditalker_core.extract.style3dmm import (
    ReconNet,
    StyleExtractor,
    load_expression,
    make_style_clip,
)

skimage_data = pytest.importorskip("skimage.data")

# Hand-checked on a zoomed crop of skimage's astronaut photo: pupil centres, nose tip, mouth corners.
ASTRONAUT_POINTS = np.array([[205, 101], [246, 104], [225, 127], [203, 140], [244, 141]], dtype=np.float64)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def small(astronaut) -> np.ndarray:
    """The photo at 256x256 (face about 45 px wide) keeps detection and regression quick."""
    from PIL import Image

    return np.array(Image.fromarray(astronaut).resize((256, 256), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def recon(tmp_path_factory) -> tuple[Path, ReconNet]:
    folder = tmp_path_factory.mktemp("3dmm")
    return folder, save_random_recon(folder / "epoch_20.pth")


@pytest.fixture(scope="module")
def extractor(recon) -> tuple[StyleExtractor, ReconNet]:
    folder, net = recon
    return StyleExtractor.from_pretrained(folder, "cpu"), net


def test_mtcnn_points_land_on_eyes_nose_and_mouth(astronaut):
    detection = FaceDetector().detect(astronaut)[0]
    assert detection is not None and detection.prob > 0.9
    assert np.abs(detection.points - ASTRONAUT_POINTS).max() < 4.0
    x1, y1, x2, y2 = detection.box
    assert (detection.points[:, 0] > x1).all() and (detection.points[:, 0] < x2).all()
    assert (detection.points[:, 1] > y1).all() and (detection.points[:, 1] < y2).all()


def test_facenet_import_leaves_no_placeholder_torchvision():
    FaceDetector()
    module = sys.modules.get("torchvision")
    assert module is None or module.__spec__ is not None


def test_batched_nms_suppresses_within_groups_only():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=torch.float32)
    scores = torch.tensor([0.5, 0.9, 0.8, 0.7])
    groups = torch.tensor([0, 0, 1, 0])
    # box 0 overlaps box 1 (IoU 0.68) in group 0 and loses; box 2 is alone in group 1.
    assert batched_nms(boxes, scores, groups, 0.5).tolist() == [1, 2, 3]
    assert batched_nms(boxes, scores, groups, 0.7).tolist() == [1, 2, 3, 0]
    assert batched_nms(boxes[:0], scores[:0], groups[:0], 0.5).numel() == 0


def test_alignment_puts_landmarks_where_the_template_says():
    """Dots drawn at a frontal projection of the template end up at 112 + 102 * (X, -Y) in the crop."""
    height, width, scale, cx, cy = 300, 400, 80.0, 190.0, 160.0
    points = np.stack([cx + scale * LM3D_STD[:, 0], cy - scale * LM3D_STD[:, 1]], axis=1)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    for x, y in np.round(points).astype(int):
        image[y - 2:y + 3, x - 2:x + 3] = 255
    crop, params = align_face(image, points)
    assert crop.shape == (224, 224, 3)
    assert params[2] == pytest.approx(102.0 / scale, rel=1e-6)
    expected = np.stack([112 + 102 * LM3D_STD[:, 0], 112 - 102 * LM3D_STD[:, 1]], axis=1)
    bright = crop.mean(axis=2)
    for ex, ey in expected:
        x0, y0 = int(ex) - 8, int(ey) - 8
        window = bright[y0:y0 + 17, x0:x0 + 17]
        ys, xs = np.nonzero(window > 128)
        assert len(xs) > 0
        assert abs(x0 + xs.mean() - ex) < 2.0 and abs(y0 + ys.mean() - ey) < 2.0


def test_checkpoint_keys_follow_torchvision_resnet50_and_deep3d_layout():
    keys = ReconNet().state_dict().keys()
    backbone = [k[len("backbone."):] for k in keys if k.startswith("backbone.")]
    assert len(backbone) == 318 and not any(k.startswith("fc.") for k in backbone)
    for name in ("conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer3.5.conv3.weight",
                 "layer4.2.bn3.num_batches_tracked", "layer2.0.downsample.1.running_mean"):
        assert name in backbone
    heads = [k for k in keys if k.startswith("final_layers.")]
    assert len(heads) == 14 and ReconNet().final_layers[1].out_channels == 64


def test_extract_gives_64_expression_values_and_skips_faceless_frames(extractor, small):
    style, net = extractor
    flat = np.full_like(small, 128)
    with pytest.warns(UserWarning, match="skipped frames \\[1\\]"):
        result = style.extract(np.stack([small, flat]))
    assert result.kept == [0] and result.skipped == [1]
    assert result.coeff.shape == (1, 257) and result.exp.shape == (1, 64)
    assert torch.isfinite(result.exp).all() and result.exp.abs().sum() > 0
    # The expression must be the output of the exp head (second 1x1 conv) on the aligned crop.
    detection = style.detector.detect(small)[0]
    crop = torch.from_numpy(align_face(small, detection.points)[0]).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expected = net.final_layers[1](net.backbone(crop)).flatten(1)
    torch.testing.assert_close(result.exp, expected, rtol=1e-4, atol=1e-5)


def test_float_tensor_frames_are_accepted(small):
    frames = torch.from_numpy(small).float()[None] / 255.0  # ComfyUI IMAGE layout
    detection = FaceDetector().detect(frames)[0]
    assert detection is not None
    np.testing.assert_allclose(detection.points, FaceDetector().detect(small)[0].points, atol=1e-3)


def test_no_face_at_all_is_an_input_error(extractor):
    style, _ = extractor
    with pytest.raises(InputError, match="no face"):
        style.extract(np.full((1, 128, 128, 3), 90, dtype=np.uint8))


def test_missing_weights_name_folder_and_source(tmp_path):
    with pytest.raises(MissingModelError) as info:
        StyleExtractor.from_pretrained(tmp_path / "3dmm")
    message = str(info.value)
    assert "epoch_20.pth" in message and "models/ditalker/3dmm" in message and "Deep3DFaceRecon_pytorch" in message


def test_precomputed_files_load_like_the_official_loader(tmp_path):
    rng = np.random.default_rng(0)
    coeff = rng.standard_normal((7, 257)).astype(np.float32)
    savemat(tmp_path / "a.mat", {"coeff": coeff})
    np.testing.assert_allclose(load_expression(tmp_path / "a.mat").numpy(), coeff[:, 80:144])
    savemat(tmp_path / "b.mat", {"exp": coeff[:, 80:144], "id": coeff[:, :80]})  # Deep3DFaceRecon save_coeff
    np.testing.assert_allclose(load_expression(tmp_path / "b.mat").numpy(), coeff[:, 80:144])
    exp = coeff[:, 80:144]
    np.savetxt(tmp_path / "c.txt", exp)
    np.testing.assert_allclose(load_expression(tmp_path / "c.txt").numpy(), exp, rtol=1e-6)
    np.savetxt(tmp_path / "one.txt", exp[:1])
    assert load_expression(tmp_path / "one.txt").shape == (1, 64)
    np.save(tmp_path / "d.npy", exp)
    np.testing.assert_array_equal(load_expression(tmp_path / "d.npy").numpy(), exp)
    np.save(tmp_path / "e.npy", coeff)
    np.testing.assert_array_equal(load_expression(tmp_path / "e.npy").numpy(), exp)
    np.save(tmp_path / "bad.npy", coeff[:, :10])
    with pytest.raises(InputError, match="expected"):
        load_expression(tmp_path / "bad.npy")


def test_style_clip_pads_short_and_crops_long_sequences():
    short = torch.arange(10 * 64, dtype=torch.float32).reshape(10, 64)
    clip, pad = make_style_clip(short)
    assert clip.shape == (256, 64) and pad.dtype == torch.bool
    assert torch.equal(clip[:10], short) and not clip[10:].any()
    assert pad.tolist() == [False] * 10 + [True] * 246

    long = torch.arange(300, dtype=torch.float32)[:, None].repeat(1, 64)
    clip, pad = make_style_clip(long, mode="middle")
    assert clip[0, 0] == (300 - 256 + 1) // 2 and clip.shape == (256, 64) and not pad.any()
    assert make_style_clip(long, mode=5)[0][0, 0] == 5
    first = make_style_clip(long, mode="random", generator=torch.Generator().manual_seed(3))[0]
    again = make_style_clip(long, mode="random", generator=torch.Generator().manual_seed(3))[0]
    assert torch.equal(first, again) and 0 <= first[0, 0] <= 300 - 256
    assert not make_style_clip(long[:256])[1].any()
    with pytest.raises(InputError):
        make_style_clip(long, mode=100)
    with pytest.raises(InputError):
        make_style_clip(long[:0])


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("--out", required=True)
    style3dmm.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_converts_mat_and_extracts_from_an_image_folder(tmp_path, recon, small):
    from PIL import Image

    coeff = np.random.default_rng(1).standard_normal((4, 257)).astype(np.float32)
    savemat(tmp_path / "in.mat", {"coeff": coeff})
    style3dmm.run(_cli([str(tmp_path / "in.mat"), "--out", str(tmp_path / "out.txt")]))
    np.testing.assert_allclose(np.loadtxt(tmp_path / "out.txt"), coeff[:, 80:144], rtol=1e-5, atol=1e-6)

    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(small).save(frames / "0001.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(frames / "0002.png")  # other size, no face
    with pytest.warns(UserWarning):
        style3dmm.run(_cli([str(frames), "--out", str(tmp_path / "style.mat"), "--recon", str(recon[0])]))
    saved = loadmat(tmp_path / "style.mat")["coeff"]
    assert saved.shape == (1, 257)
    assert load_expression(tmp_path / "style.mat").shape == (1, 64)
