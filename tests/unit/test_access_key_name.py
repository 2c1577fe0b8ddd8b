"""An access key's `name` accepts what the pattern `^[\\w+=,.@-]{1,64}$` did: the length
is checked apart (`max_length`), since the counted Unicode class made pydantic-core's regex
slow to compile on every config load."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from pydantic_core import SchemaValidator, core_schema

from triggerd.config.access import AccessKey

#: The field as it was, validated by the same engine.
BEFORE = SchemaValidator(core_schema.str_schema(pattern=r"^[\w+=,.@-]{1,64}$"))

NAMES = st.text(
    alphabet=st.sampled_from("aZ09_+=,.@- \t\n/:éßЖ日٣ǅ\u200d!"), min_size=0, max_size=70
) | st.text(min_size=60, max_size=70)


def accepted_before(name: str) -> bool:
    try:
        BEFORE.validate_python(name)
    except ValidationError:
        return False
    return True


def accepted_now(name: str) -> bool:
    try:
        AccessKey(access_key_id="AKID", secret_access_key="s" * 16, actions=["lambda:*"], name=name)
    except ValidationError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(NAMES)
def test_a_name_is_accepted_exactly_when_the_old_pattern_accepted_it(name: str) -> None:
    assert accepted_now(name) == accepted_before(name)


def test_the_edges_of_the_length() -> None:
    assert accepted_now("é" * 64) and not accepted_now("é" * 65)
    assert accepted_now("a") and not accepted_now("")
