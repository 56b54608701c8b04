"""`easel make-tiny-model`: a random-weight SD pipeline in diffusers format, written offline.

It has the real architecture (CLIP text encoder, UNet with cross-attention, 8× VAE) at toy width,
so every code path runs in milliseconds on a CPU. It draws noise, never pictures.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for the bytes 0–255."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    symbols, shifted = [], 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def write_tokenizer_files(folder: Path) -> None:
    """A byte-level CLIP vocabulary with no merges: every prompt tokenizes, nothing is downloaded."""
    symbols = _byte_symbols()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for symbol in symbols:
            vocab[symbol + suffix] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def _tiny_parts(seed: int, in_channels: int, family: str) -> dict:
    """The modules of a tiny pipeline of `family` ("sd15" or "sdxl"), random weights from `seed`."""
    import torch
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(seed)
    xl = family == "sdxl"

    def text_encoder(cls, hidden: int, **projection: int):
        return cls(CLIPTextConfig(vocab_size=520, hidden_size=hidden, intermediate_size=2 * hidden,
                                  num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77,
                                  bos_token_id=0, eos_token_id=1, pad_token_id=1, **projection))

    # SDXL: a second, projected text encoder whose states are joined to the first's (32 + 32 = 64 wide), and
    # the pooled text and the six size numbers added to the time embedding ("text_time").
    extra = dict(addition_embed_type="text_time", addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=32 + 6 * 8, cross_attention_dim=64) if xl else dict(
                 cross_attention_dim=32)
    # Drawn in this order (UNet, VAE, text encoder) so a seed gives the same SD 1.5 weights as it always has.
    parts = dict(unet=UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=2,
        norm_num_groups=4,
        **extra,
    ))
    parts["vae"] = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8, 8, 8),  # four blocks: the same 8× downscale as SD's VAE
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )
    parts["text_encoder"] = text_encoder(CLIPTextModel, 32)
    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer_files(Path(tmp))
        parts["tokenizer"] = tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
    parts["scheduler"] = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                                     beta_schedule="scaled_linear", steps_offset=1)
    if xl:
        parts["text_encoder_2"] = text_encoder(CLIPTextModelWithProjection, 32, projection_dim=32)
        parts["tokenizer_2"] = tokenizer
    return parts


def make_tiny_model(out_dir: Path, seed: int = 0, in_channels: int = 4, family: str = "sd15") -> Path:
    """Write the tiny pipeline to out_dir and return it; in_channels=9 makes it an inpainting model's shape,
    family="sdxl" an SDXL pipeline (two text encoders, size conditioning)."""
    import transformers
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    out_dir = Path(out_dir)
    parts = _tiny_parts(seed, in_channels, family)
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(**parts, force_zeros_for_empty_prompt=True)
    else:
        pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    transformers.utils.logging.disable_progress_bar()  # a bar for writing half a megabyte is noise
    try:
        pipe.save_pretrained(out_dir)
    finally:
        transformers.utils.logging.enable_progress_bar()
    return out_dir


def make_tiny_controlnet(model_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """Write a random-weight ControlNet shaped for the tiny model in model_dir (as control_v11p_sd15_* is
    for SD 1.5), built from its UNet's config; nothing is downloaded."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(Path(model_dir) / "unet")
    # from_unet copies the UNet's encoder; the control image is embedded down to latent size by small convs.
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 8, 8))
    with torch.no_grad():  # a fresh ControlNet's zero convolutions would make it do nothing at all
        zero = (*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                controlnet.controlnet_cond_embedding.conv_out)
        for module in zero:
            module.weight.normal_(0, 0.2)
    controlnet.save_pretrained(out_dir)
    return out_dir


def _is_xl(model_dir: Path) -> bool:
    index = json.loads((Path(model_dir) / "model_index.json").read_text(encoding="utf-8"))
    return "text_encoder_2" in index


def make_tiny_lora(model_dir: Path, out_file: Path, seed: int = 0, rank: int = 2, scale: float = 0.5) -> Path:
    """Write a random-weight LoRA for the tiny model in model_dir (SD 1.5 or SDXL) as kohya/A1111 write one:
    `lora_unet_…` for the UNet's attention projections, `lora_te_…` (SDXL: `lora_te1_…`, `lora_te2_…`) for the
    text encoders' attention and MLP, each with lora_down, lora_up and alpha. Module names are the tiny
    model's own (diffusers names for the UNet; kohya's SDXL files use the original UNet's, which diffusers
    maps); `scale` is the weights' spread: 0.5 changes a 4-step 64×64 draw by about ten levels in 255."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    model_dir, out_file = Path(model_dir), Path(out_file)
    generator = torch.Generator().manual_seed(seed)  # not the global RNG: a test's other draws stay as they were
    state: dict[str, torch.Tensor] = {}

    def add(prefix: str, linear: torch.nn.Linear) -> None:
        state[f"{prefix}.lora_down.weight"] = torch.randn(rank, linear.in_features, generator=generator) * scale
        state[f"{prefix}.lora_up.weight"] = torch.randn(linear.out_features, rank, generator=generator) * scale
        state[f"{prefix}.alpha"] = torch.tensor(float(rank))  # alpha / rank = 1: the weights act as written

    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet")
    for name, module in unet.named_modules():
        if ".attn" in name and name.endswith((".to_q", ".to_k", ".to_v", ".to_out.0")):
            add("lora_unet_" + name.replace(".", "_"), module)
    xl = _is_xl(model_dir)
    encoders = [("lora_te1" if xl else "lora_te", CLIPTextModel, "text_encoder")]
    if xl:
        encoders.append(("lora_te2", CLIPTextModelWithProjection, "text_encoder_2"))
    for prefix, cls, folder in encoders:
        encoder = cls.from_pretrained(model_dir / folder)
        for name, module in encoder.named_modules():
            if name.endswith(("_proj", ".fc1", ".fc2")) and "text_projection" not in name:
                # kohya's names start at CLIP's text_model, whichever class (and transformers version) holds it.
                name = "text_model." + name.removeprefix("text_model.")
                add(f"{prefix}_" + name.replace(".", "_"), module)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, out_file)
    return out_file


def make_tiny_embedding(model_dir: Path, out_file: Path, vectors: int = 2, seed: int = 0,
                        scale: float = 1.0) -> Path:
    """Write a random textual-inversion embedding of `vectors` vectors for the tiny model in model_dir, as
    A1111 saves one: SD 1.5 as a .pt with string_to_param (or, named .safetensors, one emb_params tensor),
    SDXL with clip_l and clip_g vectors for its two text encoders (both 32 wide in the tiny model)."""
    import torch
    from safetensors.torch import save_file

    model_dir, out_file = Path(model_dir), Path(out_file)
    generator = torch.Generator().manual_seed(seed)

    def drawn(folder: str) -> torch.Tensor:
        config = json.loads((model_dir / folder / "config.json").read_text(encoding="utf-8"))
        return torch.randn(vectors, config["hidden_size"], generator=generator) * scale

    if _is_xl(model_dir):
        data = {"clip_l": drawn("text_encoder"), "clip_g": drawn("text_encoder_2")}
    elif out_file.suffix == ".safetensors":
        data = {"emb_params": drawn("text_encoder")}
    else:
        data = {"string_to_token": {"*": 265}, "string_to_param": {"*": drawn("text_encoder")},
                "name": out_file.stem, "step": 0, "sd_checkpoint": None, "sd_checkpoint_name": None}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    if out_file.suffix == ".safetensors":
        save_file(data, out_file)
    else:
        torch.save(data, out_file)
    return out_file
