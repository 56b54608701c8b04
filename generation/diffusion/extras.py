"""A job's LoRAs and embeddings on the model that draws it: found by name, checked, set for the job, and
the LoRAs taken off after it, so the next job draws as if they had never been there."""

from __future__ import annotations

from pathlib import Path

from generation.addons import (EMBEDDING_SUFFIXES, LoraCache, add_embedding, apply_loras, embedding_names_in,
                               embedding_short_hash, embeddings_for, expand_embeddings, find_files, lora_short_hash,
                               read_embedding, remove_loras, split_loras)
from generation.config import ModelsConfig
from generation.models import loras_of
from storage.params import DiffusionParams


def job_prompts(params: DiffusionParams, embeddings: dict[str, int]) -> tuple[str, str]:
    """The prompt and negative prompt as the text encoders see them: <lora:…> tags out, embeddings as tokens."""
    prompt, _ = split_loras(params.prompt)
    return expand_embeddings(prompt, embeddings), expand_embeddings(params.negative_prompt, embeddings)


class JobExtras:
    """`with JobExtras(...) as fields:` the job's LoRAs on the model while it draws; `fields` are what the
    record keeps of them (A1111's "Lora hashes" and "TI hashes")."""

    def __init__(self, model, params: DiffusionParams, models: ModelsConfig, cache: LoraCache) -> None:
        self.model, self.params, self.models, self.cache = model, params, models, cache
        self._applied = False

    def __enter__(self) -> dict[str, str | None]:
        loras = loras_of(self.params.prompt, self.models.lora_dir, self.params.negative_prompt)
        used = self._add_embeddings()
        if loras:  # each checked against the model first; one at weight 0 is checked, not set (the same picture)
            self._unhook()
            apply_loras(self.model.txt2img, loras, self.cache)
            self._applied = True
        return dict(
            loras=", ".join(f"{use.name}: {lora_short_hash(path)}" for use, path in loras) or None,
            embeddings=", ".join(f"{name}: {embedding_short_hash(path)}" for name, path in used) or None,
        )

    def _add_embeddings(self) -> list[tuple[str, Path]]:
        """The embeddings named in the prompts, added to the model's encoders the first time one is used."""
        if not self.models.embeddings_dir:
            return []
        found = find_files(self.models.embeddings_dir, EMBEDDING_SUFFIXES)
        prompt, _ = split_loras(self.params.prompt)
        names = embedding_names_in(f"{prompt}\n{self.params.negative_prompt}", found)
        for name in names:
            if name not in self.model.embeddings:
                self._unhook()
                vectors = read_embedding(found[name])
                count = 0
                for tokenizer, encoder, key in embeddings_for(self.model.txt2img, vectors, name):
                    count = add_embedding(tokenizer, encoder, name, vectors[key])
                self.model.embeddings[name] = count
        return [(name, found[name]) for name in names]

    def _unhook(self) -> None:
        """Take the model's offload hooks off before its modules change: sequential offload streams each layer's
        weights from a copy made when it was hooked (an embedding's new rows would be lost), and diffusers would
        switch on offload of its own. The next job hooks the changed modules again."""
        if self.model.offload is not None and self.model.offload.installed:
            self.model.offload.remove()

    def __exit__(self, *exc) -> None:
        if self._applied:
            self._unhook()
            remove_loras(self.model.txt2img)
