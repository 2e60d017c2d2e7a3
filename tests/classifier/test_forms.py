"""Short forms of support tickets and software issues (``classifier forms``)."""

from __future__ import annotations

from typing import Any

from classifier_onnx.training.forms import ISSUES, TICKETS, issue_report, short_forms, ticket_chat

TICKET = (
    "Trouble logging in - need access ASAP\n\n"
    "Hello Quillo Customer Support,\n\n"
    "Hope you're doing great. I'm having trouble logging into my account. I entered my "
    "password correctly. The page says my account is locked. I rely on it daily.\n\n"
    "Thanks,\nJordan"
)

ISSUE = (
    "Log in - Can't login with google button when open 2 tabs\n\n"
    "## Action Performed:\n1. Go to the login screen\n2. Click Google button\n\n"
    "## Expected Result:\nDescribe what you think should've happened\n"
    "Can login to main space of Expensify\n\n"
    "## Actual Result:\nDescribe what actually happened\nThe page hangs, can't login\n\n"
    "## Workaround:\nUnknown\n"
)


def row(source: str, text: str, category: str = "general") -> dict[str, Any]:
    return {"category": category, "complexity": 0.2, "messages": [
        {"role": "system", "content": "You are support."}, {"role": "user", "content": text}
    ], "source": source, "tools": 0, "turn": 1}


def test_ticket_loses_subject_greeting_pleasantry_and_sign_off() -> None:
    assert ticket_chat(TICKET) == (
        "I'm having trouble logging into my account. I entered my password correctly. "
        "The page says my account is locked."
    )


def test_issue_becomes_a_short_report_without_the_template_hints() -> None:
    assert issue_report(ISSUE) == (
        "Log in - Can't login with google button when open 2 tabs. The page hangs, can't "
        "login. Expected: Can login to main space of Expensify."
    )


def test_issue_without_both_results_gives_nothing() -> None:
    assert issue_report("Crash on start\n\n## Action Performed:\n1. Open the app\n") is None


def test_short_forms_keep_labels_and_mark_the_source() -> None:
    rows = [row(TICKETS, TICKET), row(ISSUES, ISSUE, "code"), row("evals/sql", "Q: SELECT?")]
    out = list(short_forms(rows))
    assert [r["source"] for r in out] == [f"{TICKETS}+short", f"{TICKETS}+again",
                                          f"{ISSUES}+short"]
    assert [r["category"] for r in out] == ["general", "general", "code"]
    assert all(r["complexity"] == 0.2 and r["tools"] == 0 and r["turn"] == 1 for r in out)
    assert out[1]["messages"] == rows[0]["messages"]
    assert out[0]["messages"][0] == {"role": "system", "content": "You are support."}
    # The input rows are never changed.
    assert rows[0]["messages"][1]["content"] == TICKET
