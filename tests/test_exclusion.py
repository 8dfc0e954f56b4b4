"""The logits processor that keeps a repair off its step's rejected values, on a toy vocabulary."""

from __future__ import annotations

import pytest

from arq.backends.llamacpp.exclusion import COMPLETION_PENALTY, Exclusion
from arq.backends.llamacpp.tokens import TokenTable

np = pytest.importorskip("numpy")

PIECES = [
    b'{"', b"code", b'":', b" ", b' "', b'"', b"R", b"-", b"77", b"7", b"3", b"31", b'31"',
    b'"R-7731"', b' "R-7731",', b"8", b"9", b"90", b"0", b"00", b"1", b",", b'"}', b"\xc3",
    b"\xa9", b"\xc3\xa9",
]  # fmt: skip
ID = {piece: i for i, piece in enumerate(PIECES)}
PROMPT = [ID[b"8"], ID[b"9"]]  # whatever the prompt holds is not the answer


def scores_after(exclusion: Exclusion, *answer: bytes) -> dict[bytes, float]:
    """The scores the processor leaves, all logits starting at 0, after `answer`."""
    ids = np.array(PROMPT + [ID[piece] for piece in answer])
    out = exclusion(ids, np.zeros(len(PIECES), dtype=np.float32))
    return {piece: float(out[i]) for i, piece in enumerate(PIECES) if out[i] != 0}


def exclusion(*rejected: str) -> Exclusion:
    return Exclusion(TokenTable(PIECES), rejected, start=len(PROMPT), path_penalty=2.0)


def test_token_table_finds_tokens_by_prefix_and_prefixes_of_a_text() -> None:
    table = TokenTable(PIECES)
    assert sorted(PIECES[i] for i in table.starting_with(b"31")) == [b"31", b'31"']
    assert sorted(PIECES[i] for i in table.starting_with(b'"')) == [b'"', b'":', b'"R-7731"', b'"}']
    assert sorted(PIECES[i] for i in table.prefixes_of(b'31"')) == [b"3", b"31"]
    assert table.starting_with(b"zz") == []


def test_nothing_changes_while_the_key_is_written() -> None:
    assert scores_after(exclusion('"R-7731"'), b'{"', b"code") == {}


def test_at_the_value_start_the_path_is_lowered_and_completions_pushed_down() -> None:
    found = scores_after(exclusion('"R-7731"'), b'{"', b"code", b'":')
    assert found == {
        b'"': -2.0,  # starts the rejected text: allowed, but less likely
        b'"R-7731"': -COMPLETION_PENALTY,  # would write it whole
        b' "R-7731",': -COMPLETION_PENALTY,  # the same, with the space before the value
    }


def test_mid_value_the_rest_of_the_rejected_text_is_steered_off() -> None:
    found = scores_after(exclusion('"R-7731"'), b'":', b" ", b'"', b"R", b"-", b"77")
    # '31"' would close the string on the rejected text; "31" leaves a longer one open
    assert found == {b"3": -2.0, b"31": -2.0, b'31"': -COMPLETION_PENALTY}


def test_a_prefix_shared_by_several_rejected_values_is_lowered_once() -> None:
    found = scores_after(exclusion('"R-7731"', '"R-7790"'), b'":', b" ", b'"', b"R", b"-")
    assert found == {b"7": -2.0, b"77": -2.0}  # not -4: a shared prefix is likely right


def test_once_the_value_leaves_every_rejected_path_nothing_more_changes() -> None:
    processor = exclusion('"R-7731"')
    assert scores_after(processor, b'":', b' "', b"R", b"-", b"8") == {}
    assert processor.done
    assert scores_after(processor, b'":', b' "', b"R", b"-", b"77") == {}  # it stays done


def test_a_rejected_number_may_not_end_there_but_may_go_on() -> None:
    found = scores_after(exclusion("90"), b'":', b" ")
    assert found == {b"9": -2.0, b"90": -2.0}  # "90" may still become 901: only lowered
    found = scores_after(exclusion("90"), b'":', b" ", b"9")
    assert found == {b"0": -2.0}  # "0" reaches 90 (lowered); "00" goes on to 900
    found = scores_after(exclusion("90"), b'":', b" ", b"9", b"0")
    ending = {piece for piece in PIECES if piece[:1] not in b"0123456789.eE+-"}
    assert set(found) == ending  # written out: every token that would end it (",", "}")
    assert set(found.values()) == {-COMPLETION_PENALTY}
    assert b"0" not in found  # 900 stays open


def test_every_rejected_value_is_kept_off_and_split_characters_are_compared_as_bytes() -> None:
    found = scores_after(exclusion('"R-7731"', '"\u00e9"'), b'":', b" ", b'"')
    assert found[b"R"] == -2.0
    assert found[b"\xc3"] == -2.0  # the first byte of an e-acute split across two tokens
    assert found[b"\xc3\xa9"] == -2.0
    found = scores_after(exclusion('"\u00e9"'), b'":', b" ", b'"', b"\xc3")
    assert found == {b"\xa9": -2.0}  # its second byte: the closing quote would complete it
    found = scores_after(exclusion('"\u00e9"'), b'":', b" ", b'"', b"\xc3\xa9")
    closing = {piece for piece in PIECES if piece.startswith(b'"')}  # any token closing it
    assert found == dict.fromkeys(closing, -COMPLETION_PENALTY)


def test_no_rejected_values_means_no_work() -> None:
    processor = exclusion()
    assert processor.done
    assert scores_after(processor, b'":', b'"R-7731"') == {}
