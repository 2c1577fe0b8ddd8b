"""`wire_values` clients (triggerd.config.aws): timestamps as epoch seconds from a number or
ISO-8601 text."""

from __future__ import annotations

from triggerd.config.aws import epoch_seconds


def test_numbers_are_epoch_seconds_as_they_are() -> None:
    assert epoch_seconds(1714523884.835) == 1714523884.835
    assert epoch_seconds(1714523884) == 1714523884.0
    assert isinstance(epoch_seconds(1714523884), float)


def test_iso_text_goes_through_botocores_parser() -> None:
    assert epoch_seconds("2024-05-01T00:38:04.835Z") == 1714523884.835
    assert epoch_seconds("2024-05-01T02:38:04+02:00") == 1714523884.0
