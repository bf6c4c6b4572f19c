"""The report's narrative from the shared LLM client, passed through the guardrail (`grounding.Guard`).

The model cites figures by reference and code fills in their values. A sentence the guard refuses is rewritten
(within a budget of rewrites per report) and, if the rewrite is refused too, removed; every removal is recorded in
the report with its reasons.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from prometheus_client import Counter

from platform_common.llm import LLM

from .grounding import Guard, split_sentences
from .prompts import load_prompt

log = logging.getLogger(__name__)

SENTENCES = Counter("reports_narrative_sentences_total", "Narrative sentences by guardrail outcome", ["outcome"])


@dataclass
class Narrative:
    sentences: list[dict] = field(default_factory=list)  # {text, segments, figures: {value shown: ref}, draft}
    removed: list[dict] = field(default_factory=list)  # {sentence, problems, rewrite}
    prompt_versions: list[str] = field(default_factory=list)
    model: str = ""


MAX_FACTS = 12

# what model output may not carry into a report, an email or a Slack message: links and mentions
# <url|label>, <@U123>, <!channel>, <#C1|name>; not a comparison such as "a < 60 and b > 3"
_SLACK_MARKUP = re.compile(r"<((?:[@#!]|[a-zA-Z][a-zA-Z0-9+.-]*:)[^<>|\s]*)(?:\|([^<>]*))?>")
_MARKDOWN_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
# schemes, www., and bare domains of common TLDs (chat clients turn "evil.com/x" into a link)
_URL = re.compile(r"(?i)\b(?:[a-z][a-z0-9+.-]*://|www\.|mailto:)\S+"
                  r"|\b(?:[a-z0-9-]+\.)+(?:com|net|org|io|co|info|biz|ru|cn|xyz|top|app|dev|me|ly|link|click)\b\S*")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_MENTION = re.compile(r"(?<![\w@])@(?=\w)")


def without_links_or_mentions(text: str) -> str:
    """Model text with links (Slack markup, Markdown, URLs, email addresses) and @mentions taken out; a link's
    label stays as plain text."""
    text = _SLACK_MARKUP.sub(lambda m: m.group(2) or "", text)
    text = _MARKDOWN_LINK.sub(lambda m: m.group(1), text)
    text = _URL.sub("", _EMAIL.sub("", text))
    text = _MENTION.sub("", text)
    return " ".join(text.split())


def facts_text(figures: list[dict], anomalies: list[dict]) -> str:
    """The figures the model sees, as sentences that cite them by reference (never their values, which the model
    would copy): totals first, then those of anomalous series, up to MAX_FACTS. A short prompt keeps a small model
    on topic and fast on CPU; the guardrail still accepts every figure of the report."""
    flagged = {(a["stream"], a["metric"]) for a in anomalies}
    ranked = sorted(figures, key=lambda f: ("stream" in f or "source" in f,
                                            (f.get("stream"), f.get("metric")) not in flagged))
    return "\n".join(f"- {f['label']} was {{{f['id']}}}." for f in ranked[:MAX_FACTS]) or "- none"


def anomalies_text(anomalies: list[dict]) -> str:
    return "\n".join(f"- {a['label']} reached {{{a['id']}}}." for a in anomalies) or "- none"


def passages_text(passages: list[dict]) -> str:
    return "\n".join(f"[{p['chunk_id']}] {p['title']}: {p['text'][:400]}" for p in passages) or "- none"


_HEADER = re.compile(r"^[A-Z][\w ]{0,30}:")  # "Facts:", "Period: ..."
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")


def draft_sentences(text: str) -> list[str]:
    """The sentences of a draft, line by line: list markers dropped, and the prompt's headers a small model may
    echo ("Report: …", "Facts:") left out; what follows the last "Summary:" when the model wrote one."""
    sentences = []
    for line in text.rpartition("Summary:")[2].splitlines():
        line = _BULLET.sub("", line).strip()
        if line and not _HEADER.match(line):
            sentences += split_sentences(without_links_or_mentions(line))
    return sentences


async def write_narrative(llm: LLM, guard: Guard, *, title: str, period: str, figures: list[dict],
                          anomalies: list[dict], passages: list[dict], max_tokens: int,
                          max_rewrites: int) -> Narrative:
    prompt, rewrite = load_prompt("narrative.v2"), load_prompt("rewrite.v2")
    result = Narrative(prompt_versions=[prompt.version, rewrite.version], model=llm.model)
    facts = facts_text(figures, anomalies)
    draft = await llm.generate(prompt.render(title=title, period=period, facts=facts,
                                             anomalies=anomalies_text(anomalies), passages=passages_text(passages)),
                               max_tokens)
    result.model = draft.model
    for sentence in draft_sentences(draft.text):
        first = checked = guard.check(sentence)
        attempt = None
        while not checked.ok and max_rewrites > 0:
            max_rewrites -= 1
            attempt = (await llm.generate(rewrite.render(facts=facts, sentence=sentence,
                                                         problems="; ".join(checked.problems)), max_tokens)).text
            attempt = " ".join(draft_sentences(attempt)[:1])
            checked = guard.check(attempt) if attempt else checked
        if checked.ok:
            SENTENCES.labels("kept" if attempt is None else "rewritten").inc()
            result.sentences.append({"text": checked.text, "segments": checked.segments, "figures": checked.figures,
                                     "draft": checked.sentence})
        else:
            SENTENCES.labels("removed").inc()
            result.removed.append({"sentence": sentence, "problems": first.problems, "rewrite": attempt})
    log.info("narrative: %d sentences kept, %d removed", len(result.sentences), len(result.removed))
    return result
