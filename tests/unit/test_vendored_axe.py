"""The vendored axe-core is the file `npm pack axe-core@4.14.1` shipped (its sha256 matches the release's
sri-history.json), with its licence beside it: a changed file is a new version, vendored on purpose."""

from __future__ import annotations

import hashlib

from tests.console_pages import AXE, AXE_SHA256


def test_the_vendored_axe_core_is_the_pinned_release_with_its_licence():
    assert hashlib.sha256(AXE.read_bytes()).hexdigest() == AXE_SHA256
    assert AXE.read_text().startswith("/*! axe v4.14.1")
    licence = (AXE.parent / "LICENSE").read_text()
    assert licence.startswith("Mozilla Public License, version 2.0")
    assert (AXE.parent / "LICENSE-3RD-PARTY.txt").is_file()
