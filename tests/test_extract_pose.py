"""DWPose frames: adapter geometry, the DWPose-style renderer, the three input routes and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_models import DET_HW, save_tiny_dwpose

from ditalker_core.errors import InputError, MissingModelError
from ditalker_core.extract import pose as pose_mod
from ditalker_core.extract.pose_render import HAND_BONE_COLORS, Person, PoseFrame, render_pose


def test_pose_frames_land_on_the_latent_grid():
    # The official PoseGuider's strides (3 blocks + conv_out): pose (F, H/2, W/2) -> latent (F/4, H/8, W/8).
    assert pose_mod.pose_size(512, 512) == (256, 256)
    assert pose_mod.pose_size(384, 640) == (192, 320)
    guider = torch.nn.Sequential(
        torch.nn.Conv3d(3, 16, (3, 3, 3), stride=1, padding=1),
        torch.nn.Conv3d(16, 32, (2, 3, 3), stride=2, padding=(0, 1, 1)),
        torch.nn.Conv3d(32, 8, (2, 3, 3), stride=1, padding=(0, 1, 1)),
        torch.nn.Conv3d(8, 4, (3, 3, 3), stride=2, padding=1),
    )
    frames, height, width = 16, 64, 96
    h, w = pose_mod.pose_size(height, width)
    with torch.no_grad():
        latent = guider(torch.zeros(1, 3, frames, h, w))
    assert latent.shape == (1, 4, frames // 4, height // 8, width // 8)
    with pytest.raises(InputError):
        pose_mod.pose_size(500, 512)


def _person() -> Person:
    person = Person()
    person.body[1] = (40, 30, 1.0)  # neck
    person.body[2] = (16, 30, 1.0)  # right shoulder
    person.body[3] = (16, 60, 0.1)  # right elbow, below the confidence threshold
    person.right_hand[0] = (8, 80, 1.0)  # wrist
    person.right_hand[1] = (40, 80, 1.0)  # thumb root
    person.face[0] = (60, 10, 1.0)  # jaw line
    person.face[30] = (80, 10, 1.0)  # nose tip: face interior
    return person


def test_renderer_uses_dwpose_colours_at_the_keypoints():
    image = render_pose(PoseFrame([_person()], 100, 100), 100, 100, face="full")
    assert image.shape == (100, 100, 3) and image.dtype == np.uint8
    # Limb neck -> right shoulder: colour 0 (red) dimmed to 60 %, filled around its middle.
    assert tuple(image[30, 28]) == (153, 0, 0)
    assert tuple(image[33, 28]) == (153, 0, 0)  # 3 px off the axis: inside the 4 px half-width
    assert tuple(image[37, 28]) == (0, 0, 0)
    # Joints in full colour on top: neck is colour 1, right shoulder colour 2.
    assert tuple(image[30, 40]) == (255, 85, 0)
    assert tuple(image[30, 16]) == (255, 170, 0)
    # Low-confidence elbow: neither its joint nor the shoulder -> elbow limb is drawn.
    assert tuple(image[60, 16]) == (0, 0, 0) and tuple(image[45, 16]) == (0, 0, 0)
    # Hand: first bone in hue 0, joints blue; face landmarks white.
    assert tuple(image[80, 24]) == HAND_BONE_COLORS[0]
    assert tuple(image[80, 8]) == (0, 0, 255)
    assert tuple(image[10, 60]) == (255, 255, 255)
    assert tuple(image[10, 80]) == (255, 255, 255)


def test_renderer_face_modes_and_scaling():
    frame = PoseFrame([_person()], 100, 100)
    contour = render_pose(frame, 100, 100, face="contour")
    assert tuple(contour[10, 60]) == (255, 255, 255)  # jaw line kept
    assert tuple(contour[10, 80]) == (0, 0, 0)  # interior removed (paper Sec. 3.1)
    assert tuple(render_pose(frame, 100, 100, face="none")[10, 60]) == (0, 0, 0)
    # Keypoints are in the source frame's pixels; a 50 px canvas halves every position.
    small = render_pose(frame, 50, 50, face="full")
    assert tuple(small[15, 20]) == (255, 85, 0)
    assert tuple(small[5, 30]) == (255, 255, 255)


def _openpose_dict(normalised: bool, width: int = 100, height: int = 80) -> dict:
    body = np.zeros((18, 3), np.float32)
    body[1] = (50, 40, 1)
    body[2] = (30, 40, 1)
    face = np.zeros((70, 3), np.float32)  # controlnet_aux writes 68 landmarks + 2 eyes
    face[0] = (70, 20, 1)
    if normalised:
        for points in (body, face):
            points[:, 0] /= width
            points[:, 1] /= height
    return {
        "people": [{"pose_keypoints_2d": body.ravel().tolist(), "face_keypoints_2d": face.ravel().tolist(),
                    "hand_left_keypoints_2d": None, "hand_right_keypoints_2d": None}],
        "canvas_width": width, "canvas_height": height,
    }


def test_pose_keypoint_json_renders_at_adapter_size_in_pixels_or_fractions():
    pixels = [_openpose_dict(False)] * 3
    fractions = [_openpose_dict(True)] * 3
    frames = pose_mod.keypoints_to_frames(pixels, (64, 48), num_frames=5, face="full")
    assert frames.shape == (3, 5, 32, 24) and frames.dtype == torch.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0
    assert torch.equal(frames, pose_mod.keypoints_to_frames(fractions, (64, 48), num_frames=5, face="full"))
    # The neck joint (50, 40) of a 100x80 canvas sits at (12, 16) of a 24x32 pose frame, in colour 1.
    neck = frames[:, 0, 16, 12]
    assert neck[0] > 0.8 and 0.2 < neck[1] < 0.5 and neck[2] < 0.1
    assert frames[:, 0, 2:4, 29:].sum() == 0  # far corner stays black
    parsed = pose_mod.parse_pose_keypoints(_openpose_dict(False))
    assert len(parsed) == 1 and parsed[0].people[0].face.shape == (68, 3)
    with pytest.raises(InputError):
        pose_mod.parse_pose_keypoints([{"people": []}])


def test_preprocessor_images_resized_to_adapter_size_and_count():
    # A ComfyUI IMAGE batch from a DWPose preprocessor: 5 frames, each a flat grey level.
    levels = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8])
    images = levels[:, None, None, None].expand(5, 90, 70, 3).clone()
    frames = pose_mod.adapter_frames(images, (64, 48), num_frames=8)
    assert frames.shape == (3, 8, 32, 24)
    # Too short: played back and forth, so motion stays continuous.
    expected = levels[[0, 1, 2, 3, 4, 3, 2, 1]]
    torch.testing.assert_close(frames.mean(dim=(0, 2, 3)), expected, atol=1e-6, rtol=0)
    as_uint8 = (images.numpy() * 255).round().astype(np.uint8)
    torch.testing.assert_close(pose_mod.adapter_frames(as_uint8, (64, 48), 8), frames, atol=1 / 255, rtol=0)
    assert pose_mod.adapter_frames(images, (64, 48), num_frames=3).shape == (3, 3, 32, 24)
    with pytest.raises(InputError):
        pose_mod.adapter_frames(torch.zeros(2, 3, 32, 32), (64, 48))


def test_frame_indices_and_retiming():
    assert pose_mod.frame_indices(4, 9).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    assert pose_mod.frame_indices(1, 3).tolist() == [0, 0, 0]
    assert pose_mod.retime_indices(10, 50.0, 25.0).tolist() == [0, 2, 4, 6, 8]
    assert pose_mod.retime_indices(4, 25.0, 25.0).tolist() == [0, 1, 2, 3]


# --- DWPose through rtmlib with tiny ONNX graphs of the real models' I/O signatures ----------------------

@pytest.fixture(scope="module")
def tiny_dwpose(tmp_path_factory):
    return save_tiny_dwpose(tmp_path_factory.mktemp("dwpose"))


def test_dwpose_route_runs_rtmlib_end_to_end(tiny_dwpose):
    det, pose = pose_mod.find_dwpose([tiny_dwpose])
    detector = pose_mod.DWPose(det, pose)
    frames = np.full((3, *DET_HW, 3), 90, dtype=np.uint8)
    found = detector(frames[0])
    assert (found.height, found.width) == DET_HW and len(found.people) == 1
    person = found.people[0]
    # OpenPose order: nose, neck (mean of the shoulders), right shoulder (COCO 6), left shoulder (COCO 5).
    np.testing.assert_allclose(person.body[[0, 1, 2, 5], :2], [[32, 12], [32, 32], [17, 32], [47, 32]], atol=1e-3)
    np.testing.assert_allclose(person.body[[0, 1, 2, 5], 2], 1.0)
    assert person.body[3, 2] == 0.0  # no response -> invisible
    np.testing.assert_allclose(person.face[0], (27, 27, 1), atol=1e-3)
    np.testing.assert_allclose(person.left_hand[0], (37, 42, 1), atol=1e-3)

    out = pose_mod.detect_to_frames(frames, detector, (64, 64), num_frames=4)
    assert out.shape == (3, 4, 32, 32)
    # Limb neck -> right shoulder (red at 60 %) between the joints, x 22-27 of the 64 px drawing = 12 here.
    torch.testing.assert_close(out[:, 0, 16, 12], torch.tensor([0.6, 0.0, 0.0]), atol=0.02, rtol=0)


def test_missing_dwpose_files_name_folder_and_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingModelError) as error:
        pose_mod.find_dwpose()
    message = str(error.value)
    assert "models/ditalker/dwpose" in message and "yolox_l.onnx" in message and "yzd-v/DWPose" in message
    (tmp_path / "yolox_l.onnx").write_bytes(b"")
    with pytest.raises(MissingModelError, match="dw-ll_ucoco_384.onnx"):
        pose_mod.DWPose(tmp_path / "yolox_l.onnx", tmp_path / "nothing.onnx")


def test_cli_writes_pose_videos(tmp_path, tiny_dwpose):
    from ditalker_core.extract.__main__ import main
    from ditalker_core.media import read_video, write_video

    keypoints = tmp_path / "pose.json"
    keypoints.write_text(json.dumps([_openpose_dict(False)] * 4))
    assert main(["pose", str(keypoints), "--out", str(tmp_path / "a.mp4"), "--width", "64", "--height", "64"]) == 0
    frames, fps = read_video(tmp_path / "a.mp4")
    assert frames.shape == (4, 32, 32, 3) and fps == 25.0 and frames.max() > 200

    style = tmp_path / "style.mp4"
    write_video(style, np.full((6, *DET_HW, 3), 90, dtype=np.uint8), 50.0)
    args = ["pose", str(style), "--out", str(tmp_path / "b.mp4"), "--width", "64", "--height", "64",
            "--det", str(tiny_dwpose / pose_mod.DET_FILE), "--pose", str(tiny_dwpose / pose_mod.POSE_FILE)]
    assert main(args) == 0
    frames, _ = read_video(tmp_path / "b.mp4")
    assert frames.shape == (3, 32, 32, 3)  # 6 frames at 50 fps -> 3 at 25 fps
    assert frames[0, 16, 12, 0] > 120  # the drawn limb survives encoding
