"""Parity with what the public reference codes compute, on the recorded fixtures.

Reads ``$DITALKER_PARITY_FIXTURES`` (default ``../shared/fixtures``): ``easyanimate_v3/`` and
``ditalker_official/``. Every recorded case found there is a test named after its file, so cases dropped into
those folders are picked up without code changes. Weights follow each folder's README recipe.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ditalker_core.checkpoints import config_from_official
from ditalker_core.models import DiTalkerTransformer3DModel, get_config, module_group
from ditalker_core.models.vae import AutoencoderKLMagvit
from fixture_weights import FIXTURES, fill_with_recipe, recipe_tensor, vae_with_recipe

EASYANIMATE = FIXTURES / "easyanimate_v3"
OFFICIAL = FIXTURES / "ditalker_official"
TRANSFORMER_TOL = 2e-5
VAE_TOL = 1e-5


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _cases(folder: Path, pattern: str) -> list[Path]:
    return sorted(folder.glob(pattern)) if folder.is_dir() else []


def _build_on_cpu(config: dict) -> DiTalkerTransformer3DModel:
    """The recorded (tiny) config, built as usual: the recipe then overwrites every weight."""
    return DiTalkerTransformer3DModel(**config).eval()


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


# ----------------------------------------------------------------------------------------------------------
# EasyAnimateV3 transformer
# ----------------------------------------------------------------------------------------------------------
def _easyanimate_transformer_cases() -> list[tuple[Path, Path]]:
    cases = []
    for config_file in _cases(EASYANIMATE, "*.json"):
        if _json(config_file).get("config", {}).get("_class_name") != "Transformer3DModel":
            continue
        cases += [(config_file, case) for case in _cases(EASYANIMATE, f"{config_file.stem}_io*.safetensors")]
    return cases


@pytest.mark.parametrize("config_file,case_file", _easyanimate_transformer_cases(),
                         ids=lambda p: p.name if p.suffix == ".safetensors" else "")
def test_easyanimate_transformer_case(config_file: Path, case_file: Path) -> None:
    manifest = _json(config_file)
    model = _build_on_cpu(config_from_official(manifest["config"]))
    assert sorted(model.state_dict()) == sorted(manifest["state_dict_shapes"])
    fill_with_recipe(model, manifest["state_dict_shapes"], set(manifest.get("buffers_not_randomized", [])))
    x = load_file(str(case_file))
    with torch.no_grad():
        out = model(x["hidden_states"], x["timestep"], inpaint_latents=x["inpaint_latents"],
                    encoder_hidden_states=x["encoder_hidden_states"],
                    encoder_attention_mask=x["encoder_attention_mask"],
                    clip_encoder_hidden_states=x["clip_encoder_hidden_states"],
                    clip_attention_mask=x["clip_attention_mask"]).sample
    assert _max_err(out, x["output"]) < TRANSFORMER_TOL


# ----------------------------------------------------------------------------------------------------------
# EasyAnimateV3 MagViT slice VAE
# ----------------------------------------------------------------------------------------------------------
def _vae_cases() -> list[tuple[Path, Path]]:
    return [(config, case) for config in _cases(EASYANIMATE, "easyanimate_v3_vae_*.json")
            for case in _cases(EASYANIMATE, f"{config.stem}_io*.safetensors")]


@pytest.mark.parametrize("config_file,case_file", _vae_cases(),
                         ids=lambda p: p.name if p.suffix == ".safetensors" else "")
def test_easyanimate_vae_case(config_file: Path, case_file: Path) -> None:
    model = vae_with_recipe(config_file)
    x = load_file(str(case_file))
    with torch.no_grad():
        posterior = model.encode(x["video"])
        errors = {"latent_mean": _max_err(posterior.mean, x["latent_mean"]),
                  "latent_logvar": _max_err(posterior.logvar, x["latent_logvar"]),
                  "decoded": _max_err(model.decode(x["latent_mean"]), x["decoded"])}
    assert max(errors.values()) < VAE_TOL, errors


def test_easyanimate_vae_full_manifest_is_our_vae() -> None:
    manifest = _json(EASYANIMATE / "easyanimate_v3_vae_full.json")
    with torch.device("meta"):
        models = (AutoencoderKLMagvit.from_config(manifest["config"]), AutoencoderKLMagvit())
    for model in models:
        assert {k: list(v.shape) for k, v in model.state_dict().items()} == manifest["state_dict_shapes"]
    assert models[0].config.scaling_factor == 0.18215
    assert (models[0].config.mini_batch_encoder, models[0].config.mini_batch_decoder) == (8, 2)


# ----------------------------------------------------------------------------------------------------------
# Official DiTalker (every module on). The 1.28 B-parameter "tiny" model is built once per session.
# ----------------------------------------------------------------------------------------------------------
OFFICIAL_MANIFEST = OFFICIAL / "ditalker_official_tiny.json"


class OfficialModel:
    """The recipe-weighted official tiny model, switchable between the plain and ``ln1`` recipes."""

    def __init__(self) -> None:
        self.manifest = _json(OFFICIAL_MANIFEST)
        self.model = _build_on_cpu(config_from_official(self.manifest["config"]))
        fill_with_recipe(self.model, self.manifest["state_dict_shapes"], set(self.manifest["kept_buffers"]))
        self.ln1_keys = set(self.manifest["supplementary_case_A_ln1"]["norm_weight_keys_plus_one"])
        self.variant = "plain"

    @torch.no_grad()
    def use(self, variant: str) -> DiTalkerTransformer3DModel:
        if variant != self.variant:
            state = self.model.state_dict(keep_vars=True)
            for index, key in enumerate(sorted(self.manifest["state_dict_shapes"])):
                if key in self.ln1_keys:
                    value = recipe_tensor(index, self.manifest["state_dict_shapes"][key])
                    state[key].copy_(value + 1.0 if variant == "ln1" else value)
            self.variant = variant
        return self.model


@pytest.fixture(scope="module")
def official() -> OfficialModel:
    torch.manual_seed(0)
    return OfficialModel()


def _official_cases() -> list[tuple[Path, Path, str]]:
    """(inputs file, expected file, weight variant) for every case and its ``_ln1`` supplement."""
    cases = []
    for case in _cases(OFFICIAL, "ditalker_official_tiny_case_*.safetensors"):
        if case.stem.endswith(("_intermediates", "_ln1")):
            continue
        cases.append((case, case, "plain"))
        ln1 = case.with_name(f"{case.stem}_ln1.safetensors")
        if ln1.exists():
            cases.append((case, ln1, "ln1"))
    return cases


def _official_inputs(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if "audio_encoder_hidden_states_q8" in x:
        audio = x["audio_encoder_hidden_states_q8"].float() * 2**-5
    else:  # one conditional row; row 0 is the CFG unconditional (zeros), as the official pipeline lays it out
        cond = x["audio_encoder_hidden_states_q8_cond"].float() * 2**-5
        audio = torch.cat([torch.zeros_like(cond), cond])
    return dict(
        hidden_states=x["hidden_states"], timestep=x["timestep"], inpaint_latents=x["inpaint_latents"],
        encoder_hidden_states=x["encoder_hidden_states"], encoder_attention_mask=x["encoder_attention_mask"],
        clip_encoder_hidden_states=x["clip_encoder_hidden_states"], clip_attention_mask=x["clip_attention_mask"],
        audio_encoder_hidden_states=audio, phoneme_win=x["phoneme_win"], style_clip=x["style_clip"],
        pad_mask=x["pad_mask"].bool(), pixel_values_pose=x["pixel_values_pose"],
    )


def _intermediates(model: DiTalkerTransformer3DModel, inputs: dict[str, torch.Tensor]
                   ) -> dict[str, Callable[[], torch.Tensor]]:
    """How to compute each recorded ``inter_*`` tensor (definitions: the official fixture JSON)."""
    batch = inputs["hidden_states"].shape[0]
    audio = lambda: model.encode_audio(inputs["audio_encoder_hidden_states"], batch)  # noqa: E731
    style = lambda: model.encode_style(inputs["style_clip"], inputs["phoneme_win"], batch)  # noqa: E731

    def patch_embed_input() -> torch.Tensor:
        latent = inputs["hidden_states"] + model.pose_offset(inputs["pixel_values_pose"], inputs["hidden_states"])
        return torch.cat([latent, inputs["inpaint_latents"]], 1).transpose(1, 2).flatten(0, 1)

    def z_pose_raw() -> torch.Tensor:  # the official output carries a +4 zero pad on H and W
        return torch.nn.functional.pad(model.pose_adapter(inputs["pixel_values_pose"]), (0, 4, 0, 4))

    return {
        "inter_c_a": audio,
        "inter_style_code": lambda: model.style_model(inputs["style_clip"], None),
        "inter_gen_exp_stack": lambda: style()[1],
        "inter_c_s": lambda: style()[0],
        "inter_s_phi": lambda: model.scale_adapter(style()[0], audio())[0],
        "inter_s_alpha": lambda: model.scale_adapter(style()[0], audio())[1],
        "inter_z_pose_raw": z_pose_raw,
        "inter_patch_embed_input": patch_embed_input,
        "inter_adaln_timestep": lambda: model.adaln_single(inputs["timestep"], None, batch_size=batch,
                                                           hidden_dtype=torch.float32)[0],
        "inter_c_emo": lambda: model.encode_text_and_reference(
            inputs["encoder_hidden_states"], inputs["encoder_attention_mask"],
            inputs["clip_encoder_hidden_states"], inputs["clip_attention_mask"], batch)[0],
    }


@pytest.mark.parametrize("inputs_file,expected_file,variant", _official_cases(),
                         ids=lambda v: v.name if isinstance(v, Path) else v)
def test_official_ditalker_case(official: OfficialModel, inputs_file: Path, expected_file: Path,
                                variant: str) -> None:
    model = official.use(variant)
    x = load_file(str(inputs_file))
    inputs = _official_inputs(x)
    expected = load_file(str(expected_file))
    extra = inputs_file.with_name(f"{inputs_file.stem}_intermediates.safetensors")
    if variant == "plain" and extra.exists():
        expected.update(load_file(str(extra)))
    with safe_open(str(expected_file), "pt") as handle:
        chunk_start = int((handle.metadata() or {}).get("repa_chunk_start", 0))
    repa_index = chunk_start // model.config.repa_tokens

    with torch.no_grad():
        output, repa = model(**inputs, repa_index=repa_index, return_dict=False)
        errors = {"output": _max_err(output, expected["output"]), "out_repa": _max_err(repa, expected["out_repa"])}
        computers = _intermediates(model, inputs)
        for name in sorted(k for k in expected if k.startswith("inter_")):
            assert name in computers, f"{expected_file.name} records {name}, which this test cannot compute yet"
            errors[name] = _max_err(computers[name](), expected[name])
    assert max(errors.values()) < TRANSFORMER_TOL, errors


# ----------------------------------------------------------------------------------------------------------
# Real-size manifests map onto our `xl` models, built on the meta device.
# ----------------------------------------------------------------------------------------------------------
def _meta_shapes(config: dict) -> dict[str, list[int]]:
    with torch.device("meta"):
        model = DiTalkerTransformer3DModel(**config)
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def test_fixtures_are_present() -> None:
    """The parametrized tests above run nothing when the folder is wrong: fail loudly instead."""
    assert _easyanimate_transformer_cases(), f"no EasyAnimateV3 transformer cases under {EASYANIMATE}"
    assert _official_cases(), f"no official DiTalker cases under {OFFICIAL}"
    assert _vae_cases(), f"no EasyAnimateV3 VAE cases under {EASYANIMATE}"


def test_official_xl_manifest_matches_xl_config() -> None:
    manifest = _json(OFFICIAL / "ditalker_official_xl.json")
    assert _meta_shapes(get_config("xl")) == manifest["state_dict_shapes"]
    assert _meta_shapes(config_from_official(manifest["config"])) == manifest["state_dict_shapes"]


def test_easyanimate_xl_manifest_is_the_xl_backbone() -> None:
    easyanimate = _json(EASYANIMATE / "easyanimate_v3_transformer_xl.json")["state_dict_shapes"]
    assert _meta_shapes(get_config("easyanimate_v3_xl")) == easyanimate
    ditalker = _meta_shapes(get_config("xl"))
    assert all(ditalker[k] == shape for k, shape in easyanimate.items())
    only_ditalker = set(ditalker) - set(easyanimate)
    assert only_ditalker and all(module_group(k) != "backbone" for k in only_ditalker)
