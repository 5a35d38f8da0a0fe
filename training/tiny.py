"""Random-weight toy versions of every frozen helper, sized for the ``tiny`` DiTalker config.

``python -m training.tiny OUT`` writes an EasyAnimate-style folder (``vae/``, ``text_encoder/``, ``tokenizer/``,
``image_encoder/``) plus ``dinov2/``, ``syncnet.safetensors`` and ``whisper/``, and prints the overrides that
point the trainer and the preprocessor at them. With them the whole pipeline (preprocess, all three phases,
every loss) runs on a CPU in seconds; the results mean nothing, the code paths are the real ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ditalker_core.models import get_config, get_vae_config

_WORDS = ("this", "person", "man", "woman", "is", "and", "talks", "happy", "sad", "angry", "disgusted",
          "surprised", "fearful", "neutral", "very", "calm")


def save_tiny_t5(root: Path, width: int = 16) -> Path:
    """EasyAnimate's layout: ``text_encoder/`` (a T5 encoder of width ``width``) and ``tokenizer/`` (a T5-style
    Unigram tokenizer knowing the emotion-prompt words)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -2.0) for w in _WORDS]
    vocab += [(c, -8.0) for c in "abcdefghijklmnopqrstuvwxyzT.\u2581"]
    backend = Tokenizer(models.Unigram(vocab, unk_id=2))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>",
                            pad_token="<pad>").save_pretrained(root / "tokenizer")
    config = T5Config(vocab_size=len(vocab) + 8, d_model=width, d_kv=8, d_ff=2 * width, num_layers=1, num_heads=2,
                      feed_forward_proj="gated-gelu", decoder_start_token_id=0)
    T5EncoderModel(config).save_pretrained(root / "text_encoder")
    return root


def save_tiny_clip_vision(folder: Path, projection_dim: int = 12) -> Path:
    """A CLIPVisionModelWithProjection (EasyAnimate's ``image_encoder/``) with a 32 px input."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=projection_dim)
    CLIPVisionModelWithProjection(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def make_tiny_helpers(out: str | Path, seed: int = 0) -> dict[str, str]:
    """Write every helper under ``out``; returns the ``models.*`` config overrides (and ``whisper``)."""
    from transformers import Dinov2Config, Dinov2Model, WhisperConfig, WhisperFeatureExtractor, WhisperModel

    from ditalker_core.models.syncnet import SyncNet, save_syncnet
    from ditalker_core.models.vae import AutoencoderKLMagvit

    out = Path(out)
    model = get_config("tiny")
    torch.manual_seed(seed)
    # The tiny VAE with one residual block per level: CPU steps stay short.
    AutoencoderKLMagvit(**get_vae_config("tiny", layers_per_block=1)).save_pretrained(out / "vae")
    save_tiny_t5(out, model["caption_channels"])
    save_tiny_clip_vision(out / "image_encoder", model["clip_embed_dim"])
    Dinov2Model(Dinov2Config(hidden_size=model["repa_dim"], num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=2 * model["repa_dim"], image_size=56, patch_size=14)
                ).save_pretrained(out / "dinov2")
    save_syncnet(SyncNet(base_channels=4), out / "syncnet.safetensors")
    # Whisper rows per token = encoder layers + 1; 10 tokens x 5 rows = the model's 50-row window.
    whisper = WhisperConfig(d_model=model["audio_feature_dim"], encoder_layers=4, encoder_attention_heads=2,
                            encoder_ffn_dim=64, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
                            vocab_size=64, max_target_positions=16, num_mel_bins=80, pad_token_id=0,
                            bos_token_id=1, eos_token_id=1, decoder_start_token_id=1)
    WhisperModel(whisper).save_pretrained(out / "whisper")
    WhisperFeatureExtractor(feature_size=80).save_pretrained(out / "whisper")
    return {"models.easyanimate": str(out), "models.dinov2": str(out / "dinov2"),
            "models.syncnet": str(out / "syncnet.safetensors"), "whisper": str(out / "whisper")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to write the toy helpers to")
    args = parser.parse_args(argv)
    paths = make_tiny_helpers(args.out)
    whisper = paths.pop("whisper")
    print("trainer overrides: model.config=tiny " + " ".join(f"{k}={v}" for k, v in paths.items()))
    print(f"preprocess: --whisper {whisper}")


if __name__ == "__main__":
    main()
