"""Eye/lip/face region masks from MediaPipe Face Mesh and their per-clip union PNGs."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from ditalker_core.errors import InputError
from ditalker_core.extract import masks as masks_module
from ditalker_core.extract.masks import FaceMasker, RegionMasks, clip_mask_paths, union_masks, write_clip_masks

skimage_data = pytest.importorskip("skimage.data")

# Hand-checked points of skimage's astronaut photo (x, y).
LEFT_PUPIL, RIGHT_PUPIL, NOSE_TIP, MOUTH_CENTRE = (205, 101), (246, 104), (225, 127), (224, 146)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def photo_masks(astronaut) -> RegionMasks:
    flat = np.full_like(astronaut, 128)
    with pytest.warns(UserWarning, match="no face found in 1 of 2"):
        return FaceMasker()(np.stack([astronaut, flat]))


def test_masks_are_binary_and_sit_on_the_face(photo_masks):
    for mask in photo_masks.regions().values():
        assert mask.shape == (2, 512, 512) and mask.dtype == np.uint8
        assert set(np.unique(mask[0])) == {0, 255}
    eye, lip, face = photo_masks.eye[0], photo_masks.lip[0], photo_masks.face[0]
    for x, y in (LEFT_PUPIL, RIGHT_PUPIL):
        assert eye[y, x] == 255
    assert lip[MOUTH_CENTRE[1], MOUTH_CENTRE[0]] == 255 and eye[MOUTH_CENTRE[1], MOUTH_CENTRE[0]] == 0
    assert face[NOSE_TIP[1], NOSE_TIP[0]] == 255 and face[20, 20] == 0 and face[400, 225] == 0
    assert not (eye & ~face).any(), "eye mask must lie inside the face mask"
    assert not (lip & ~face).any(), "lip mask must lie inside the face mask"
    eye_rows, lip_rows = np.nonzero(eye)[0], np.nonzero(lip)[0]
    assert lip_rows.min() > eye_rows.max(), "lip mask must lie below the eyes"
    assert face.sum() > 4 * eye.sum() > 0


def test_frames_without_a_face_get_empty_masks_and_are_reported(photo_masks):
    assert photo_masks.missing == [1]
    assert not photo_masks.face[1].any() and not photo_masks.eye[1].any() and not photo_masks.lip[1].any()
    only_missing = RegionMasks(*(m[1:] for m in photo_masks.regions().values()), missing=[0])
    with pytest.raises(InputError, match="no face"):
        union_masks(only_missing)


def test_union_covers_every_frame(photo_masks):
    shifted = RegionMasks(*(np.roll(m[:1], 40, axis=2) for m in photo_masks.regions().values()))
    both = RegionMasks(*(np.concatenate([a[:1], b]) for a, b in
                         zip(photo_masks.regions().values(), shifted.regions().values())))
    unions = union_masks(both)
    for name, union in unions.items():
        assert union.shape == (512, 512) and union.dtype == np.uint8
        np.testing.assert_array_equal(union, np.maximum(both.regions()[name][0], both.regions()[name][1]))
        assert union.sum() > photo_masks.regions()[name][0].sum()


def test_official_paths_need_videos_25_or_a_root(tmp_path):
    paths = clip_mask_paths(tmp_path / "videos_25" / "clip7.mp4")
    assert paths == {"eye": tmp_path / "eye_masks" / "clip7.png", "lip": tmp_path / "lip_mask" / "clip7.png",
                     "face": tmp_path / "face_mask" / "clip7.png"}
    with pytest.raises(InputError, match="videos_25"):
        clip_mask_paths(tmp_path / "clips" / "clip7.mp4")


def test_clip_union_pngs_are_written_where_the_loader_reads_them(tmp_path, astronaut):
    from ditalker_core.media import read_video, write_video

    small = np.array(Image.fromarray(astronaut).resize((256, 256), Image.Resampling.BILINEAR))
    frames = np.stack([small, np.roll(small, 24, axis=1), np.roll(small, 48, axis=1)])
    video = write_video(tmp_path / "videos_25" / "clip.mp4", frames, fps=25)
    paths = write_clip_masks(video)
    decoded = read_video(video)[0]
    per_frame = FaceMasker()(decoded)
    for name, folder in (("eye", "eye_masks"), ("lip", "lip_mask"), ("face", "face_mask")):
        path = tmp_path / folder / "clip.png"
        assert paths[name] == path and path.is_file()
        image = Image.open(path)
        assert image.mode == "L" and image.size == (256, 256)
        union = np.array(image)
        assert set(np.unique(union)) == {0, 255}
        for mask in per_frame.regions()[name]:
            assert mask.any() and not (mask & ~union).any(), f"{name} union misses part of a frame"
    # face moved 48 px right over the clip: the union spans more than one frame's mask
    face_union = np.array(Image.open(paths["face"]))
    assert np.ptp(np.nonzero(face_union)[1]) > np.ptp(np.nonzero(per_frame.face[0])[1]) + 40


def test_cli_writes_masks_for_a_folder_of_videos(tmp_path, astronaut):
    from ditalker_core.media import write_video

    small = np.array(Image.fromarray(astronaut).resize((192, 192), Image.Resampling.BILINEAR))
    write_video(tmp_path / "in" / "a.mp4", np.stack([small, small]), fps=25)
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("--out", required=True)
    masks_module.add_arguments(parser)
    masks_module.run(parser.parse_args([str(tmp_path / "in"), "--out", str(tmp_path / "root")]))
    for folder in ("eye_masks", "lip_mask", "face_mask"):
        assert np.array(Image.open(tmp_path / "root" / folder / "a.png")).max() == 255
