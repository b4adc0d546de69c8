"""Decode-worker jobs that misbehave on purpose, for tests. They run in worker processes,
so they are module-level functions chosen by file name."""

from __future__ import annotations

import os
import time

from photosearch.workers import prepare_one


def hang_on_marked(job):
    """Decoding any file with 'hang' in its name never finishes."""
    if b"hang" in os.path.basename(job[0].path):
        time.sleep(3600)
    return prepare_one(job)


def racing(job):
    """'vanish' files are deleted just before decoding; 'rewrite' files are changed
    (grown) just after: the scan's view of both is out of date by the time they're stored."""
    name = os.path.basename(job[0].path)
    if b"vanish" in name:
        os.unlink(job[0].path)
    result = prepare_one(job)
    if b"rewrite" in name:
        with open(job[0].path, "ab") as f:
            f.write(b"\0" * 100)
    return result
