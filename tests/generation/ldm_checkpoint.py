"""Test support: a diffusers SD folder's weights written as one original-layout (LDM / A1111) checkpoint.

This is the inverse of diffusers' own single-file converters (`convert_ldm_unet_checkpoint`,
`convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint` in `diffusers.loaders.single_file_utils`),
rule by rule, for SD 1.x-shaped models: a UNet2DConditionModel, an AutoencoderKL and a CLIP text model.
The rules are structural (block counts and `layers_per_block` come from each component's config), so
they fit the tiny test model and a full-size SD 1.5 alike. A key no rule knows is an error, never dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

# diffusers ResnetBlock2D child → LDM ResBlock child (UNet only; the VAE keeps diffusers' names but one).
_UNET_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_UNET_TOP_LEVEL = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
# The VAE's mid-block attention: LDM names it like a conv block and stores q/k/v/proj_out as 1x1 convs.
_VAE_ATTENTION_PARTS = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}

Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]


def _rename(rules: list[Rule], key: str, component: str) -> str:
    for pattern, build in rules:
        match = pattern.fullmatch(key)
        if match:
            return build(match)
    raise ValueError(f"no LDM name known for {component} key {key!r}")


def _unet_rules(config: dict) -> list[Rule]:
    # LDM numbers every UNet layer in one flat list: input_blocks.0 is conv_in, then per down block its
    # resnets (each with its attention as child .1) and its downsampler; output_blocks mirror that with
    # one more resnet per block and the upsampler as the last child of the block's last layer.
    down_span = config["layers_per_block"] + 1
    up_span = config["layers_per_block"] + 1
    up_has_attention = ["CrossAttn" in kind for kind in config["up_block_types"]]

    def resnet(layer: str, match: re.Match[str]) -> str:
        return f"{layer}.{_UNET_RESNET_PARTS[match['part']]}.{match['param']}"

    def down(match: re.Match[str]) -> int:
        return 1 + int(match["block"]) * down_span + int(match["layer"])

    def up(match: re.Match[str]) -> int:
        return int(match["block"]) * up_span + int(match["layer"])

    def upsampler(match: re.Match[str]) -> str:
        block = int(match["block"])
        child = 2 if up_has_attention[block] else 1
        return f"output_blocks.{block * up_span + up_span - 1}.{child}.conv.{match['param']}"

    resnet_tail = r"(?P<part>\w+)\.(?P<param>weight|bias)"
    return [
        (re.compile(rf"(?P<name>{'|'.join(map(re.escape, _UNET_TOP_LEVEL))})\.(?P<param>weight|bias)"),
         lambda m: f"{_UNET_TOP_LEVEL[m['name']]}.{m['param']}"),
        (re.compile(rf"down_blocks\.(?P<block>\d+)\.resnets\.(?P<layer>\d+)\.{resnet_tail}"),
         lambda m: resnet(f"input_blocks.{down(m)}.0", m)),
        (re.compile(r"down_blocks\.(?P<block>\d+)\.attentions\.(?P<layer>\d+)\.(?P<rest>.+)"),
         lambda m: f"input_blocks.{down(m)}.1.{m['rest']}"),
        (re.compile(r"down_blocks\.(?P<block>\d+)\.downsamplers\.0\.conv\.(?P<param>weight|bias)"),
         lambda m: f"input_blocks.{1 + int(m['block']) * down_span + down_span - 1}.0.op.{m['param']}"),
        (re.compile(rf"mid_block\.resnets\.(?P<layer>\d+)\.{resnet_tail}"),
         lambda m: resnet(f"middle_block.{2 * int(m['layer'])}", m)),
        (re.compile(r"mid_block\.attentions\.0\.(?P<rest>.+)"),
         lambda m: f"middle_block.1.{m['rest']}"),
        (re.compile(rf"up_blocks\.(?P<block>\d+)\.resnets\.(?P<layer>\d+)\.{resnet_tail}"),
         lambda m: resnet(f"output_blocks.{up(m)}.0", m)),
        (re.compile(r"up_blocks\.(?P<block>\d+)\.attentions\.(?P<layer>\d+)\.(?P<rest>.+)"),
         lambda m: f"output_blocks.{up(m)}.1.{m['rest']}"),
        (re.compile(r"up_blocks\.(?P<block>\d+)\.upsamplers\.0\.conv\.(?P<param>weight|bias)"), upsampler),
    ]


def _vae_rules(config: dict) -> list[Rule]:
    # LDM's decoder counts its up blocks from the bottom (up.0 makes the full-size image); diffusers from the top.
    last_up = len(config["up_block_types"]) - 1

    def resnet_rest(rest: str) -> str:
        return rest.replace("conv_shortcut", "nin_shortcut")

    return [
        (re.compile(r"(?P<side>encoder|decoder)\.conv_norm_out\.(?P<param>weight|bias)"),
         lambda m: f"{m['side']}.norm_out.{m['param']}"),
        (re.compile(r"(?:encoder|decoder)\.conv_(?:in|out)\.(?:weight|bias)|(?:post_)?quant_conv\.(?:weight|bias)"),
         lambda m: m[0]),
        (re.compile(r"encoder\.down_blocks\.(?P<block>\d+)\.resnets\.(?P<layer>\d+)\.(?P<rest>.+)"),
         lambda m: f"encoder.down.{m['block']}.block.{m['layer']}.{resnet_rest(m['rest'])}"),
        (re.compile(r"encoder\.down_blocks\.(?P<block>\d+)\.downsamplers\.0\.conv\.(?P<param>weight|bias)"),
         lambda m: f"encoder.down.{m['block']}.downsample.conv.{m['param']}"),
        (re.compile(r"decoder\.up_blocks\.(?P<block>\d+)\.resnets\.(?P<layer>\d+)\.(?P<rest>.+)"),
         lambda m: f"decoder.up.{last_up - int(m['block'])}.block.{m['layer']}.{resnet_rest(m['rest'])}"),
        (re.compile(r"decoder\.up_blocks\.(?P<block>\d+)\.upsamplers\.0\.conv\.(?P<param>weight|bias)"),
         lambda m: f"decoder.up.{last_up - int(m['block'])}.upsample.conv.{m['param']}"),
        (re.compile(r"(?P<side>encoder|decoder)\.mid_block\.resnets\.(?P<layer>\d+)\.(?P<rest>.+)"),
         lambda m: f"{m['side']}.mid.block_{int(m['layer']) + 1}.{resnet_rest(m['rest'])}"),
        (re.compile(r"(?P<side>encoder|decoder)\.mid_block\.attentions\.0\.(?P<part>group_norm|to_[qkv]|to_out\.0)"
                    r"\.(?P<param>weight|bias)"),
         lambda m: f"{m['side']}.mid.attn_1.{_VAE_ATTENTION_PARTS[m['part']]}.{m['param']}"),
    ]


def unet_to_ldm(state_dict: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """A diffusers UNet2DConditionModel state dict under LDM names (`model.diffusion_model.…`)."""
    rules = _unet_rules(config)
    return {UNET_PREFIX + _rename(rules, key, "UNet"): tensor for key, tensor in state_dict.items()}


def vae_to_ldm(state_dict: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """A diffusers AutoencoderKL state dict under LDM names (`first_stage_model.…`)."""
    rules = _vae_rules(config)
    out = {}
    for key, tensor in state_dict.items():
        name = _rename(rules, key, "VAE")
        if ".mid.attn_1." in name and name.endswith("weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # Linear (out, in) → Conv2d 1x1 (out, in, 1, 1)
        out[VAE_PREFIX + name] = tensor
    return out


def clip_to_ldm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers CLIPTextModel state dict under SD 1.x names (`cond_stage_model.transformer.text_model.…`)."""
    # transformers >= 5.6 saves CLIPTextModel without its `text_model.` level; older versions keep it.
    return {
        CLIP_PREFIX + (key if key.startswith("text_model.") else f"text_model.{key}"): tensor
        for key, tensor in state_dict.items()
    }


def _component(folder: Path, name: str) -> tuple[dict[str, torch.Tensor], dict]:
    weights = sorted((folder / name).glob("*.safetensors"))
    if len(weights) != 1:
        raise ValueError(f"expected one .safetensors file in {folder / name}, found {len(weights)}")
    config = json.loads((folder / name / "config.json").read_text(encoding="utf-8"))
    return load_file(weights[0]), config


def ldm_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Every weight of the diffusers SD folder, under the key names of an original SD 1.x checkpoint."""
    folder = Path(folder)
    unet, unet_config = _component(folder, "unet")
    vae, vae_config = _component(folder, "vae")
    text_encoder, _ = _component(folder, "text_encoder")
    merged = {**unet_to_ldm(unet, unet_config), **vae_to_ldm(vae, vae_config), **clip_to_ldm(text_encoder)}
    expected = len(unet) + len(vae) + len(text_encoder)
    if len(merged) != expected:
        raise ValueError(f"{expected - len(merged)} weights collided on the same LDM name")
    # Original checkpoints also carry the DDPM noise schedule as buffers; loaders must ignore them.
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    if scheduler.get("beta_schedule") != "scaled_linear":
        return merged
    betas = torch.linspace(
        scheduler["beta_start"] ** 0.5, scheduler["beta_end"] ** 0.5, scheduler["num_train_timesteps"],
        dtype=torch.float64,
    ) ** 2
    merged["betas"] = betas.float()
    merged["alphas_cumprod"] = torch.cumprod(1 - betas, dim=0).float()
    return merged


def write_ldm_checkpoint(folder: Path, path: Path) -> Path:
    """Save the folder's weights as one LDM-layout .safetensors file at path and return path."""
    tensors = {key: tensor.contiguous() for key, tensor in ldm_state_dict(folder).items()}
    save_file(tensors, str(path), metadata={"format": "pt"})
    return Path(path)
