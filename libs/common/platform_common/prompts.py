"""Prompts are files under version control (`<folder>/<name>.v<N>.txt` with a `### system` and a `### user`
section); outputs name a prompt by file name and content hash, so an edited file is a new prompt version even if
its name was not bumped."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .llm import Message


@dataclass(frozen=True)
class Prompt:
    name: str
    system: str
    user: str
    version: str

    def render(self, **values: str) -> list[Message]:
        return [Message("system", self.system), Message("user", self.user.format(**values))]


@cache
def load_prompt(folder: Path, name: str) -> Prompt:
    path = folder / f"{name}.txt"
    text = path.read_text()
    system, _, user = text.partition("### system\n")[2].partition("### user\n")
    if not system.strip() or not user.strip():
        raise ValueError(f"{path} needs a '### system' and a '### user' section")
    return Prompt(name, system.strip(), user.strip(), f"{name}@{hashlib.sha256(text.encode()).hexdigest()[:10]}")
