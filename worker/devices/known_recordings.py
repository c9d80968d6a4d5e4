"""Public recordings we know, identified by the SHA-256 of their first frame (so that slices of
them are recognised too), with the attribution their licence requires wherever they are used
or shown (Creative Commons Artistic License with Attribution; see docs/real-data.md)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

FIRST_FRAME_BYTES = 1024  # 256 float32 values: one Goe-MF II frame

KNOWN_RECORDINGS: dict[str, dict[str, str]] = {
    "f3007aceb3522c3cc9804b58ca251fdf24d60606117c45d7c05b53db9ca9e879": {
        "name": "neonate-spontaneous/P04P-1016.get (EIDORS contributed data)",
        "attribution": (
            "Data contributed by Inéz Frerichs. S. Heinrich, H. Schiffmann, A. Frerichs, "
            "A. Klockgether-Radke, I. Frerichs, \"Body and head position effects on regional "
            "lung ventilation in infants: an electrical impedance tomography study\", "
            "Intensive Care Med. 32:1392-1398, 2006."),
    },
    "a98cb78c274ee12bcb248f5d52d122690d27e71c57d1aa6412a91086d9447696": {
        "name": "child-lung-injury/CHB_CONV05-ref.get (EIDORS contributed data)",
        "attribution": (
            "Wolf GK, Grychtol B, Thompson JE, Arnold JH (contributors). Wolf GK, Grychtol B, "
            "Frerichs I, van Genderingen HR, Zurakowski D, Thompson JE, Arnold JH, \"Regional "
            "lung volume changes in children with acute respiratory distress syndrome during a "
            "derecruitment maneuver\", Critical Care Medicine 35(8):1972-8, 2007."),
    },
}


def file_hashes(path: str | Path) -> tuple[str, str]:
    """(SHA-256 of the whole file, SHA-256 of its first frame)."""
    data = Path(path).read_bytes()
    return (hashlib.sha256(data).hexdigest(),
            hashlib.sha256(data[:FIRST_FRAME_BYTES]).hexdigest())


def known_recording(first_frame_sha256: str) -> dict[str, Any] | None:
    """Name and attribution of a known recording, or None."""
    return KNOWN_RECORDINGS.get(first_frame_sha256)
