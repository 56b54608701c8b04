"""/train: an admin trains a pix2pix edges→photo model on a folder of photos, in turns between everyone's jobs."""

from __future__ import annotations

import asyncio
import io
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Sequence

from bot.commands.grammar import Option, Settings, choice, register_option, settings, split_options, whole
from bot.commands.registry import Command, CommandSpec, Param, only_options_of, register
from bot.config import DefaultsConfig
from bot.limits import CommandError
from generation.config import TrainingConfig, pix2pix_model_file
from storage.params import TrainParams
from bot.commands.sketch import model_name
from storage.params.train import DECAY_EPOCHS, EPOCHS, ITERATIONS, NGF

if TYPE_CHECKING:
    from bot.replies import Attachment, Reply
    from bot.service import Service
    from storage.records import Owner

EDGE_METHODS = ("canny", "xdog")


for _option in (
    Option("name", (), model_name, "/train: the name of the pix2pix model to make (the same name resumes it)", "name"),
    Option("epochs", (), whole("epochs"), f"/train: epochs at the full learning rate, {EPOCHS.text()} (default 100)",
           "epochs", EPOCHS, value="int"),
    Option("decay-epochs", ("decay_epochs",), whole("decay-epochs"),
           f"/train: then epochs with the rate falling to 0, {DECAY_EPOCHS.text()} (default 100)", "decay_epochs",
           DECAY_EPOCHS, value="int"),
    Option("iterations", (), whole("iterations"), "/train: stop after this many iterations in all (a short run)",
           "iterations", ITERATIONS, value="int"),
    Option("edges", (), choice("edges", EDGE_METHODS), "/train: how photos become drawings: canny (default) or xdog",
           "method", choices=EDGE_METHODS),
    Option("ngf", (), whole("ngf"), f"/train: the networks' base width, {NGF.text()} (pix2pix's 64; less is faster "
           "and draws worse)", "ngf", NGF, value="int"),
):
    register_option(_option)


@dataclass(frozen=True)
class Train(Command):
    name = "train"
    queues_job = True
    photos: str
    settings: Settings


def parse(words: list[str], defaults: DefaultsConfig) -> Train:
    free, values = split_options(words, loose_keys=False)
    only_options_of(SPEC, values)
    return Train(" ".join(free), settings(values, defaults))


def unpack_photos(data: bytes, folder: Path, limit: int) -> int:
    """The files of a zip, flattened into `folder` (made afresh): names without their folders, never a path out
    of it, links and folders skipped, at most `limit` bytes unpacked in all. The number of files written."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise CommandError("the file is not a zip; send the photos as one .zip file") from None
    members = [info for info in archive.infolist() if not info.is_dir()
               and stat.S_IFMT(info.external_attr >> 16) != stat.S_IFLNK  # a symbolic link, not a photo
               and not info.filename.startswith("__MACOSX/") and not PurePosixPath(info.filename).name.startswith(".")]
    if not members:
        raise CommandError("the zip holds no files; zip the photos themselves")
    if sum(info.file_size for info in members) > limit:
        raise CommandError(f"the zip unpacks to more than {limit / 1e6:.0f} MB; send fewer or smaller photos")
    building = folder.with_name(folder.name + ".unpacking")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    taken: set[str] = set()
    written = 0
    try:
        for info in members:
            name = PurePosixPath(info.filename.replace("\\", "/")).name
            stem, suffix = Path(name).stem, Path(name).suffix
            unique, n = name, 1
            while unique.lower() in taken:  # two folders of the zip with a photo of the same name
                unique, n = f"{stem}-{n}{suffix}", n + 1
            taken.add(unique.lower())
            with archive.open(info) as source:
                content = source.read(info.file_size + 1)  # what it declared, and one byte to catch a liar
            if len(content) > info.file_size:
                raise CommandError(f"{name} in the zip is bigger than the zip says; send the photos zipped again")
            written += len(content)
            if written > limit:
                raise CommandError(f"the zip unpacks to more than {limit / 1e6:.0f} MB; send fewer or smaller photos")
            (building / unique).write_bytes(content)
        shutil.rmtree(folder, ignore_errors=True)
        building.rename(folder)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise CommandError(f"the zip is damaged or encrypted ({type(exc).__name__}); zip the photos again") from None
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return len(members)


def checked_folder(text: str) -> Path:
    """The photos folder as an absolute path, or why it cannot be one."""
    folder = Path(text).expanduser().resolve()
    if not folder.exists():
        raise CommandError(f"there is no folder {folder}")
    if not folder.is_dir():
        raise CommandError(f"{folder} is a file; /train takes the folder the photos are in")
    return folder


def refusal_to_overwrite(training: TrainingConfig, data_dir: Path, name: str) -> str | None:
    """Why a model of this name cannot be trained now: a finished one would be overwritten. (An unfinished
    run of that name, stopped or crashed, is resumed from its checkpoint.)"""
    model = pix2pix_model_file(training.models_dir(data_dir), name)
    if model.exists():
        return (f"a pix2pix model called {name!r} exists already ({model}); pick another name, or delete "
                f"{model.parent} to train it again")
    return None


async def run(service: Service, owner: Owner, command: Train, attachments: Sequence[Attachment]) -> Reply:
    if not service.is_admin(owner):
        raise CommandError("/train is for admins: a training holds a share of the GPU for hours")
    given = command.settings
    if given.name is None:
        raise CommandError("/train needs --name NAME: what to call the model (/sketch … --pix2pix NAME uses it)")
    if len(attachments) > 1 or (attachments and command.photos):
        raise CommandError("/train takes one zip of photos, or a folder on this machine, not both")
    if not attachments and not command.photos:
        raise CommandError("/train takes the folder of photos (/train ~/photos/my-cat --name my-cat), or a zip of "
                           "them sent with it")
    refusal = refusal_to_overwrite(service.config.training, service.config.storage.data_dir, given.name)
    if refusal:
        raise CommandError(refusal)
    if attachments:  # unpacked beside where the model will be, and kept there for a resume after a restart
        models = service.config.training.models_dir(service.config.storage.data_dir)
        folder = models / given.name / "photos"
        limit = 10 * service.config.limits.max_zip_bytes
        await asyncio.to_thread(unpack_photos, attachments[0].data, folder, limit)
    else:
        folder = await asyncio.to_thread(checked_folder, command.photos)
    params = given.apply(TrainParams(seed=0, name=given.name, photos=str(folder)))
    service.check(params)
    reply = await service.submit(owner, params)
    return reply


SPEC = register(CommandSpec(
    name="train",
    usage="/train FOLDER --name NAME [--epochs N] [--decay-epochs N] [--iterations N] [--edges canny|xdog] "
          "[--seed N] — (admins) train a pix2pix drawing→photo model on a folder of photos (in a chat: a zip of "
          "them sent with the command)",
    summary="(admins) train a pix2pix drawing→photo model on a zip of your photos",
    parse=parse, run=run,
    options=("name", "epochs", "decay-epochs", "iterations", "edges", "ngf", "seed"),
    params=(Param("folder", "text", "a folder of photos on the bot's machine (or attach a zip of them)"),),
    image="optional", image_help="a .zip of your photos (8 or more of one subject)",
))
