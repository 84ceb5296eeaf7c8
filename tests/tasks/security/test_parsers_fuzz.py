"""Parsers of untrusted input never crash with anything but their own documented error, and bad
options are located configuration errors."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from upkeeper.errors import TaskError
from upkeeper.tasks.security._sshproto import ProbeError, parse_kexinit
from upkeeper.tasks.security.dependencies import parse_npm_audit, parse_pip_audit
from upkeeper.tasks.security.firewall import parse_iptables_s, parse_nft_json, parse_ufw_status
from upkeeper.tasks.security.nginx import parse
from upkeeper.tasks.security.ssh import parse_sshd_t
from upkeeper.tasks.security.updates import parse_apt_simulation

nginx_text = st.text(alphabet=st.sampled_from(list("abc {};#'\"\\\n\t=$/~^.*")), max_size=200)


@settings(max_examples=300, deadline=None)
@given(nginx_text)
def test_nginx_parser_raises_only_valueerror(text: str) -> None:
    try:
        parse(text, "fuzz.conf", Path("/nonexistent-dir"))
    except ValueError:
        pass


def test_nginx_parser_reports_the_line() -> None:
    with pytest.raises(ValueError, match="fuzz.conf:3: unexpected"):
        parse("events {}\nhttp {\n}}\n", "fuzz.conf", Path("/"))
    with pytest.raises(ValueError, match="missing"):
        parse("http {\n  server {\n", "fuzz.conf", Path("/"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_kexinit_parser_raises_only_probeerror(data: bytes) -> None:
    try:
        parse_kexinit(data)
    except ProbeError:
        pass


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters=",\x00"), max_size=20), max_size=5))
def test_kexinit_roundtrip(names: list[str]) -> None:
    lists = [",".join(n for n in names if n.isascii())] * 10
    payload = bytes([20]) + b"\x00" * 16 + b"".join(struct.pack(">I", len(x.encode())) + x.encode() for x in lists)
    parsed = parse_kexinit(payload + b"\x00" + b"\x00" * 4)
    assert parsed["kex"] == [n for n in lists[0].split(",") if n]


@given(st.text(max_size=400))
def test_line_parsers_never_crash(text: str) -> None:
    parse_sshd_t(text)
    parse_apt_simulation(text)
    parse_iptables_s(text)
    parse_ufw_status(text)


_nft_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.sampled_from(["input", "filter", "drop", "accept"]),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(
        ["nftables", "chain", "rule", "hook", "type", "policy", "table"]), c, max_size=4), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=100), _nft_value.map(json.dumps)))
@example("2")  # not an object: AttributeError, and the firewall check failed instead of saying 'could not read'
@example('{"nftables": {"chain": 1}}')
@example('{"nftables": [5]}')
@example('{"nftables": [{"chain": [1]}]}')
def test_nft_json_parser_raises_only_valueerror(text: str) -> None:
    try:
        state = parse_nft_json(text)
    except ValueError:
        return
    assert state.tool == "nftables" and state.input_policy in (None, "drop", "accept")


def test_nft_json_parser_reads_a_ruleset() -> None:
    ruleset = {"nftables": [{"metainfo": {"json_schema_version": 1}},
                            {"chain": {"family": "inet", "table": "filter", "name": "input", "type": "filter",
                                       "hook": "input", "prio": 0, "policy": "drop"}},
                            {"rule": {"family": "inet", "table": "filter", "chain": "input", "expr": []}}]}
    state = parse_nft_json(json.dumps(ruleset))
    assert (state.active, state.input_policy, state.detail) == (True, "drop", "1 input chain(s), 1 rule(s)")


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                    max_leaves=20))
def test_audit_reports_raise_only_taskerror(doc: object) -> None:
    for parser in (lambda t: parse_npm_audit(t, "p"), lambda t: parse_pip_audit(t, "p", "high")):
        try:
            parser(json.dumps(doc))
        except TaskError:
            pass


def test_bad_options_are_located_config_errors(cli, make_config) -> None:
    cfg = make_config({"jobs": {
        "dns": {"task": "network.dns", "options": {"records": [{"name": "x.example", "type": "AAAAA"}]}},
        "audit": {"task": "security.audit", "options": {"skip": ["sshh"]}}}})
    res = cli(["--config", cfg, "config", "check"])
    assert res.code == 2
    assert "jobs -> dns -> options -> records -> 0 -> type" in res.output
    assert "jobs -> audit -> options -> skip -> 0" in res.output
