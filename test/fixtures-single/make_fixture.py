"""Builds sd1-script.safetensors: a tiny Stable Diffusion 1.x-shaped pipeline (random weights, seed 0)
written by diffusers' own scripts/convert_diffusers_to_original_stable_diffusion.py (v0.27.2).

Run with Debian's python3-torch and the reference sources of /work/shared/peer (refenv.py):
    /usr/bin/python3 test/fixtures-single/make_fixture.py
The UNet has SD's block layout (4 blocks, 2 layers each, attention in the first 3) because the script's
tables assume it; channels are 32 so the file stays small. source_configs.json holds the configs
the pipeline was built from; the test checks that sdtune reads the same architecture off the weights.
"""
import json
import os
import runpy
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("PEER_DIR", "/work/shared/peer"))
import refenv  # noqa: E402

refenv.setup()
refenv.install_safetensors()
import torch  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

CONFIGS = {
    "unet": dict(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 32, 32, 32),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=64, attention_head_dim=8,
    ),
    "vae": dict(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    ),
    "text_encoder": dict(
        vocab_size=100, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=1,
        max_position_embeddings=77, hidden_act="quick_gelu",
    ),
}


def main():
    torch.manual_seed(0)
    work = tempfile.mkdtemp()
    try:
        UNet2DConditionModel(**CONFIGS["unet"]).save_pretrained(os.path.join(work, "unet"))
        AutoencoderKL(**CONFIGS["vae"]).save_pretrained(os.path.join(work, "vae"))
        CLIPTextModel(CLIPTextConfig(**CONFIGS["text_encoder"])).save_pretrained(os.path.join(work, "text_encoder"))
        script = os.path.join(refenv.REF_SRC, "diffusers", "scripts", "convert_diffusers_to_original_stable_diffusion.py")
        out = os.path.join(HERE, "sd1-script.safetensors")
        sys.argv = [script, "--model_path", work, "--checkpoint_path", out, "--half", "--use_safetensors"]
        runpy.run_path(script, run_name="__main__")
        with open(os.path.join(HERE, "source_configs.json"), "w") as f:
            json.dump({k: dict(v) for k, v in CONFIGS.items()}, f, indent=2, sort_keys=True)
            f.write("\n")
    finally:
        shutil.rmtree(work)


def sd2_text_keys():
    """The script's SD 2.x (open_clip) text encoder names and shapes for the tiny-sd fixture's text encoder.

    The script picks that layout only for 23-layer encoders, so its conversion function is called directly.
    """
    from safetensors.torch import load_file

    script = os.path.join(refenv.REF_SRC, "diffusers", "scripts", "convert_diffusers_to_original_stable_diffusion.py")
    module = runpy.run_path(script, run_name="converter")
    fixtures = os.environ.get("SDTUNE_FIXTURES", "/work/shared/fixtures")
    text = load_file(os.path.join(fixtures, "tiny-sd", "text_encoder", "model.safetensors"))
    converted = module["convert_text_enc_state_dict_v20"]({"transformer." + k: v for k, v in text.items()})
    keys = {"cond_stage_model.model." + k: list(v.shape) for k, v in converted.items()}
    with open(os.path.join(HERE, "sd2_text_keys.json"), "w") as f:
        json.dump(keys, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
    sd2_text_keys()
