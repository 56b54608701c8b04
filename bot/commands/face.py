"""/face: a person who does not exist (StyleGAN2), with truncation, mixing two seeds and latent edits."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from bot.commands.grammar import Option, Settings, number, register_option, settings, split_options, \
    typed_values, whole
from bot.commands.registry import Command, CommandSpec, Param, only_options_of, register
from bot.config import DefaultsConfig
from bot.limits import MAX_SEED, CommandError, LimitProblem, LimitsConfig, register_rules
from storage.infotext import plain_number
from storage.params import FaceParams, JobParams
from storage.params.face import MAX_MOVES, MOVE, PSI

if TYPE_CHECKING:
    from bot.replies import Attachment, Reply
    from bot.service import Service
    from storage.records import Owner

LAYER_NAMES = ("coarse", "middle", "fine")
STYLEGAN_CHECKPOINT = "a StyleGAN2 checkpoint: set [faces] checkpoint"
# /face without a StyleGAN2 checkpoint: the closest Stable Diffusion gets to "a person who does not exist".
# The job is an ordinary text→image one; this prompt is what tells a rerun that it was a /face.
FACE_PROMPT = "a close-up portrait photo of a person, natural light, 85mm lens, sharp focus, detailed skin"
FACE_NEGATIVE_PROMPT = "cartoon, painting, illustration, deformed, blurry, text, watermark"


def _layers(text: str) -> str:
    layers = text.lower()
    low, dash, high = layers.partition("-")
    if layers in LAYER_NAMES or (dash and low.isdigit() and high.isdigit() and int(low) <= int(high)):
        return layers
    raise CommandError(f"layers must be coarse, middle, fine or FROM-TO like 0-3, got {text!r}")


register_option(Option("psi", ("truncation",), number("psi"),
                       f"/face: {PSI.text()}; 0 = the average face, 1 = full variety (0.7 is usual)", "psi", PSI, value="float"))
register_option(Option("layers", (), _layers,
                       "/face mix: which styles come from the second seed: coarse, middle, fine or 0-3", "layers",
                       choices=LAYER_NAMES))


@dataclass(frozen=True)
class Face(Command):
    """A face of someone who does not exist: a seed, or two mixed, with moves along latent directions."""

    name = "face"
    queues_job = True
    settings: Settings  # seed, psi, count, layers
    mix_seed: int | None = None
    edits: tuple[tuple[str, float], ...] = ()


def parse(words: list[str], defaults: DefaultsConfig) -> Face:
    """/face [--seed N] [--psi F] [--n N] · /face mix A B [--layers L] · /face edit SEED dir0=2 smile=-1"""
    free, values = split_options(words, loose_keys=True)
    action = free[0].lower() if free else ""
    mix_seed, edits = None, []
    if action == "mix":
        if len(free) != 3:
            raise CommandError("/face mix takes two seeds: /face mix 12 345 [--layers coarse|middle|fine|0-3]")
        values["seed"], mix_seed = seed(free[1]), seed(free[2])
        free = []
    elif action == "edit":
        if len(free) < 3:
            raise CommandError("/face edit takes a seed and moves: /face edit 12 dir0=2 smile=-1.5")
        values["seed"] = seed(free[1])
        edits = _moves(free[2:])
        free = []
    if free:
        raise CommandError(f"/face takes options, mix A B or edit SEED …, got {' '.join(free)!r}")
    return _face(values, mix_seed, tuple(edits), defaults)


def from_options(given: Mapping[str, object], defaults: DefaultsConfig) -> Face:
    """/face from a slash command: seed, psi, count, layers as options; a second seed to mix; moves as text."""
    given = dict(given)
    mix_seed, moves = given.pop("mix", None), given.pop("edit", None)
    values = typed_values(given)
    if "layers" in values and mix_seed is None:
        raise CommandError("layers is for mixing: give a second seed to mix with")
    return _face(values, None if mix_seed is None else seed(str(mix_seed)), tuple(_moves(str(moves).split()) if moves else ()),
                 defaults)


def _face(values: dict[str, object], mix_seed: int | None, edits: tuple, defaults: DefaultsConfig) -> Face:
    only_options_of(SPEC, values)
    if "layers" in values and mix_seed is None:
        raise CommandError("--layers is for /face mix A B")
    return Face(settings(values, defaults), mix_seed, edits)


def _moves(words: list[str]) -> list[tuple[str, float]]:
    """dir0=2 smile=-1.5 → [("dir0", 2.0), ("smile", -1.5)]"""
    moves = []
    for move in words:
        direction, equals, amount = move.partition("=")
        if not equals or not direction:
            raise CommandError(f"a move looks like dir0=2 or smile=-1.5, got {move!r}")
        moves.append((direction.lower(), number(direction)(amount)))
    return moves


def seed(text: str) -> int:
    """A seed typed as a word (not an option): checked here, as a look-up by seed must stay in SQLite's range."""
    value = whole("seed")(text)
    if not 0 <= value <= MAX_SEED:
        raise CommandError(f"seed must be 0–{MAX_SEED}, got {text if len(text) <= 24 else text[:20] + '…'}")
    return value


async def run(service: Service, owner: Owner, command: Face, attachments: Sequence[Attachment]) -> Reply:
    """A StyleGAN2 face; with no [faces] checkpoint, a portrait from Stable Diffusion, saying so."""
    from bot.commands import imagine

    given, faces = command.settings, service.config.faces
    face_seed = given.get("seed")
    face_seed = service.random_seed() if face_seed is None else face_seed
    if not faces.checkpoint:
        # A Stable Diffusion portrait has no ψ, second seed or latent directions to move along.
        if command.mix_seed is not None or command.edits:
            raise CommandError(f"mixing and editing faces need {STYLEGAN_CHECKPOINT}")
        if given.get("psi") is not None:
            raise CommandError(f"--psi needs {STYLEGAN_CHECKPOINT}; without one /face draws a Stable Diffusion portrait")
        portrait = Settings(seed=face_seed, count=given.get("count"), negative_prompt=FACE_NEGATIVE_PROMPT)
        reply = await imagine.draw(service, owner, FACE_PROMPT, portrait, None)
        return dataclasses.replace(reply, text=reply.text + " · no [faces] checkpoint: a portrait by Stable Diffusion")
    unknown = [name for name, _ in command.edits
               if name not in faces.directions and not (name.startswith("dir") and name[3:].isdigit())]
    if unknown:
        named = ", ".join(sorted(faces.directions)) or "none configured"
        raise CommandError(f"no direction {unknown[0]!r}; use dir0 … dir9 (found in the weights) or one of: {named}")
    params = FaceParams(seed=face_seed, count=given.get("count") or 1,
                        psi=faces.psi if given.get("psi") is None else given.get("psi"),
                        mix_seed=command.mix_seed, layers=given.get("layers") or "coarse", edits=command.edits)
    service.check(params)
    return await service.submit(owner, params)


def face_problems(params: JobParams, limits: LimitsConfig) -> list[LimitProblem]:
    assert isinstance(params, FaceParams)
    problems = []
    if len(params.edits) > MAX_MOVES:
        problems.append(LimitProblem("edits", f"at most {MAX_MOVES} moves at once, got {len(params.edits)}"))
    for direction, amount in params.edits:
        if not MOVE.holds(amount):
            problems.append(LimitProblem("edits", f"a move must be {MOVE.text()}, got {direction}={plain_number(amount)}"))
    return problems


register_rules("face", face_problems)
SPEC = register(CommandSpec(
    name="face",
    usage="/face [--seed N] [--psi F] · /face mix A B [--layers coarse|middle|fine] · /face edit SEED dir0=2 — a person"
          " who does not exist",
    summary="a person who does not exist: /face --seed 42",
    parse=parse, run=run, options=("seed", "psi", "n", "layers"),
    from_options=from_options,
    params=(Param("mix", "int", "a second seed to mix with (its styles at --layers)", low=0, high=MAX_SEED),
            Param("edit", "text", "moves along latent directions, e.g. dir0=2 smile=-1.5")),
    foreign="/face takes --seed, --psi and --n (and --layers with mix); {option} is for /{owner}",
))
