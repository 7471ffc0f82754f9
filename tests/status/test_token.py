"""`--status-token-ref`: env:NAME or file:PATH, clear errors that never quote the value read."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.status.token import read_token, token_accepted, unsendable


def test_a_token_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert read_token("env:STATUS_TOKEN", {"STATUS_TOKEN": "t0ken"}) == "t0ken"
    # a Secret made --from-file of an `echo`ed file reaches the environment with its newline, as it reaches a file
    assert read_token("env:STATUS_TOKEN", {"STATUS_TOKEN": "t0ken\n"}) == "t0ken"
    (tmp_path / "token").write_text("from-a-secret\n")  # as a mounted Kubernetes Secret or `echo` writes it
    assert read_token(f"file:{tmp_path / 'token'}", {}) == "from-a-secret"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("STATUS_TOKEN", "--status-token-ref must be env:NAME or file:PATH, got 'STATUS_TOKEN'"),
        ("env:1BAD", "--status-token-ref must be env:NAME or file:PATH"),
        ("env:MISSING", "--status-token-ref env:MISSING: environment variable MISSING is not set"),
        ("env:EMPTY", "--status-token-ref env:EMPTY: the token is empty"),
        ("file:/nonexistent/token", "cannot read /nonexistent/token: No such file or directory"),
        ("file:/dev/zero", "cannot read /dev/zero: not a regular file (a character device)"),
    ],
)
def test_a_bad_reference_is_a_clear_error(ref: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        read_token(ref, {"EMPTY": "  "})
    assert message in str(caught.value)


def test_a_token_file_that_is_not_utf8_is_named_not_quoted(tmp_path: Path) -> None:
    (tmp_path / "token").write_bytes(b"\xffs3cret\n")  # a binary key file named by mistake
    with pytest.raises(ValueError) as caught:
        read_token(f"file:{tmp_path / 'token'}", {})
    assert str(caught.value) == (
        f"--status-token-ref file:{tmp_path / 'token'}: {tmp_path / 'token'} is not valid UTF-8 text (byte 0xFF: "
        "Latin-1, GBK or another encoding?): save it as UTF-8"
    )


def test_a_token_file_saved_with_a_byte_order_mark_is_read_without_it(tmp_path: Path) -> None:
    """Walk 16B-3: Notepad's mark was the token's first character, which no browser's header carried."""
    (tmp_path / "token").write_bytes(b"\xef\xbb\xbfs3cret-token\r\n")
    assert read_token(f"file:{tmp_path / 'token'}", {}) == "s3cret-token"


def test_a_large_file_is_refused_without_being_read_whole(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 100_000)
    with pytest.raises(ValueError, match="larger than"):
        read_token(f"file:{tmp_path / 'big'}", {})


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("ab\x01cd", "a control character (U+0001) at character 3 of 5"),
        ("a\tb", "a control character (U+0009) at character 2 of 3"),
        ("\n ab\x7f ", "a control character (U+007F) at character 5 of 6"),  # surrounding whitespace is dropped
    ],
)
def test_a_token_with_a_control_character_is_refused_naming_where_never_what(
    tmp_path: Path, value: str, said: str
) -> None:
    """A header cannot carry it: the token was accepted, and no browser or client could send it."""
    (tmp_path / "token").write_text(value)
    for ref, env in ((f"file:{tmp_path / 'token'}", {}), ("env:STATUS_TOKEN", {"STATUS_TOKEN": value})):
        with pytest.raises(ValueError) as caught:
            read_token(ref, env)
        assert (
            str(caught.value)
            == f"--status-token-ref {ref}: the token holds {said}, which an HTTP header cannot carry: set it without it"
        )


def test_a_token_outside_ascii_is_named_as_such_only_for_a_bearer_header() -> None:
    assert read_token("env:T", {"T": "pässwort"}) == "pässwort"  # HTTP Basic (the browser) sends it as UTF-8
    assert unsendable("pässwort") is None
    assert unsendable("pässwort", ascii_only=True) == (
        "a character outside ASCII at character 2 of 8, which an HTTP header cannot carry"
    )
    assert unsendable(" token\n", ascii_only=True) is None


@pytest.mark.parametrize("value", ["t0ken ", "t0ken\t", " t0ken", "t0ken\n\n"])
def test_a_token_with_surrounding_whitespace_is_the_token_without_it(value: str) -> None:
    """A header's value loses its surrounding whitespace on the way (HTTP's optional whitespace) and
    `token_accepted` strips what it is given: a token kept with it (a tab `unsendable` passed as surrounding
    whitespace, a second newline) matched no request, and the status page answered 401 to everyone."""
    token = read_token("env:STATUS_TOKEN", {"STATUS_TOKEN": value})
    assert token == "t0ken" and token_accepted(token, "Bearer t0ken")
