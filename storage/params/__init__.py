"""Every job kind's recorded parameters. A new kind is one module here and one line below."""

from storage.params.base import MAX_SEED, JobParams, Range, kinds, params_from_json, params_to_json, register
from storage.params.diffusion import DiffusionParams
from storage.params.action import ActionParams

# The kinds, in the order /help and `easel worker --kinds` list them: one line each.
from storage.params.txt2img import Txt2ImgParams
from storage.params.img2img import Img2ImgParams
from storage.params.sketch import SketchParams
from storage.params.face import FaceParams
from storage.params.upscale import UpscaleParams
from storage.params.vary import VaryParams
from storage.params.outpaint import PanParams, ZoomParams
from storage.params.animate import AnimateParams
from storage.params.train import TrainParams

__all__ = [
    "MAX_SEED", "ActionParams", "AnimateParams", "DiffusionParams", "PanParams", "UpscaleParams", "VaryParams", "ZoomParams", "FaceParams", "Img2ImgParams", "JobParams", "Range", "SketchParams",
    "TrainParams", "Txt2ImgParams", "kinds", "params_from_json", "params_to_json", "register",
]
