"""Train your own pix2pix edges→photo model: photos → pairs, unet_256 + PatchGAN in resumable slices."""

from generation.training.pairs import (
    MIN_PHOTOS,
    PairSet,
    Skipped,
    TrainingInputError,
    build_pairs,
    contact_sheet,
    held_out_count,
    line_drawing,
    open_pairs,
    prepare_photo,
)
from generation.training.patchgan import PatchDiscriminator
from generation.training.trainer import (
    Progress,
    SliceReport,
    Trainer,
    TrainingResult,
    TrainOptions,
    plot_losses,
)

__all__ = [
    "MIN_PHOTOS", "PairSet", "PatchDiscriminator", "Progress", "Skipped", "SliceReport", "TrainOptions", "Trainer",
    "TrainingInputError", "TrainingResult", "build_pairs", "contact_sheet", "held_out_count", "line_drawing",
    "open_pairs", "plot_losses", "prepare_photo",
]
