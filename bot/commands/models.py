"""/models: the models this easel draws with, which are loaded, and the LoRAs and embeddings it found."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.commands.registry import Command, CommandSpec, no_more, register
from bot.config import DefaultsConfig
from bot.replies import Reply
from generation.addons import EMBEDDING_SUFFIXES, LORA_SUFFIXES, find_files

if TYPE_CHECKING:
    from bot.service import Service
    from storage.records import Owner


@dataclass(frozen=True)
class ListModels(Command):
    name = "models"


def _parse(words: list[str], defaults: DefaultsConfig) -> ListModels:
    no_more("models", words)
    return ListModels()


async def _run(service: Service, owner: Owner, command: ListModels, attachments) -> Reply:
    return Reply(service.models_text())


def models_text(specs, default: str, loaded: list[str] | None, lora_dir: str, embeddings_dir: str) -> str:
    """One line per model (family, default, loaded), then the LoRAs and embeddings by name."""
    lines = ["models (--model NAME):"]
    for name, spec in specs.items():
        marks = [spec.label] + (["default"] if name == default else [])
        if loaded is not None and name in loaded:
            marks.append("loaded" + (", in use" if name == loaded[-1] else ""))
        lines.append(f"  {name} — {', '.join(marks)}")
    for what, folder, suffixes, how in (("LoRAs", lora_dir, LORA_SUFFIXES, "<lora:NAME:0.8> in a prompt"),
                                        ("embeddings", embeddings_dir, EMBEDDING_SUFFIXES, "their name in a prompt")):
        found = list(find_files(folder, suffixes)) if folder else []
        if found:
            lines.append(f"{what} ({how}): {', '.join(found)}")
        else:
            lines.append(f"{what}: none" + ("" if folder else f" ([models] {'lora_dir' if what == 'LoRAs' else 'embeddings_dir'} is not set)"))
    return "\n".join(lines)


register(CommandSpec(name="models", usage="/models — the models, LoRAs and embeddings you can draw with",
                     summary="the models, LoRAs and embeddings to draw with", parse=_parse, run=_run))
