"""Normalisation tables vs Python's unicodedata: every code point, plus random strings."""

from __future__ import annotations

import random
import unicodedata

import pytest

import featurizer_reference as ref
from upper_fast import Featurizer, _core, unicode_version

same_version = pytest.mark.skipif(
    unicodedata.unidata_version != unicode_version(),
    reason=f"tables are Unicode {unicode_version()}, this Python has {unicodedata.unidata_version}",
)

ALL_CODE_POINTS = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]


def _mismatches(got: list[str], expected: list[str], inputs: list[str]) -> list[str]:
    return [f"{s!r} (U+{ord(s[0]):04X}..): {g!r} != {e!r}" for s, g, e in zip(inputs, got, expected) if g != e][:10]


@same_version
def test_nfkc_every_code_point() -> None:
    got = _core._nfkc_many(ALL_CODE_POINTS)
    expected = [unicodedata.normalize("NFKC", c) for c in ALL_CODE_POINTS]
    assert not _mismatches(got, expected, ALL_CODE_POINTS)


@same_version
def test_normalize_every_code_point() -> None:
    # Each code point between two letters, so separators, dropped and token classes all show.
    inputs = ["a" + c + "b" for c in ALL_CODE_POINTS]
    got = Featurizer().normalize_many(inputs)
    expected = [ref.normalize(s) for s in inputs]
    assert not _mismatches(got, expected, inputs)


def _interesting_code_points() -> list[str]:
    # Starters that compose, combining marks of several classes, Hangul jamo, compatibility forms.
    picks = [chr(c) for c in range(0x41, 0x7B)]
    picks += [chr(c) for c in range(0x300, 0x370)] + [chr(c) for c in range(0x591, 0x5C8)]
    picks += [chr(c) for c in range(0x1100, 0x1113)] + [chr(c) for c in range(0x1161, 0x1176)]
    picks += [chr(c) for c in range(0x11A8, 0x11C3)] + ["\uac00", "\uac01", "\ud4db"]
    picks += ["\u0b47", "\u0b3e", "\u0b57", "\u0dd9", "\u0dcf", "\u0dca", "\u1025", "\u102e", "\u0344", "\u0f73"]
    picks += ["\u1e0b", "\u0323", "\u0307", "\u212b", "\u2126", "\ufb01", "\u00bd", "\u3300", "\ufdfa", "\u1dfa"]
    picks += [" ", ".", "-", "\u00ad", "\u200d", "ß", "İ", "Σ", "ς", "\U0001d400", "\U0001f600"]
    return picks


@same_version
def test_random_strings_against_unicodedata() -> None:
    rng = random.Random(1234)
    picks = _interesting_code_points()
    inputs = ["".join(rng.choice(picks) for _ in range(rng.randint(1, 12))) for _ in range(20000)]
    inputs += ["".join(rng.choice(ALL_CODE_POINTS) for _ in range(rng.randint(1, 8))) for _ in range(5000)]
    got = _core._nfkc_many(inputs)
    assert not _mismatches(got, [unicodedata.normalize("NFKC", s) for s in inputs], inputs)
    got = Featurizer().normalize_many(inputs)
    assert not _mismatches(got, [ref.normalize(s) for s in inputs], inputs)


@same_version
def test_unicode_version_is_pythons() -> None:
    assert unicode_version() == unicodedata.unidata_version


def test_nfkc_of_long_assigned_code_points_on_any_python() -> None:
    # Normalization stability: NFKC of a code point assigned since Unicode 3.2 is the same in every
    # later version, so this runs even when Python's Unicode differs from the tables'.
    old = [c for c in ALL_CODE_POINTS if unicodedata.ucd_3_2_0.category(c) != "Cn"]
    assert len(old) > 90000
    got = _core._nfkc_many(old)
    assert not _mismatches(got, [unicodedata.normalize("NFKC", c) for c in old], old)
