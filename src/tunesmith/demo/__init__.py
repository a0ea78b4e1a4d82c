"""The embedded demo data: support emails in three classes, written for tunesmith.

780 hand-written emails to customer support of software, consumer and B2B services:
billing inquiry, technical support or product feedback; one line to several paragraphs,
polite to furious, some genuinely ambiguous (routed by their main request). A fixed test split
of 180 (60 per class) and 600 for training.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

NEW_EMAILS = [
    "I was charged twice for May and I'd like one of the payments refunded, please.",
    "Since this morning the app logs me out every few minutes and says 'session expired'. "
    "I've reinstalled it twice already. What else can I try?",
    "Just wanted to say the new dashboard is lovely - though I wish the dark mode applied to the reports too.",
]


def write_demo_data(folder: str | Path) -> list[Path]:
    """Copy train.jsonl and test.jsonl, and write new_emails.txt (three unlabeled emails), into folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("train.jsonl", "test.jsonl"):
        with resources.as_file(resources.files(__package__) / name) as src:
            shutil.copyfile(src, folder / name)
        written.append(folder / name)
    (folder / "new_emails.txt").write_text("\n".join(NEW_EMAILS) + "\n")
    written.append(folder / "new_emails.txt")
    return written
