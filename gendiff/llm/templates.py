"""Prompt templates for the arithmetic task: prompt augmentation (Lu, Huang & Balestriero 2026, "Prompt Augmentation
Scales up GRPO Training on Mathematical Reasoning").

The paper draws, for each training question, one of several reasoning templates uniformly at random (the whole group
of completions of that question shares it) and scores the final answer in whatever format that template asks for;
rollouts under diverse templates are more diverse, which the paper reports delays entropy collapse. On the tiny
arithmetic model a "template" is a prompt phrasing together with an answer format, each a different order of work:

==========  ==================  ===================  ==========================================================
name        prompt (12+39)      completion           what the model writes
==========  ==================  ===================  ==========================================================
plain       ``12+39=``          ``51``               the answer (the task's original format)
reverse     ``rev 12+39=``      ``15``               the answer's digits least-significant first (sign first)
trace       ``sum 12+39=``      ``1c1 5c0 51``       per column from the right: digit, ``c``, carry; then the
                                                     answer ("+" only: the column trace of an addition)
tagged      ``ans 12+39:``      ``[51]``             the answer in brackets
==========  ==================  ===================  ==========================================================

``ArithmeticTask(templates=K)`` uses the first K (K = 1: plain only, the task as it was). Each template renders the
completion of a problem (SFT data) and extracts the answer back from a completion (the reward); ``extract`` returns
None for a completion that is not well-formed in the template's format (the SPEAR format reward uses that).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

Problem = tuple[int, str, int]  # (a, op, b)


def _value(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _reverse(n: int) -> str:
    return ("-" if n < 0 else "") + str(abs(n))[::-1]


def _trace(a: int, op: str, b: int) -> str:
    """``d c`` per column of a + b from the right (digit, carry), then the sum: 57+68 -> "5c1 2c1 125"."""
    if op != "+" or a < 0 or b < 0:
        raise ValueError(f"the 'trace' template writes the column trace of an addition of non-negative numbers, "
                         f"got {a}{op}{b}")
    cols, carry, x, y = [], 0, a, b
    while x or y or not cols:
        s = x % 10 + y % 10 + carry
        carry = s // 10
        cols.append(f"{s % 10}c{carry}")
        x, y = x // 10, y // 10
    return " ".join(cols) + f" {a + b}"


_INT = r"-?\d+"


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt phrasing and answer format.

    Attributes:
        name: short key.
        prefix, suffix: the prompt is ``prefix + f"{a}{op}{b}" + suffix``.
        render: (a, op, b) -> the completion of a correct answer (no EOS).
        answer_re: a completion (stripped) is well-formed iff it fully matches; group 1 holds the answer text.
        decode: the answer text -> the answer as the task spells it (``str(value)``).
    """

    name: str
    prefix: str
    suffix: str
    render: Callable[[int, str, int], str]
    answer_re: re.Pattern
    decode: Callable[[str], str]

    def prompt(self, a: int, op: str, b: int) -> str:
        """The prompt of problem a op b."""
        return f"{self.prefix}{a}{op}{b}{self.suffix}"

    def parse(self, prompt: str) -> Problem | None:
        """(a, op, b) when ``prompt`` is this template's prompt, else None."""
        m = re.fullmatch(rf"\s*{re.escape(self.prefix)}({_INT})\s*([+\-*])\s*({_INT})\s*{re.escape(self.suffix)}\s*",
                         prompt)
        return None if m is None else (int(m.group(1)), m.group(2), int(m.group(3)))

    def extract(self, completion: str) -> str | None:
        """The answer (as ``str(value)``) a completion gives, or None when it is not well-formed."""
        m = self.answer_re.fullmatch(completion.strip())
        return None if m is None else self.decode(m.group(1))


TEMPLATES: tuple[PromptTemplate, ...] = (
    PromptTemplate("plain", "", "=", lambda a, op, b: str(_value(a, op, b)), re.compile(f"({_INT})"), lambda s: s),
    PromptTemplate("reverse", "rev ", "=", lambda a, op, b: _reverse(_value(a, op, b)), re.compile(f"({_INT})"),
                   lambda s: ("-" if s.startswith("-") else "") + s.lstrip("-")[::-1]),
    PromptTemplate("trace", "sum ", "=", _trace, re.compile(rf"(?:\dc[01] )+({_INT})"), lambda s: s),
    PromptTemplate("tagged", "ans ", ":", lambda a, op, b: f"[{_value(a, op, b)}]", re.compile(rf"\[({_INT})\]"),
                   lambda s: s),
)
TEMPLATE_NAMES = tuple(t.name for t in TEMPLATES)


def check_templates(k: int, ops: tuple[str, ...] = ("+",)) -> None:
    """ValueError unless 1 <= k <= len(TEMPLATES) and every one of the first k templates can write every op."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(TEMPLATES):
        raise ValueError(f"prompt templates must be an integer in [1, {len(TEMPLATES)}] (the first K of "
                         f"{list(TEMPLATE_NAMES)}), got {k!r}")
    if k > TEMPLATE_NAMES.index("trace") and set(ops) - {"+"}:
        raise ValueError(f"template 'trace' (one of the first {k}) writes additions only; ops {list(ops)} need "
                         f"prompt templates <= {TEMPLATE_NAMES.index('trace')}")


def match_template(prompt: str) -> tuple[PromptTemplate, Problem]:
    """The template whose prompt ``prompt`` is and the problem it states; ValueError for any other text."""
    for t in TEMPLATES:
        problem = t.parse(prompt)
        if problem is not None:
            return t, problem
    raise ValueError(f"not an arithmetic prompt of any template {list(TEMPLATE_NAMES)}: {prompt!r}")


def template_answer(prompt: str, completion: str) -> str | None:
    """The answer ``completion`` gives in the format of ``prompt``'s template (None: not well-formed)."""
    return match_template(prompt)[0].extract(completion)
