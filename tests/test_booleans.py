"""One reading of true/false: a flag, a config override and a logged param agree on every word."""

from __future__ import annotations

import argparse

import pytest

from entrypoints import switch
from mammo.core.booleans import FALSE_WORDS, TRUE_WORDS, parse_boolean
from mammo.core.errors import ConfigError
from mammo.model.variants import make_config
from mammo.tracking import _same_value


@pytest.mark.parametrize(("word", "value"), [(w, True) for w in TRUE_WORDS] + [(w, False) for w in FALSE_WORDS])
def test_the_flag_the_override_and_the_logged_param_read_a_word_alike(word: str, value: bool) -> None:
    for written in (word, f" {word.upper()} "):
        assert parse_boolean(written) is value
        assert switch(written) is value
        assert make_config("model5", standardize=written).standardize is value
        assert _same_value(written, "1.0" if value else "0.0") and not _same_value(written, "0.0" if value else "1.0")


def test_a_word_that_is_no_boolean_is_refused_everywhere_with_the_accepted_words() -> None:
    with pytest.raises(ValueError, match=r"true/yes/on/1 or false/no/off/0\), got 'maybe'"):
        parse_boolean("maybe")
    with pytest.raises(argparse.ArgumentTypeError, match="got 'maybe'"):
        switch("maybe")
    with pytest.raises(ConfigError, match=r"standardize: cannot use 'maybe'"):
        make_config("model5", standardize="maybe")
    assert not _same_value("maybe", "1.0")
    assert switch("") is False and switch("default") is False  # an unset MLproject parameter: the flag's default
