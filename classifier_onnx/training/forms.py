"""Short forms of the support tickets and software issues: how such requests reach a chat.

The base data has these two kinds of request only as long documents: the GDM support tickets
are e-mails (a subject, a greeting, several paragraphs, a sign-off) and the SWE-Lancer issues
are filled-in templates (version fields, check lists, "## Expected Result:"). Live traffic
sends them as a few plain sentences ("I was charged twice for order #12345. Can you help
me?"; "Uploading a file with a UTF-8 name fails: ... Expected the name to be preserved."), and
a model trained on the long forms alone has few examples of that wording in its category.
``short_forms`` writes, for every training row of those two sources:

* tickets: the message body without subject, greeting and sign-off, cut to its first three
  sentences, and the ticket again as it is (three rows per ticket in all);
* issues: "<title>. <actual result> Expected: <expected result>" where the issue states both
  (two rows per issue).

Labels (category, complexity, tools, turn) are the original row's; ``source`` gains
``+short`` (or ``+again``). Only training rows are read: the validation and held-out splits
are unchanged. ``train --extra`` takes the output.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["TICKETS", "ISSUES", "short_forms"]

TICKETS = "inspect_evals/support_tickets"
ISSUES = "inspect_evals/swe_lancer"

_GREETING = re.compile(r"^(?:hi|hello|hey|dear|greetings|good (?:morning|afternoon|evening))\b",
                       re.IGNORECASE)
_SIGN_OFF = re.compile(
    r"^(?:thanks|thank you|many thanks|best|regards|kind regards|sincerely|cheers|"
    r"warm regards|all the best)\b[^.?!]{0,40}[,.!]?\s*$",
    re.IGNORECASE,
)
_PLEASANTRY = re.compile(r"^(?:I )?hope (?:you|this|all)\b[^.?!]{0,40}[.!]$", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.?!])\s+(?=[A-Z\"'(])")
_SECTION = re.compile(r"^##\s*(Expected|Actual) Result:?\s*$", re.IGNORECASE | re.MULTILINE)
_TEMPLATE_HINT = re.compile(
    r"^Describe what (?:you think should've happened|actually happened)\s*$", re.MULTILINE
)


def _user_text(row: dict[str, Any]) -> str | None:
    users = [m for m in row["messages"] if m.get("role") == "user"]
    content = users[-1].get("content") if users else None
    return content if isinstance(content, str) else None


def _with_text(row: dict[str, Any], text: str, suffix: str) -> dict[str, Any]:
    """``row`` with its last user message replaced by ``text`` and ``suffix`` on its source."""
    messages = [dict(m) for m in row["messages"]]
    last = max(i for i, m in enumerate(messages) if m.get("role") == "user")
    messages[last]["content"] = text
    return {**row, "messages": messages, "source": f"{row['source']}{suffix}"}


def ticket_chat(text: str) -> str | None:
    """The ticket's body as a chat message: no subject, greeting or sign-off, three
    sentences at most; None where nothing is left."""
    _, _, body = text.partition("\n\n")
    lines = [line.strip() for line in (body or text).splitlines()]
    lines = [line for line in lines if line]
    if lines and _GREETING.match(lines[0]) and len(lines[0]) < 60:
        lines = lines[1:]
    for i, line in enumerate(lines):
        if _SIGN_OFF.match(line):
            lines = lines[:i]
            break
    sentences = _SENTENCE.split(" ".join(lines))
    sentences = [s for s in sentences if not (_GREETING.match(s) or _PLEASANTRY.match(s))]
    short = " ".join(sentences[:3]).strip()
    return short or None


def _section(text: str, name: str) -> str | None:
    parts = _SECTION.split(text)
    # parts: [before, name1, body1, name2, body2, ...]
    for i in range(1, len(parts) - 1, 2):
        if parts[i].lower() == name:
            body = _TEMPLATE_HINT.sub("", parts[i + 1]).split("\n## ", 1)[0].split("\n#", 1)[0]
            first = " ".join(line.strip() for line in body.strip().splitlines()[:2]).strip()
            return first or None
    return None


def issue_report(text: str) -> str | None:
    """A short bug report from an issue that states its actual and expected results."""
    title = text.split("\n", 1)[0].strip().rstrip(".")
    actual = _section(text, "actual")
    expected = _section(text, "expected")
    if not (title and actual and expected):
        return None
    actual = actual.rstrip(".")
    expected = expected.rstrip(".")
    return f"{title}. {actual}. Expected: {expected}."


def short_forms(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The extra rows described in the module docstring, in the order of ``rows``."""
    for row in rows:
        text = _user_text(row)
        if text is None:
            continue
        if row.get("source") == TICKETS:
            chat = ticket_chat(text)
            if chat is not None:
                yield _with_text(row, chat, "+short")
            yield _with_text(row, text, "+again")
        elif row.get("source") == ISSUES:
            report = issue_report(text)
            if report is not None:
                yield _with_text(row, report, "+short")
