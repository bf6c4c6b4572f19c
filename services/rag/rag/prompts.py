"""rag's prompts: versioned files in `prompts/` (see platform_common.prompts)."""

from pathlib import Path

from platform_common.prompts import Prompt
from platform_common.prompts import load_prompt as _load_prompt

PROMPT_DIR = Path(__file__).with_name("prompts")

__all__ = ["Prompt", "load_prompt"]


def load_prompt(name: str) -> Prompt:
    return _load_prompt(PROMPT_DIR, name)
