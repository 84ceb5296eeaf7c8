"""Unparsed access-log lines are kept as samples: the fields the log_format says are credentials
($http_authorization, $http_cookie, $cookie_NAME, $http_x_api_key …) are masked in them first."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upkeeper.logs.access import Accumulator, ScanOptions
from upkeeper.logs.masking import mask_line, quote_mask, sensitive_variable

FMT = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
       '"$http_user_agent" "$http_authorization" "$http_cookie"')


@pytest.mark.parametrize(("name", "sensitive"), [
    ("http_authorization", True), ("http_proxy_authorization", True), ("http_cookie", True),
    ("cookie_sessionid", True), ("cookie_lang", True), ("http_x_api_key", True), ("http_x_auth_token", True),
    ("sent_http_set_cookie", True), ("upstream_http_set_cookie", True), ("arg_access_token", True),
    ("remote_addr", False), ("http_user_agent", False), ("http_referer", False), ("http_x_forwarded_for", False),
    ("arg_page", False), ("request", False), ("remote_user", False),
])
def test_sensitive_variables(name: str, sensitive: bool) -> None:
    assert sensitive_variable(name) is sensitive


def test_quoted_fields_are_masked_whatever_their_value() -> None:
    mask = quote_mask(FMT)
    line = (b'1.2.3.4 - - [01/Mar/2024:10:00:00 +0000] "GET / HTTP/1.1" 2OO 5 "-" "ua" "opaque-key-1" '
            b'"theme=dark; x=opaque2"')
    assert mask_line(line, mask) == (b'1.2.3.4 - - [01/Mar/2024:10:00:00 +0000] "GET / HTTP/1.1" 2OO 5 "-" "ua" '
                                     b'"***" "***"')
    # "-" (nginx's empty value) and empty fields stay; so does a line with other quotes than the format's
    empty = b'1.2.3.4 - - [01/Mar/2024:10:00:00 +0000] "GET / HTTP/1.1" 2OO 5 "-" "ua" "-" ""'
    assert mask_line(empty, mask) == empty
    cut = b'1.2.3.4 - - [01/Mar/2024:10:00:00 +0000] "GET / HTTP/1.1" 2OO 5 "-" "ua" "opaque-key-1'
    assert mask_line(cut, mask) == cut
    assert quote_mask("combined") is None and mask_line(line, None) == line


def test_an_unquoted_credential_masks_its_stretch_of_the_line() -> None:
    """Outside quotes a value may hold spaces (Basic …): the whole unquoted stretch is masked."""
    mask = quote_mask('$remote_addr [$time_local] "$request" $status $cookie_session "$http_user_agent"')
    line = b'1.2.3.4 [01/Mar/2024:10:00:00 +0000] "GET / HTTP/1.1" 2OO abc def "ua"'
    assert mask_line(line, mask) == b'1.2.3.4 [01/Mar/2024:10:00:00 +0000] "GET / HTTP/1.1" *** "ua"'


# what nginx writes for a header value: '"', '\\' and bytes outside printable ASCII escaped as \xHH
_header = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e, blacklist_characters='"\\'),
                  min_size=1, max_size=40).filter(lambda v: v.strip() not in ("", "-"))


@settings(max_examples=300, deadline=None)
@given(auth=_header, cookie=_header, status=st.sampled_from(["2OO", "-", "", "9999", "x"]))
def test_unparsed_line_samples_hold_no_credential(auth: str, cookie: str, status: str) -> None:
    """Through the accumulator (its line-by-line and fast paths): whatever the credentials, a line that
    does not parse is kept without them."""
    head = f'1.2.3.4 - - [01/Mar/2024:10:00:00 +0000] "GET / HTTP/1.1" {status} 5 "-" "ua" '
    for fast in (True, False):
        acc = Accumulator(ScanOptions(log_format=FMT, fast=fast))
        acc.feed(f'{head}"{auth}" "{cookie}"\n'.encode(), "access.log", 0)
        (sample,) = acc.partial().invalid_samples
        assert sample["line"] == head + '"***" "***"'
