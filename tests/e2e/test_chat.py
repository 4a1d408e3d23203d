"""The interactive chat, driven through a real pseudo-terminal (pexpect) with the real SmolLM2 model.

prompt_toolkit redraws its prompt on every key, so the tests synchronise on the bracketed-paste switches it
writes when it starts reading a line (``ESC[?2004h``) and when the line is done (``ESC[?2004l``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

REF = "ai/smollm2:135M-Q4_1"

READING = re.escape("\x1b[?2004h")
READ = re.escape("\x1b[?2004l")
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")


class Chat:
    def __init__(self, command: list[str], env: dict[str, str], *args: str, ctx: int = 1024) -> None:
        env = {**env, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm"}
        self.child = pexpect.spawn(
            command[0],
            [*command[1:], "run", REF, "--ctx-size", str(ctx), "--threads", "2", *args],
            env=env,
            encoding="utf-8",
            timeout=120,
            dimensions=(40, 200),
        )
        self.child.expect(READING)

    def send(self, line: str) -> str:
        """Type a line and return what was printed until the next prompt (escape sequences removed)."""
        self.child.sendline(line)
        self.child.expect(READ)
        self.child.expect(READING)
        return ANSI.sub("", self.child.before).strip()

    def exit_status(self) -> int | None:
        self.child.expect(pexpect.EOF)
        self.child.close()
        status: int | None = self.child.exitstatus
        return status


@pytest.fixture()
def chat(command: list[str], env: dict[str, str]) -> Iterator[Chat]:
    session = Chat(command, env, "--temperature", "0")
    yield session
    if session.child.isalive():
        session.child.terminate(force=True)


QUESTION = "What is the capital of France? Answer with one word."


def test_question_streams_an_answer_and_bye_exits_0(chat: Chat) -> None:
    chat.child.sendline(QUESTION)
    chat.child.expect(READ)
    chat.child.expect("Paris")  # printed before the answer is complete: tokens stream
    chat.child.expect(READING)
    chat.child.sendline("/bye")
    assert chat.exit_status() == 0


def test_multiline_input(chat: Chat) -> None:
    chat.child.sendline('"""')
    chat.child.expect(READ)
    chat.child.expect(READING)
    chat.child.expect(r"\.\.\.")  # the continuation prompt
    assert "Paris" not in chat.send("What is the capital")  # nothing sent to the model yet
    answer = chat.send('of France? Answer with one word."""')
    assert "Paris" in answer
    info = chat.send("/show info")
    assert re.search(r"conversation\s+2 messages", info), info


def test_clear_forgets_the_conversation(chat: Chat) -> None:
    chat.send("My name is Zorblax.")
    assert re.search(r"conversation\s+2 messages", chat.send("/show info"))
    assert "Cleared" in chat.send("/clear")
    assert re.search(r"conversation\s+0 messages, 0 tokens", chat.send("/show info"))
    assert "Paris" in chat.send(QUESTION)
    assert re.search(r"conversation\s+2 messages", chat.send("/show info"))


def test_ctrl_c_stops_the_answer_and_returns_to_the_prompt(chat: Chat) -> None:
    chat.child.sendline("Write a very long story about a dragon and a knight.")
    chat.child.expect(READ)
    chat.child.expect(r"\w+ \w+ \w+ \w+")  # the answer has started
    chat.child.sendintr()
    chat.child.expect(READING, timeout=15)  # back at the prompt, not after the whole story
    assert "Paris" in chat.send(QUESTION)  # the session goes on
    chat.child.sendeof()
    assert chat.exit_status() == 0


def test_commands(chat: Chat) -> None:
    assert "/set system" in chat.send("/help")
    assert "Set temperature to 0.5" in chat.send("/set temperature 0.5")
    assert "invalid value" in chat.send("/set top_p 7")
    assert "Set the system message" in chat.send("/set system You are a pirate.")
    info = chat.send("/show info")
    assert "temperature=0.5" in info and "You are a pirate." in info and "Q4_1" in info
    assert "<|im_start|>" in chat.send("/show template")
    assert "Unknown command" in chat.send("/nope")
    chat.child.sendline("/bye")
    assert chat.exit_status() == 0


def test_history_is_kept(command: list[str], env: dict[str, str], model_home: Path) -> None:
    session = Chat(command, env, "--temperature", "0")
    session.send("/show template")
    session.child.sendline("/bye")
    assert session.exit_status() == 0
    assert "/show template" in (model_home / "chat_history").read_text()


def test_a_full_context_drops_the_oldest_turns(command: list[str], env: dict[str, str]) -> None:
    session = Chat(command, env, "--temperature", "0", "--max-tokens", "48", ctx=256)
    try:
        answers = [session.send(f"Question {i}: name a colour and describe it in one sentence.") for i in range(6)]
        assert any("oldest messages to stay within the context window" in a for a in answers), answers
        assert "Paris" in session.send(QUESTION)  # still answering, nothing crashed
        info = session.send("/show info")
        tokens = int(re.search(r"conversation\s+\d+ messages, (\d+) tokens", info).group(1))  # type: ignore[union-attr]
        assert tokens <= 256
        session.child.sendline("/bye")
        assert session.exit_status() == 0
    finally:
        if session.child.isalive():
            session.child.terminate(force=True)
