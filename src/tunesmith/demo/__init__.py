"""The embedded demo data: support emails in three classes, written for tunesmith.

780 hand-written emails to customer support of software, consumer and B2B services:
billing inquiry, technical support or product feedback; one line to several paragraphs,
polite to furious, some genuinely ambiguous (routed by their main request). A fixed test split
of 180 (60 per class) and 600 for training.

The triage set turns 450 of them (360 from training, 90 from test, balanced by class) into
instruction data for generation: the prompt asks for a JSON record and the response is
{"category", "urgency", "summary"}, with urgency and summary written by hand for each email.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

NEW_EMAILS = [
    "I was charged twice for May and I'd like one of the payments refunded, please.",
    "Since this morning the app logs me out every few minutes and says 'session expired'. "
    "I've reinstalled it twice already. What else can I try?",
    "Just wanted to say the new dashboard is lovely - though I wish the dark mode applied to the reports too.",
]


TRIAGE_PROMPT = (
    "Triage this support email. Reply with only a JSON object with the keys category (billing, technical or "
    "feedback), urgency (low, medium or high) and summary (one sentence).\n\nEmail:\n"
)
"""The instruction before each email in triage_*.jsonl."""


def write_demo_data(folder: str | Path) -> list[Path]:
    """Copy the classification set (train/test.jsonl, new_emails.txt) and the triage set for generation
    (triage_train/test.jsonl: prompt and JSON response; triage_new.jsonl: prompts only) into folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("train.jsonl", "test.jsonl", "triage_train.jsonl", "triage_test.jsonl"):
        with resources.as_file(resources.files(__package__) / name) as src:
            shutil.copyfile(src, folder / name)
        written.append(folder / name)
    (folder / "new_emails.txt").write_text("\n".join(NEW_EMAILS) + "\n")
    prompts = "".join(json.dumps({"prompt": TRIAGE_PROMPT + e}) + "\n" for e in NEW_EMAILS)
    (folder / "triage_new.jsonl").write_text(prompts)
    written += [folder / "new_emails.txt", folder / "triage_new.jsonl"]
    return written
