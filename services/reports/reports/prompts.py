"""Prompts are versioned files (`prompts/<name>.v<N>.txt`, a `### system` and a `### user` section); a report names
each prompt by file name and content hash, so an edited file is a new version even if its name was not bumped."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from platform_common.llm import Message

PROMPT_DIR = Path(__file__).with_name("prompts")


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str
    version: str

    def render(self, **values: str) -> list[Message]:
        return [Message("system", self.system), Message("user", self.user.format(**values))]


@cache
def load_prompt(name: str) -> Prompt:
    text = (PROMPT_DIR / f"{name}.txt").read_text()
    system, _, user = text.partition("### system\n")[2].partition("### user\n")
    return Prompt(system.strip(), user.strip(), f"{name}@{hashlib.sha256(text.encode()).hexdigest()[:10]}")
