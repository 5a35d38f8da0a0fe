"""The trainer on CPU with the tiny model and toy helpers: each phase's step trains only its modules with every
loss finite, the loss falls on one clip, a SIGKILLed run resumes to the same losses, exports load."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ditalker_core.checkpoints import load_transformer, read_state_dict
from ditalker_core.media import write_video
from ditalker_core.models import module_group
from training.synthetic.speech import synthesize
from test_training_preprocess import TEXT, talking_frames

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "training" / "configs"
SIZE = 64  # pixels; the tiny model's latent grid is 8 x 8
# A 4-block tiny model (REPA at block 2) on 8-frame clips keeps a CPU step well under a second.
SMALL = {"num_layers": 4, "repa_depth": 2, "audio_frames": 8}


def _write_masks(root: Path, name: str) -> None:
    """Eye, lip and face masks of the astronaut crop below (positions from the photo, in 64 px)."""
    from PIL import Image, ImageDraw

    shapes = {"eye_masks": [(25, 9, 33, 16), (31, 9, 39, 16)], "lip_mask": [(25, 16, 35, 22)],
              "face_mask": [(17, 2, 45, 30)]}
    for folder, boxes in shapes.items():
        image = Image.new("L", (SIZE, SIZE))
        for box in boxes:
            ImageDraw.Draw(image).ellipse(box, fill=255)
        (root / folder).mkdir(exist_ok=True)
        image.save(root / folder / f"{name}.png")


@pytest.fixture(scope="module")
def helpers(tmp_path_factory) -> dict[str, str]:
    from training.tiny import make_tiny_helpers

    return make_tiny_helpers(tmp_path_factory.mktemp("helpers"))


@pytest.fixture(scope="module")
def data(tmp_path_factory, helpers) -> Path:
    """One talking clip (generated face + synthesised speech) with every condition in the official layout."""
    from scipy.io import savemat

    from ditalker_core.extract.audio import AudioEncoder
    from ditalker_core.extract.phonemes import extract_phonemes
    from training.preprocess import crop_resize, write_wav

    root = tmp_path_factory.mktemp("data")
    speech = synthesize(TEXT)
    audio = np.interp(np.arange(0, len(speech.audio), speech.rate / 16000), np.arange(len(speech.audio)),
                      speech.audio).astype(np.float32)
    frames = crop_resize(talking_frames(audio, 16000), (0, 48, 240), SIZE)
    count = len(frames)
    for folder in ("videos_25", "audio", "whisper_audio_emb", "phoneme", "3dmm", "videos_25_dwpose"):
        (root / folder).mkdir()
    write_video(root / "videos_25" / "talk.mp4", frames, 25, audio=audio, sample_rate=16000)
    write_wav(root / "audio" / "talk.wav", np.pad(audio, (0, max(0, count * 640 - len(audio)))))
    features = AudioEncoder.from_pretrained(helpers["whisper"]).encode(audio, 25, count, 16000).windows
    torch.save(features, root / "whisper_audio_emb" / "talk.pt")
    ids = extract_phonemes(audio, TEXT, num_frames=count, sample_rate=16000).ids
    (root / "phoneme" / "talk.json").write_text(json.dumps(ids))
    rng = np.random.default_rng(0)
    savemat(str(root / "3dmm" / "talk.mat"), {"coeff": rng.normal(0, 0.3, (count, 257)).astype(np.float32)})
    pose = np.zeros((count, SIZE // 2, SIZE // 2, 3), np.uint8)
    for i in range(count):  # a moving "keypoint" blob
        x = 10 + int(6 * np.sin(i / 6))
        pose[i, 12:16, x:x + 4] = (255, 0, 85)
    write_video(root / "videos_25_dwpose" / "talk.mp4", pose, 25)
    _write_masks(root, "talk")
    record = {"file_path": "videos_25/talk.mp4", "text": "This person is happy and talks", "type": "video",
              "audio_emb_path": "whisper_audio_emb/talk.pt", "phoneme_dir": "phoneme/talk.json",
              "3dmm_dir": "3dmm/talk.mat", "pose_video_path": "videos_25_dwpose/talk.mp4",
              "audio_path": "audio/talk.wav", "num_frames": count}
    (root / "metadata.json").write_text(json.dumps([record]))
    return root


def overrides(data: Path, helpers: dict[str, str], out: Path, **extra) -> list[str]:
    items = {
        "output_dir": out, "model.config": "tiny", "model.overrides": json.dumps(SMALL), "model.init": "null",
        "model.init_modules": "[]", "model.gradient_checkpointing": False,
        "models.easyanimate": helpers["models.easyanimate"], "models.dinov2": helpers["models.dinov2"],
        "models.syncnet": helpers["models.syncnet"], "data.metadata": data / "metadata.json",
        "data.resolution": SIZE, "data.num_workers": 0, "train.mixed_precision": "no", "train.batch_size": 1,
        "train.grad_accum": 1, "train.warmup_steps": 0, "log.every": 1, "log.tensorboard": False,
        "checkpoint.every": 0, **extra}
    return [f"{k}={v}" for k, v in items.items()]


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def weights_by_group(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    state, _ = read_state_dict(path)
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        groups.setdefault(module_group(key), {})[key] = value
    return groups


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    """A complete tiny model file standing in for the EasyAnimateV3 / phase-1 weights."""
    from ditalker_core.checkpoints import save_checkpoint
    from ditalker_core.models import DiTalkerTransformer3DModel, get_config

    torch.manual_seed(0)
    model = DiTalkerTransformer3DModel(**get_config("tiny", **SMALL))
    with torch.no_grad():  # non-zero condition outputs, so every module's gradient path is open
        for name, param in model.named_parameters():
            if module_group(name) != "backbone" and not param.any():
                param.normal_(0, 0.02)
    path = tmp_path_factory.mktemp("base") / "base.safetensors"
    save_checkpoint(model, path)
    return path


PHASES = {
    "phase1": {"backbone"},
    "phase2": {"audio_projection", "asfm.audio_attention", "asfm.style_attention", "seem.style", "scale_adapter",
               "pose_adapter", "repa_head"},
    "phase3": {"eca"},
}


@pytest.mark.parametrize("phase", sorted(PHASES))
def test_one_step_of_each_phase_trains_only_its_modules_with_every_loss(phase, data, helpers, base_model,
                                                                       tmp_path):
    from training.train import main

    out = tmp_path / phase
    main(["--config", str(CONFIGS / f"{phase}.yaml"), *overrides(
        data, helpers, out, **{"model.init": base_model, "model.init_modules": "[]", "train.max_steps": 1,
                               "train.lr": 1e-3, "losses.id.weight": 0.1, "losses.sync.weight": 0.1,
                               "model.gradient_checkpointing": phase == "phase2",
                               "train.grad_accum": 2 if phase == "phase3" else 1})])
    (line,) = metrics(out)
    for term in ("loss", "rec", "eye", "vb", "id", "sync_l2", "syncnet"):
        assert np.isfinite(line[term]), (term, line)
    assert line["syncnet"] > 0 and -1 <= line["id"] <= 1  # BCE of a probability; a negative cosine

    before, after = weights_by_group(base_model), weights_by_group(out / "transformer.safetensors")
    changed = {group for group, tensors in after.items()
               if any(not torch.equal(value, before[group][key]) for key, value in tensors.items())}
    assert changed == PHASES[phase]


def test_loss_halves_in_200_steps_on_one_clip(data, helpers, tmp_path):
    from training.train import main

    out = tmp_path / "fit"
    main(["--config", str(CONFIGS / "phase1.yaml"), *overrides(
        data, helpers, out, **{"train.max_steps": 200, "train.lr": 2e-3, "conditions.drop": "{}", "data.resolution": 32,
                               "diffusion.timestep_sampling": "uniform"})])
    losses = [line["loss"] for line in metrics(out)]
    assert len(losses) == 200
    assert np.mean(losses[-20:]) < 0.5 * losses[0], (losses[0], losses[-20:])


def test_sigkill_then_resume_reproduces_the_uninterrupted_run(data, helpers, tmp_path):
    from training.checkpointing import list_states
    from training.train import main

    common = {"train.max_steps": 8, "train.lr": 1e-3, "checkpoint.every": 2, "checkpoint.keep": 2,
              "losses.id.weight": 0.1, "model.trainable": "[backbone, repa_head]", "train.ema.enabled": True}
    reference = tmp_path / "reference"
    main(["--config", str(CONFIGS / "phase1.yaml"), *overrides(data, helpers, reference, **common)])

    out = tmp_path / "killed"
    argv = [sys.executable, str(ROOT / "training" / "train.py"), "--config", str(CONFIGS / "phase1.yaml"),
            *overrides(data, helpers, out, **{**common, "train.max_steps": 1000})]
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # kill it after its second state, mid-way through step 5 or 6
            if len(list_states(out / "checkpoints")) >= 2:
                break
            assert process.poll() is None, "training exited early"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    states = list_states(out / "checkpoints")
    assert states and all((path / "state.json").is_file() for _, path in states)
    for _, path in states:  # every state that exists is complete and loadable
        json.loads((path / "state.json").read_text())
        read_state_dict(path / "trainable.safetensors")

    main(["--config", str(CONFIGS / "phase1.yaml"), *overrides(data, helpers, out, **common)])
    resumed, expected = metrics(out), metrics(reference)
    assert [m["step"] for m in resumed] == list(range(1, 9))
    for got, want in zip(resumed, expected):
        for key in ("loss", "rec", "eye", "vb", "id", "lr"):
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), (got["step"], key)
    for name in ("transformer.safetensors", "transformer_ema.safetensors"):  # weights, optimiser and EMA resumed
        got, want = read_state_dict(out / name)[0], read_state_dict(reference / name)[0]
        assert all(torch.allclose(got[k], want[k], rtol=1e-4, atol=1e-6) for k in want), name
    assert not list((out / "checkpoints").glob("*.tmp"))
    assert len(list_states(out / "checkpoints")) == 2  # checkpoint.keep


def test_exported_checkpoints_load_and_sample(data, helpers, base_model, tmp_path):
    from ditalker_core.media import load_audio, read_video
    from ditalker_core.pipeline import DiTalkerPipeline, SamplingOptions
    from ditalker_core.checkpoints import load_modules
    from training.conditioning import load_frozen
    from training.config import load_config
    from training.dataset import read_metadata
    from training.train import main
    from training.validation import record_conditions

    out = tmp_path / "phase2"
    main(["--config", str(CONFIGS / "phase2.yaml"), *overrides(
        data, helpers, out, **{"model.init": base_model, "train.max_steps": 1, "losses.sync.weight": 0,
                               "losses.id.weight": 0})])
    small = out / "transformer.safetensors"
    groups = set(weights_by_group(small))
    assert "backbone" not in groups and "asfm.audio_attention" in groups  # trained modules only

    model = load_transformer(base_model)
    assert load_modules(model, small) == sorted(groups)
    for key, value in read_state_dict(small)[0].items():
        assert torch.equal(model.state_dict()[key], value)

    full = tmp_path / "phase1"
    main(["--config", str(CONFIGS / "phase1.yaml"), *overrides(
        data, helpers, full, **{"train.max_steps": 1, "validation.every": 1, "validation.steps": 2})])
    frames, fps = read_video(full / "validation" / "step-000000001.mp4")
    assert frames.shape == (8, SIZE, SIZE, 3) and fps == 25  # one model window, sampled by the pipeline
    assert load_audio(full / "validation" / "step-000000001.mp4")[0].size > 0  # with the clip's sound

    loaded = load_transformer(full / "transformer.safetensors")
    assert loaded.config.num_layers == 4 and loaded.config.audio_frames == 8
    config = load_config(CONFIGS / "phase1.yaml", overrides(data, helpers, full))
    frozen = load_frozen(config, [record.text for record in read_metadata(data / "metadata.json")],
                         torch.device("cpu"), torch.float32)
    record = read_metadata(data / "metadata.json")[0]
    conditions = record_conditions(record, frozen, 12, SIZE, loaded.config.style_max_len)
    video = DiTalkerPipeline(loaded, frozen.vae)(conditions, SamplingOptions(steps=2, overlap=0))
    assert video.shape == (12, SIZE, SIZE, 3) and torch.isfinite(video).all()  # two windows, 12 frames


def test_every_frozen_helper_is_loaded_in_the_training_dtype(data, helpers, tmp_path):
    from training.conditioning import load_frozen
    from training.config import load_config

    from ditalker_core.demo import VAE as DEMO_VAE

    config = load_config(CONFIGS / "phase1.yaml", overrides(data, helpers, tmp_path, **{
        "losses.id.weight": 0.1, "losses.sync.weight": 0.1, "models.vae": DEMO_VAE}))
    frozen = load_frozen(config, [TEXT], torch.device("cpu"), torch.bfloat16)
    for name in ("vae", "clip", "dinov2", "syncnet"):
        assert {p.dtype for p in getattr(frozen, name).parameters()} == {torch.bfloat16}, name
    assert frozen.vae.config.scaling_factor == 0.66124  # models.vae, not the EasyAnimate folder's vae/


def test_memory_cache_gives_the_uncached_inputs_and_encodes_each_clip_once(data, helpers, tmp_path):
    from training.conditioning import StepRandom, load_frozen, prepare_inputs
    from training.config import load_config
    from training.dataset import ClipDataset, read_metadata

    records = read_metadata(data / "metadata.json")
    batch = torch.utils.data.default_collate([ClipDataset(records, 8, SIZE, 0, 32)[(0, 0)]] * 2)
    results = {}
    for cached in (False, True):
        config = load_config(CONFIGS / "phase1.yaml", overrides(data, helpers, tmp_path, **{
            "data.memory_cache": cached, "data.inpaint_mask": "first_frame"}))
        frozen = load_frozen(config, [r.text for r in records], torch.device("cpu"), torch.float32)
        calls = []
        encode = frozen.vae.encode
        frozen.vae.encode = lambda video: calls.append(video.shape[0]) or encode(video)
        runs = [prepare_inputs(batch, frozen, config, 8, StepRandom.of_step(0, s, 0, 0, 2), torch.device("cpu"))
                for s in (1, 1, 2)]
        results[cached] = runs, calls
    (plain, plain_calls), (cached, cached_calls) = results[False], results[True]
    for (lat_a, kw_a, _), (lat_b, kw_b, _) in zip(plain, cached):
        torch.testing.assert_close(lat_b, lat_a, atol=1e-4, rtol=0)  # batched vs one-clip encodes
        torch.testing.assert_close(kw_b["inpaint_latents"], kw_a["inpaint_latents"], atol=1e-4, rtol=0)
        torch.testing.assert_close(kw_b["clip_encoder_hidden_states"], kw_a["clip_encoder_hidden_states"])
    assert not torch.equal(cached[0][0], cached[2][0])  # a new posterior sample for a new step
    assert plain_calls == [2, 2, 2] * 3  # video, mask and masked video of the batch, every step
    assert cached_calls == [1, 1, 1]  # the two samples are the same clip: each input encoded once, ever


def test_continuation_masks_know_the_first_frame_or_the_overlap():
    from training.conditioning import inpaint_mask

    generator = torch.Generator().manual_seed(0)
    known = [int((inpaint_mask(32, 4, 4, "continuation", generator, 8)[0, :, 0, 0] == 0).sum()) for _ in range(2000)]
    assert set(known) == {1, 8}
    assert known.count(8) / len(known) == pytest.approx(0.5, abs=0.04)
    mask = inpaint_mask(32, 4, 4, "first_frame", generator)
    assert mask[0, 0].sum() == 0 and mask[0, 1:].min() == 1


def test_official_inpaint_masks_follow_easyanimates_mixture():
    """EasyAnimate's get_random_mask: 5 % a box on every frame, 30 % everything, 30 % all but the first k frames,
    30 % all but the first and last k frames (k in 1..4), 5 % a box over a frame range."""
    from training.conditioning import inpaint_mask

    generator = torch.Generator().manual_seed(0)
    kinds, ks, extents = [], set(), []
    for _ in range(3000):
        mask = inpaint_mask(16, 16, 16, "official", generator)[0]
        per_frame = mask.flatten(1).mean(1)
        if bool((per_frame == 1).all()):
            kinds.append("all")
        elif set(per_frame.tolist()) <= {0.0, 1.0}:
            known = (per_frame == 0).nonzero().flatten().tolist()
            head = len([i for i in known if i < 8])
            ks.add(head)
            kinds.append("after_k" if known == list(range(head)) else "between_k")
            if kinds[-1] == "between_k":
                assert known == list(range(head)) + list(range(16 - head, 16))
        else:
            box = mask.sum(0) > 0
            rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
            assert (mask[:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].flatten(1).amin(1) == per_frame.ceil()).all()
            assert rows[-1] - rows[0] + 1 <= 12 and cols[-1] - cols[0] + 1 <= 12  # at most 3/4 of each side
            extents.append((int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)))
            kinds.append("box_all_frames" if bool((per_frame > 0).all()) else "box_some_frames")
    for seed in range(100):  # every choice comes from the step's generator: equal generators, equal masks
        pair = [inpaint_mask(16, 16, 16, "official", torch.Generator().manual_seed(seed)) for _ in range(2)]
        assert torch.equal(*pair)
    share = {kind: kinds.count(kind) / len(kinds) for kind in set(kinds)}
    expected = {"box_all_frames": 0.05, "all": 0.3, "after_k": 0.3, "between_k": 0.3, "box_some_frames": 0.05}
    assert set(share) == set(expected)
    for kind, p in expected.items():
        assert share[kind] == pytest.approx(p, abs=0.03), kind
    assert ks == {1, 2, 3, 4}
    # box sides drawn in [16 / 4, 16 * 3 / 4) = 4..11 px, centred: 2 * (side // 2) = 4..10 px where not clipped
    assert max(h for h, _ in extents) == max(w for _, w in extents) == 10


def test_step_draws_depend_on_the_global_sample_not_on_the_split():
    from training.conditioning import StepRandom

    whole = StepRandom.of_step(7, 3, 1, 0, 4)
    halves = [StepRandom.of_step(7, 3, 1, first, 2) for first in (0, 2)]
    assert torch.equal(whole.randn((4, 3)), torch.cat([h.randn((2, 3)) for h in halves]))
    assert torch.equal(torch.rand(2, generator=halves[0].shared), torch.rand(2, generator=halves[1].shared))
    draws = [StepRandom.of_step(*key, 0, 1).rand() for key in ((7, 3, 1), (8, 3, 1), (7, 4, 1), (7, 3, 0))]
    assert len({float(d) for d in draws}) == 4  # seed, step and micro-step each change every draw
    sample = StepRandom.of_step(7, 3, 1, 0, 2)
    first = torch.randn(3, generator=StepRandom.of_step(7, 3, 1, 0, 2).samples[0])
    assert torch.equal(sample.randn((2, 3))[0], first)  # row i is sample i's own generator
    # Seeds from two 32-bit words of numpy's SeedSequence: 63 bits, so 10^5 steps x samples never share one.
    seeds = [g.initial_seed() for step in range(32) for g in StepRandom.of_step(7, step, 0, 0, 4).samples]
    assert max(seeds) < 2**63 and sum(seed >= 2**62 for seed in seeds) > len(seeds) // 4


def test_a_dinov2_folder_without_weights_is_named_missing(tmp_path):
    from ditalker_core.errors import MissingModelError
    from training.conditioning import load_dinov2

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(MissingModelError, match=r"DINOv2 folder for the identity loss not found .*model.safetensors"):
        load_dinov2(tmp_path, torch.device("cpu"), torch.float32)


def test_region_loss_weights_the_mask_by_hand():
    from training.losses import region_loss

    error = torch.arange(2 * 4 * 2 * 2 * 2, dtype=torch.float32).view(2, 4, 2, 2, 2)  # (B, C, F, h, w)
    mask = torch.zeros(2, 16, 16)
    mask[:, :8, :8] = 1  # the top-left latent cell of each 8x8 block grid -> latent (0, 0)
    expected = error[:, :, :, 0, 0].sum() / error.numel()
    assert float(region_loss(error, mask)) == pytest.approx(float(expected), rel=1e-6)
    mask[:, 4:8] = 0  # half of that cell: area-averaged to weight 0.5
    assert float(region_loss(error, mask)) == pytest.approx(float(expected) / 2, rel=1e-6)


def test_lip_term_enters_the_total_with_its_weight(data, helpers, tmp_path):
    from training.train import main

    out = tmp_path / "lip"
    main(["--config", str(CONFIGS / "phase1.yaml"), *overrides(data, helpers, out, **{
        "train.max_steps": 1, "losses.lip.weight": 7.0})])
    (line,) = metrics(out)
    assert line["lip"] > 0
    assert line["loss"] == pytest.approx(line["rec"] + 10 * line["eye"] + 7 * line["lip"] + line["vb"], rel=1e-5)
    assert len(list((out / "t5_cache").glob("*.safetensors"))) == 1  # the clips' one caption, encoded once


def test_reinit_returns_only_the_named_module_to_its_fresh_initialisation(base_model):
    from ditalker_core.errors import InputError
    from training.checkpointing import build_model
    from training.config import load_config

    def config(reinit: str) -> dict:
        return load_config(None, ["model.config=tiny", f"model.overrides={json.dumps(SMALL)}",
                                  f"model.init={base_model}", f"model.reinit={reinit}"])

    torch.manual_seed(1)
    model = build_model(config("[scale_adapter]"))
    base = weights_by_group(base_model)
    assert base["scale_adapter"]["scale_adapter.audio_head.2.weight"].abs().min() > 0  # the gates were trained
    for head in ("audio_head", "style_head"):  # fresh heads: zero weight, unit bias (every gate at tanh(1))
        assert model.scale_adapter.get_submodule(head)[2].weight.abs().max() == 0
        assert model.scale_adapter.get_submodule(head)[2].bias.tolist() == [1.0]
    state = model.state_dict()
    kept = {k: v for group, keys in base.items() if group != "scale_adapter" for k, v in keys.items()}
    assert kept and all(torch.equal(state[k], v) for k, v in kept.items())
    with pytest.raises(InputError, match=r"model.reinit has unknown modules \['scale'\]"):
        build_model(config("[scale]"))


def test_eye_term_is_the_error_inside_the_eye_mask_by_hand():
    from training.losses import reconstruction_losses

    noise = torch.full((1, 2, 1, 2, 2), 0.5)
    eps_hat = torch.tensor([[1.5, 2.5], [3.5, 4.5]]).expand(1, 2, 1, 2, 2)  # squared errors 1, 4, 9, 16 per channel
    eye = torch.zeros(1, 16, 16)
    eye[:, :8, 8:] = 1  # the top-right latent cell only
    rec, eye_term = reconstruction_losses(eps_hat, noise, eye)
    assert float(rec) == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert float(eye_term) == pytest.approx(8 / 8)  # error 4 at the masked cell of both channels, over 8 elements


def test_condition_dropout_matches_each_probability_independently():
    from training.conditioning import CONDITIONS, StepRandom, keep_masks

    drop = {"audio": 0.1, "phoneme": 0.3, "style": 0.5, "text": 0.2}
    keep = keep_masks(drop, StepRandom.of_step(0, 0, 0, 0, 20000))
    for name in CONDITIONS:
        assert float((~keep[name]).float().mean()) == pytest.approx(drop.get(name, 0.0), abs=0.012), name
    both = float((~keep["audio"] & ~keep["style"]).float().mean())
    assert both == pytest.approx(0.1 * 0.5, abs=0.008)  # independent draws, not one shared coin


def test_identity_loss_is_minus_the_cosine():
    from training.losses import identity_loss

    target = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    assert float(identity_loss(target * 3, target)) == pytest.approx(-1.0)
    assert float(identity_loss(-target, target)) == pytest.approx(1.0)
    assert float(identity_loss(torch.tensor([[[0.0, 1.0], [1.0, 1.0]]]), target)) == pytest.approx(
        -(0.0 + 2 ** -0.5) / 2)


def test_timesteps_are_drawn_uniformly_or_log_normally_by_hand():
    from training.losses import GaussianDiffusion

    diffusion = GaussianDiffusion()
    uniform = diffusion.sample_timesteps(4000, torch.Generator().manual_seed(0), "uniform")
    assert torch.equal(uniform, torch.randint(0, 1000, (4000,), generator=torch.Generator().manual_seed(0)))
    assert (int(uniform.min()), int(uniform.max())) == (0, 999)
    lognormal = diffusion.sample_timesteps(4000, torch.Generator().manual_seed(1))
    u = torch.randn(4000, generator=torch.Generator().manual_seed(1))
    assert torch.equal(lognormal, (torch.sigmoid(u) * 1000).long())  # t = sigmoid(u) * 1000, u ~ N(0, 1)
    assert float(lognormal.float().median()) == pytest.approx(500, abs=15)


def test_identity_loss_compares_each_token_over_its_features():
    from training.losses import identity_loss

    repa, target = torch.tensor([[[1.0, 2.0], [3.0, 1.0]]]), torch.tensor([[[2.0, 1.0], [0.0, 1.0]]])
    # token 0: cos((1, 2), (2, 1)) = 0.8; token 1: cos((3, 1), (0, 1)) = 1 / sqrt(10)
    assert float(identity_loss(repa, target)) == pytest.approx(-(0.8 + 10 ** -0.5) / 2)


def test_differentiable_decode_is_the_vae_decode_for_a_bf16_vae():
    from ditalker_core.models import get_vae_config
    from ditalker_core.models.vae import AutoencoderKLMagvit
    from training.losses import decode_with_grad

    torch.manual_seed(0)
    vae = AutoencoderKLMagvit(**get_vae_config("tiny", layers_per_block=1)).to(torch.bfloat16)
    latents = torch.randn(1, 4, 4, 4, 4)  # float32 latents, as the trainer's estimate is
    with torch.no_grad():
        torch.testing.assert_close(decode_with_grad(vae, latents), vae.decode(latents.to(torch.bfloat16)))


def test_posterior_of_the_diffusion_by_gaussian_conditioning():
    """The posterior q(x_{t-1} | x_t, x0) from the product of q(x_{t-1} | x0) and q(x_t | x_{t-1}) (precisions add),
    against the trainer's tables; t = 0 keeps the clipped variance of t = 1, as guided-diffusion does."""
    from training.losses import GaussianDiffusion

    tables = GaussianDiffusion().tables
    betas = np.linspace(1e-4, 2e-2, 1000)
    ac = np.cumprod(1 - betas)
    for t in (1, 10, 500, 999):
        precision = 1 / (1 - ac[t - 1]) + (1 - betas[t]) / betas[t]
        assert tables["post_c0"][t] == pytest.approx(np.sqrt(ac[t - 1]) / (1 - ac[t - 1]) / precision, rel=1e-9)
        assert tables["post_ct"][t] == pytest.approx(np.sqrt(1 - betas[t]) / betas[t] / precision, rel=1e-9)
        assert tables["post_log_var"][t] == pytest.approx(-np.log(precision), rel=1e-9)
    assert (tables["post_c0"][0], tables["post_ct"][0]) == (pytest.approx(1.0), 0.0)  # x_{-1} is x0 itself
    assert tables["post_log_var"][0] == tables["post_log_var"][1]
    assert tables["sqrt_ac"] == pytest.approx(np.sqrt(ac), rel=1e-12)


def test_noising_and_its_inverse_per_sample_of_a_batch():
    from training.losses import GaussianDiffusion

    diffusion = GaussianDiffusion()
    ac = np.cumprod(1 - np.linspace(1e-4, 2e-2, 1000))
    x0 = torch.tensor([0.5, -1.0, 2.0]).expand(2, 1, 1, 1, 3)
    noise = torch.tensor([1.0, 0.0, -1.0]).expand(2, 1, 1, 1, 3)
    t = torch.tensor([10, 700])
    x_t = diffusion.q_sample(x0, t, noise)
    for i in range(2):
        expected = np.sqrt(ac[t[i]]) * x0[i].numpy() + np.sqrt(1 - ac[t[i]]) * noise[i].numpy()
        np.testing.assert_allclose(x_t[i].numpy(), expected, rtol=1e-5)
    torch.testing.assert_close(diffusion.predict_x0(x_t, t, noise), x0, rtol=0, atol=1e-5)


def test_decoder_likelihood_at_t0_by_hand():
    """The t = 0 term: a Gaussian discretised to 256 bins on [-1, 1], the edge bins open-ended, with the tanh
    approximation of the normal CDF (within 2e-4 of the exact one), as guided-diffusion computes it."""
    from training.losses import _approx_standard_normal_cdf, discretized_gaussian_log_likelihood

    z = torch.linspace(-4, 4, 161, dtype=torch.float64)
    assert float((_approx_standard_normal_cdf(z) - torch.special.ndtr(z)).abs().max()) < 2e-4
    x = torch.tensor([-1.0, -0.3, 0.4, 1.0, -0.999, 0.999])  # +-0.999 themselves are inner bins (upstream's < / >)
    means = torch.tensor([-0.95, -0.25, 0.5, 0.9, -0.99, 0.99])
    sigma = torch.tensor([0.05, 0.1, 0.2, 0.1, 0.05, 0.05])
    cdf = lambda v: 0.5 * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3)))  # noqa: E731
    upper = cdf(((x - means + 1 / 255) / sigma).numpy())
    lower = cdf(((x - means - 1 / 255) / sigma).numpy())
    expected = np.log([upper[0], *(upper[1:3] - lower[1:3]), 1 - lower[3], *(upper[4:] - lower[4:])])
    np.testing.assert_allclose(discretized_gaussian_log_likelihood(x, means, sigma.log()).numpy(), expected,
                               rtol=1e-4)


def test_variance_term_with_a_wrong_mean_and_the_decoder_term_at_t0_per_sample():
    from training.losses import GaussianDiffusion, discretized_gaussian_log_likelihood

    betas = np.linspace(1e-4, 2e-2, 1000)
    ac = np.cumprod(1 - betas)
    posterior = lambda t: betas[t] * (1 - ac[t - 1]) / (1 - ac[t])  # noqa: E731
    x0 = torch.tensor([[0.3, -0.6], [0.9, 0.1]], dtype=torch.float64).view(2, 1, 1, 1, 2)
    noise = torch.tensor([[-0.7, 0.2], [0.5, -1.0]], dtype=torch.float64).view(2, 1, 1, 1, 2)
    eps = noise + 0.25  # a wrong noise estimate: the means differ
    v = torch.tensor([[0.4, -0.2], [0.6, 0.0]], dtype=torch.float64).view(2, 1, 1, 1, 2)
    t = torch.tensor([10, 0])
    diffusion = GaussianDiffusion()
    x_t = diffusion.q_sample(x0, t, noise).double()
    got = diffusion.vb_terms(x0, x_t, t, eps, v).double()
    expected = []
    for i, step in enumerate(t.tolist()):
        a, a_prev = ac[step], (ac[step - 1] if step else 1.0)
        c0, ct = betas[step] * np.sqrt(a_prev) / (1 - a), (1 - a_prev) * np.sqrt(1 - betas[step]) / (1 - a)
        xi, xt = x0[i].numpy(), x_t[i].numpy()
        true_mean = c0 * xi + ct * xt
        model_mean = c0 * (xt - np.sqrt(1 - a) * eps[i].numpy()) / np.sqrt(a) + ct * xt
        true_log_var = np.log(posterior(max(step, 1)))  # t = 0 keeps t = 1's variance
        frac = (v[i].numpy() + 1) / 2
        model_log_var = frac * np.log(betas[step]) + (1 - frac) * true_log_var
        if step:
            kl = 0.5 * (-1 + model_log_var - true_log_var + np.exp(true_log_var - model_log_var)
                        + (true_mean - model_mean) ** 2 * np.exp(-model_log_var))
            expected.append(kl.mean() / np.log(2))
        else:
            ll = discretized_gaussian_log_likelihood(x0[i], torch.from_numpy(model_mean),
                                                     torch.from_numpy(0.5 * model_log_var))
            expected.append(-float(ll.mean()) / np.log(2))
    np.testing.assert_allclose(got.numpy(), expected, rtol=2e-4)


def test_variance_term_by_hand():
    """KL between Gaussians with the true mean: 0 at the posterior variance, the closed form at beta_t."""
    from training.losses import GaussianDiffusion

    diffusion = GaussianDiffusion()
    t = torch.tensor([10])
    x0, noise = torch.full((1, 1, 1, 1, 1), 0.3), torch.full((1, 1, 1, 1, 1), -0.7)
    x_t = diffusion.q_sample(x0, t, noise)
    betas = np.linspace(1e-4, 2e-2, 1000)
    ac = np.cumprod(1 - betas)
    posterior = betas[10] * (1 - ac[9]) / (1 - ac[10])
    assert float(diffusion.vb_terms(x0, x_t, t, noise, -torch.ones_like(x0))) == pytest.approx(0.0, abs=1e-6)
    ratio = posterior / betas[10]
    expected = 0.5 * (-1 + np.log(betas[10] / posterior) + ratio) / np.log(2)
    assert float(diffusion.vb_terms(x0, x_t, t, noise, torch.ones_like(x0))) == pytest.approx(expected, rel=1e-4)


def _level(i: np.ndarray | int) -> np.ndarray | int:
    return 20 + 5 * i  # a flat grey per frame, distinct after H.264


def _stamped_clip(root: Path, frames: int = 40, phonemes: int | None = None) -> Path:
    """One clip in the dataset layout whose every stream is stamped with its frame index (``phonemes``: how many
    phoneme ids it has, default one per frame); no mask files. Returns its metadata file."""
    for folder in ("videos_25", "videos_25_dwpose", "whisper_audio_emb", "phoneme", "3dmm"):
        (root / folder).mkdir()
    video = np.stack([np.full((64, 64, 3), _level(i), np.uint8) for i in range(frames)])
    write_video(root / "videos_25" / "c.mp4", video, 25, crf=0)
    write_video(root / "videos_25_dwpose" / "c.mp4", video[:, :, ::-1].copy(), 25, crf=0)
    torch.save(torch.arange(frames, dtype=torch.float16).view(-1, 1, 1).expand(frames, 50, 8).contiguous(),
               root / "whisper_audio_emb" / "c.pt")
    (root / "phoneme" / "c.json").write_text(json.dumps([i % 70 for i in range(phonemes or frames)]))
    np.save(root / "3dmm" / "c.npy", np.zeros((frames, 64), np.float32))
    (root / "metadata.json").write_text(json.dumps([{
        "file_path": "videos_25/c.mp4", "text": "", "type": "video", "audio_emb_path": "whisper_audio_emb/c.pt",
        "phoneme_dir": "phoneme/c.json", "3dmm_dir": "3dmm/c.npy", "pose_video_path": "videos_25_dwpose/c.mp4",
        "num_frames": frames}]))
    return root / "metadata.json"


def test_a_dataset_window_holds_exactly_its_frames_audio_phonemes_and_pose(tmp_path, caplog):
    """Every stream of a clip is stamped with its frame index; a window starting at frame s must hold frames
    s .. s + F - 1 of each, and its first frame (the training reference) is video frame s. Missing region masks
    are empty masks, with a warning."""
    from training.dataset import ClipDataset, count_frames, read_metadata

    count = 8
    dataset = ClipDataset(read_metadata(_stamped_clip(tmp_path)), count, 64, seed=0, style_max_len=16,
                          style_start=0)
    assert count_frames(tmp_path / "videos_25" / "c.mp4") == 40  # from the container's header
    starts = set()
    for draw in range(6):
        sample = dataset[(0, draw)]
        start, expected = sample["start"], np.arange(sample["start"], sample["start"] + count)
        starts.add(start)
        assert sample["index"] == 0  # the record it came from
        assert sample["audio"][:, 0, 0].tolist() == expected.tolist()
        assert sample["phoneme_win"][:, 5].tolist() == (expected % 70).tolist()  # the window's centre column
        grey = sample["pixel_values"].float().mean(dim=(1, 2, 3)).numpy()
        np.testing.assert_allclose(grey, _level(expected), atol=1.5)
        assert sample["pose"].dtype == sample["pixel_values"].dtype == torch.uint8
        assert sample["pose"].shape == (count, 3, 32, 32)  # the pose adapter's half size
        np.testing.assert_allclose(sample["pose"].float().mean(dim=(1, 2, 3)).numpy(), _level(expected), atol=1.5)
        for name in ("eye", "face", "lip"):
            assert torch.equal(sample[f"{name}_mask"], torch.zeros(64, 64))
    assert len(starts) > 1  # random windows were drawn
    assert sum("lip mask is empty" in r.message for r in caplog.records) == 1  # warned once


def test_a_window_fits_the_shortest_stream_and_the_memory_cache_decodes_it_once(tmp_path, monkeypatch):
    """Phoneme ids for only 20 of 40 frames: every window lies inside those 20. With the memory cache a window
    is decoded once, and given again from memory equal to the first decode."""
    import training.dataset as module

    count = 8
    records = module.read_metadata(_stamped_clip(tmp_path, phonemes=20))
    reads: list[int] = []
    decode = module.read_frames
    monkeypatch.setattr(module, "read_frames", lambda *args: reads.append(args[1]) or decode(*args))
    dataset = module.ClipDataset(records, count, 64, seed=0, style_max_len=16, style_start=0, memory_cache=True)
    samples = [dataset[(0, draw)] for draw in range(12)]
    assert {s["start"] for s in samples} <= set(range(20 - count + 1)) and len({s["start"] for s in samples}) > 1
    assert all(len(s["phoneme_win"]) == count for s in samples)
    assert sorted(reads) == sorted(2 * [s for s in {s["start"] for s in samples}])  # video and pose, once each
    again = dataset[(0, 0)]
    assert torch.equal(again["pixel_values"], samples[0]["pixel_values"]) and len(reads) == 2 * len(
        {s["start"] for s in samples})


def test_metadata_in_json_jsonl_and_csv_gives_the_same_records(tmp_path):
    from ditalker_core.errors import InputError
    from training.dataset import read_metadata

    (tmp_path / "data" / "videos_25").mkdir(parents=True)
    (tmp_path / "root" / "feats").mkdir(parents=True)
    (tmp_path / "root" / "feats" / "a.pt").write_bytes(b"")  # found under data.root, not beside the metadata
    row = {"file_path": "videos_25/a.mp4", "text": "happy", "type": "video", "audio_emb_path": "feats/a.pt",
           "phoneme_dir": "p/a.json", "3dmm_dir": "/abs/a.npy", "pose_video_path": "pose/a.mp4",
           "audio_path": "wav/a.wav", "num_frames": "40"}
    image = {"file_path": "i.png", "type": "image"}
    data = tmp_path / "data"
    (data / "m.json").write_text(json.dumps([row, image]))
    (data / "m.jsonl").write_text(json.dumps(row) + "\n\n" + json.dumps(image) + "\n")
    (data / "m.csv").write_text(",".join(row) + "\n" + ",".join(str(v) for v in row.values()) + "\n")
    records = [read_metadata(data / name, root=tmp_path / "root") for name in ("m.json", "m.jsonl", "m.csv")]
    assert records[0] == records[1] == records[2] and len(records[0]) == 1
    (record,) = records[0]
    assert (record.video, record.text, record.num_frames) == (data / "videos_25/a.mp4", "happy", 40)
    assert record.audio_features == tmp_path / "root" / "feats" / "a.pt"
    assert (record.phonemes, record.style, record.audio) == (data / "p/a.json", Path("/abs/a.npy"), data / "wav/a.wav")
    assert record.masks == {"eye": data / "eye_masks/a.png", "lip": data / "lip_mask/a.png",
                            "face": data / "face_mask/a.png"}
    (data / "bare.json").write_text(json.dumps([dict(row, audio_path="", num_frames=None)]))
    assert (read_metadata(data / "bare.json")[0].audio, read_metadata(data / "bare.json")[0].num_frames) == (None, None)
    (data / "gap.json").write_text(json.dumps([{k: v for k, v in row.items() if k != "3dmm_dir"}]))
    with pytest.raises(InputError, match=r"gap.json, record 0: missing \['3dmm_dir'\]"):
        read_metadata(data / "gap.json")
    (data / "images.json").write_text(json.dumps([image]))
    with pytest.raises(InputError, match="has no video records"):
        read_metadata(data / "images.json")
    (data / "object.json").write_text(json.dumps(row))
    with pytest.raises(InputError, match="must be a list of records"):
        read_metadata(data / "object.json")
    with pytest.raises(InputError, match="does not exist; run `python -m training.preprocess`"):
        read_metadata(data / "none.json")


def test_masks_sit_beside_videos_25_or_beside_the_videos_folder():
    from training.dataset import mask_paths

    assert mask_paths(Path("/d/videos_25/s/a.mp4"))["lip"] == Path("/d/lip_mask/s/a.png")
    assert mask_paths(Path("/d/clips/a.mp4")) == {"eye": Path("/d/eye_masks/a.png"), "lip": Path("/d/lip_mask/a.png"),
                                                  "face": Path("/d/face_mask/a.png")}


def test_the_sampler_shards_each_step_and_resumes_at_any_step():
    from training.dataset import ResumableSampler

    def keys(rank: int, world: int, start: int, count: int) -> list[tuple[int, int]]:
        stream = iter(ResumableSampler(5, seed=3, batch_size=2, rank=rank, world=world, start=start))
        return [next(stream) for _ in range(count)]

    perms = [np.random.default_rng([3, epoch]).permutation(5) for epoch in range(3)]
    by_hand = [(int(perms[p // 5][p % 5]), p) for p in range(12)]
    assert keys(0, 1, 0, 12) == by_hand  # position p: epoch p // 5's permutation, draw number p
    assert keys(0, 2, 0, 4) == by_hand[0:2] + by_hand[4:6]  # rank 0 takes the first 2 of every 4
    assert keys(1, 2, 0, 4) == by_hand[2:4] + by_hand[6:8]
    assert keys(1, 2, 1, 2) == by_hand[6:8]  # resumed at step 1


def test_video_frames_are_resized_on_the_short_side_and_centre_cropped():
    from training.dataset import fit_square

    wide = torch.arange(32.0).view(1, 1, 4, 8)
    assert torch.equal(fit_square(wide, 4), wide[..., 2:6])
    assert torch.equal(fit_square(wide.transpose(2, 3), 4), wide.transpose(2, 3)[..., 2:6, :])
    assert torch.allclose(fit_square(torch.full((1, 1, 2, 3), 7.0), 4), torch.full((1, 1, 4, 4), 7.0))


def test_an_unusable_clip_is_skipped_for_the_next_one_and_ten_failures_stop(tmp_path, caplog):
    from ditalker_core.errors import InputError
    from training.dataset import ClipDataset, Record

    broken = [Record(tmp_path / f"gone{i}.mp4", "", tmp_path / "gone.pt", tmp_path / "p.json",
                     tmp_path / "s.npy", tmp_path / "pose.mp4", num_frames=40) for i in range(2)]
    dataset = ClipDataset(broken, 8, 64, seed=0)
    with pytest.raises(InputError, match=r"no usable sample after 10 tries: ") as error:
        dataset[(0, 0)]
    tries = str(error.value).split("tries: ", 1)[1].split(" | ")
    assert [t.split(": ", 1)[0] for t in tries] == [str(tmp_path / f"gone{i % 2}.mp4") for i in range(10)]
    assert sum("skipping unusable training sample" in r.message for r in caplog.records) == 2  # once per clip


def test_clips_without_sound_are_listed_before_the_first_step_when_the_sync_loss_reads_them(data, helpers,
                                                                                           tmp_path):
    """Official-format clips without a sound track (and no audio_path): refused at start with both fixes named;
    with the sync loss off they train."""
    from ditalker_core.errors import InputError
    from ditalker_core.media import read_video, write_video
    from training.train import main

    silent = tmp_path / "silent"
    shutil.copytree(data, silent)
    frames, _ = read_video(silent / "videos_25" / "talk.mp4")
    write_video(silent / "videos_25" / "talk.mp4", frames, 25)  # the picture only
    records = json.loads((silent / "metadata.json").read_text())
    records[0].pop("audio_path")
    (silent / "metadata.json").write_text(json.dumps(records))
    args = overrides(silent, helpers, tmp_path / "out", **{"train.max_steps": 1, "losses.sync.weight": 0.1})
    with pytest.raises(InputError) as error:
        main(["--config", str(CONFIGS / "phase2.yaml"), *args])
    message = str(error.value)
    assert "1 of 1 clips have no sound track" in message and "talk.mp4" in message
    assert "add the sound" in message and "losses.sync.weight=0" in message
    assert not (tmp_path / "out" / "metrics.jsonl").exists()
    main(["--config", str(CONFIGS / "phase2.yaml"), *overrides(
        silent, helpers, tmp_path / "quiet", **{"train.max_steps": 1, "losses.sync.weight": 0})])
    assert len(metrics(tmp_path / "quiet")) == 1


def test_bf16_mixed_precision_trains_on_a_cpu_close_to_float32(data, helpers, tmp_path):
    """accelerate's bf16 autocast on a CPU (in its own process: accelerate's state is one per process): the same
    first step (seed, batch, noise) gives the float32 loss within 5 %, and the trained weights stay float32."""
    from training.train import main

    common = {"train.max_steps": 1, "losses.sync.weight": 0, "losses.id.weight": 0}
    main(["--config", str(CONFIGS / "phase2.yaml"), *overrides(data, helpers, tmp_path / "no", **common,
                                                                 **{"train.mixed_precision": "no"})])
    subprocess.run([sys.executable, str(ROOT / "training" / "train.py"), "--config", str(CONFIGS / "phase2.yaml"),
                    *overrides(data, helpers, tmp_path / "bf16", **common, **{"train.mixed_precision": "bf16"})],
                   cwd=ROOT, check=True, capture_output=True)
    losses = {}
    for precision in ("no", "bf16"):
        (line,) = metrics(tmp_path / precision)
        losses[precision] = line["loss"]
        weights = weights_by_group(tmp_path / precision / "transformer.safetensors")
        assert {t.dtype for group in weights.values() for t in group.values()} == {torch.float32}
    assert losses["bf16"] != losses["no"]  # autocast did run in bf16
    assert abs(losses["bf16"] - losses["no"]) < 0.05 * losses["no"], losses


def test_8bit_adam_takes_the_first_step_plain_adamw_takes():
    """train.use_8bit_adam: bitsandbytes' AdamW8bit (its CPU path), whose first step (the gradient's sign times the
    learning rate, before quantisation error) moves the weights within 5 % of plain AdamW's step."""
    import bitsandbytes as bnb

    from training.config import load_config
    from training.train import build_optimizer

    train = load_config(str(CONFIGS / "phase2.yaml"), ["train.use_8bit_adam=true", "train.lr=1.0e-3"])["train"]
    generator = torch.Generator().manual_seed(0)
    start, grad = torch.randn(8192, generator=generator), torch.randn(8192, generator=generator)
    moved = {}
    for eight_bit in (True, False):
        weight = torch.nn.Parameter(start.clone())
        optimizer = build_optimizer([weight], {**train, "use_8bit_adam": eight_bit})
        assert isinstance(optimizer, bnb.optim.AdamW8bit) == eight_bit
        weight.grad = grad.clone()
        optimizer.step()
        moved[eight_bit] = weight.detach() - start
    assert (moved[True] - moved[False]).norm() < 0.05 * moved[False].norm()


def test_repa_chunk_is_the_same_tokens_in_the_model_and_in_the_frame_by_hand():
    """The REPA head projects tokens [i * chunk, (i + 1) * chunk) of the flattened (frames x grid) sequence; the
    identity loss compares them with DINOv2 tokens of (frame, slice): the same tokens, for every draw; a chunk that
    does not divide a frame is refused."""
    from training.losses import repa_chunk

    frames, grid, chunk = 3, (2, 4), 4
    tokens = torch.arange(frames * grid[0] * grid[1])
    seen = set()
    for seed in range(40):
        index, frame, within = repa_chunk(frames, grid, chunk, torch.Generator().manual_seed(seed))
        seen.add(index)
        assert torch.equal(tokens[index * chunk:(index + 1) * chunk], tokens.view(frames, -1)[frame, within])
    assert seen == set(range(frames * grid[0] * grid[1] // chunk))  # every chunk can be drawn
    torch.manual_seed(0)  # the draw is the given generator's, not the global one's
    assert [repa_chunk(frames, grid, chunk, torch.Generator().manual_seed(seed))[0] for seed in range(6)] == [
        int(torch.randint(0, 6, (1,), generator=torch.Generator().manual_seed(seed))) for seed in range(6)]
    assert repa_chunk(frames, grid, None, torch.Generator().manual_seed(0))[2] == slice(0, 8)  # a whole frame
    with pytest.raises(ValueError, match="repa_tokens=3 does not divide the 8 tokens"):
        repa_chunk(frames, grid, 3, torch.Generator())


def test_two_processes_take_the_step_one_process_takes_with_the_doubled_batch(data, helpers, tmp_path):
    """torchrun, 2 CPU processes (gloo) with batch 1 against 1 process with batch 2: every sample draws its noise,
    timestep, masks and dropped conditions by its place in the global batch, DDP averages the gradients, so the
    losses and the trained weights after two steps are the same."""
    from training.train import main

    common = {"train.max_steps": 2, "train.lr": 1e-3, "losses.id.weight": 0.1,
              "model.trainable": "[backbone, repa_head]", "conditions.drop": json.dumps({"audio": 0.5, "text": 0.5})}
    single = tmp_path / "single"
    main(["--config", str(CONFIGS / "phase1.yaml"), *overrides(data, helpers, single, **common,
                                                                **{"train.batch_size": 2})])
    double = tmp_path / "double"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(ROOT / "training" / "train.py"), "--config", str(CONFIGS / "phase1.yaml"),
                          *overrides(data, helpers, double, **common)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    for got, want in zip(metrics(double), metrics(single), strict=True):
        for key in ("loss", "rec", "eye", "vb", "id"):
            assert got[key] == pytest.approx(want[key], rel=1e-4), (got["step"], key)
    got, want = (read_state_dict(out / "transformer.safetensors")[0] for out in (double, single))
    # Adam divides by the gradient's running size, so a weight whose gradient is nearly 0 (attention key biases:
    # exactly 0, softmax ignores a shift shared by all keys) moves by rounding noise made lr-sized, which depends on
    # the summation order: compared to 5 % of the largest possible move (lr * steps = 2e-3); a different draw
    # moves weights by the whole of it.
    assert all(torch.allclose(got[k], want[k], rtol=0, atol=1e-4) for k in want)
