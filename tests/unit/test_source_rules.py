"""The URL, host, address and path rules of worker/sources.py, as pure functions (no network)."""

from __future__ import annotations

import ipaddress

import pytest

from worker.config import ConfigError, WorkerConfig
from worker.errors import ErrorCode
from worker.source_rules import (
    FetchFailed,
    SourceRefused,
    UrlPolicy,
    UrlTarget,
    address_refusal,
    check_url,
    checked_addresses,
    host_allowed,
    parse_host_pattern,
    redact,
    resolve_input_path,
)
from worker.sources import url_policy

ALLOW = ("images.example.com", "*.cdn.example.org")


@pytest.mark.parametrize(
    "host, allowed",
    [
        ("images.example.com", True),
        ("IMAGES.Example.com.", True),  # case and a trailing dot do not matter
        ("evil.images.example.com", False),  # an exact entry allows no subdomain
        ("example.com", False),
        ("a.cdn.example.org", True),
        ("a.b.cdn.example.org", True),
        ("cdn.example.org", False),  # *.suffix needs a label before the suffix
        ("evilcdn.example.org", False),  # a suffix match is on a dot boundary
        ("cdn.example.org.evil.com", False),
    ],
)
def test_host_allowlist(host, allowed):
    assert host_allowed(host, ALLOW) is allowed


@pytest.mark.parametrize("entry", ["*", "https://a.com", "a.com:443", "a.com/x", "*.com.", "*.", "", "*.1.2.3.4"])
def test_bad_allowlist_entries_are_refused(entry):
    with pytest.raises(ValueError):
        parse_host_pattern(entry)


def test_allowlist_entries_normalise():
    assert parse_host_pattern(" Images.Example.COM. ") == "images.example.com"
    assert parse_host_pattern("*.Example.com") == "*.example.com"
    assert parse_host_pattern("127.0.0.1") == "127.0.0.1" and parse_host_pattern("[::1]") == "::1"


@pytest.mark.parametrize(
    "address, reason",
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata services live here
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "not public"),  # carrier-grade NAT
        ("::ffff:127.0.0.1", "loopback"),  # an IPv4-mapped IPv6 address is the IPv4 one
        ("::ffff:10.0.0.1", "private"),
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
    ],
)
def test_address_rules(address, reason):
    assert address_refusal(address) == reason


def test_explicitly_allowed_networks_pass():
    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    assert address_refusal("127.0.0.1", loopback) is None
    assert address_refusal("::ffff:127.0.0.1", loopback) is None
    assert address_refusal("10.0.0.1", loopback) == "private"
    assert address_refusal("::1", loopback) == "loopback"


POLICY = UrlPolicy(allowlist=ALLOW)


@pytest.mark.parametrize(
    "url, policy, fragment",
    [
        ("https://images.example.com/a.png", UrlPolicy(), "url sources are off"),
        ("http://images.example.com/a.png", POLICY, "'http' refused (https only)"),
        ("ftp://images.example.com/a.png", UrlPolicy(ALLOW, allow_http=True), "'ftp' refused"),
        ("file:///etc/passwd", POLICY, "'file' refused"),
        ("https://user:pw@images.example.com/a.png", POLICY, "credentials"),
        ("https://other.example.com/a.png", POLICY, "'other.example.com' is not in the worker's URL allowlist"),
        ("https://images.example.com:99999/", POLICY, "not a valid URL"),
        ("https:///a.png", POLICY, "no host"),
    ],
)
def test_url_rules_refuse(url, policy, fragment):
    with pytest.raises(SourceRefused) as refused:
        check_url(url, policy, "images[2]")
    assert refused.value.code is ErrorCode.IMAGE_SOURCE_NOT_ALLOWED and refused.value.field == "images[2]"
    assert str(refused.value).startswith("IMAGE_SOURCE_NOT_ALLOWED: images[2]: ") and fragment in str(refused.value)


def test_url_rules_accept():
    assert check_url("https://a.cdn.example.org/x/y.png?sig=1", POLICY, "images") == UrlTarget(
        "https", "a.cdn.example.org", 443, "/x/y.png?sig=1"
    )
    assert check_url("http://images.example.com:8080", UrlPolicy(ALLOW, allow_http=True), "images").port == 8080


def test_redact_hides_credentials_and_query():
    assert redact("https://u:p@h.com:8443/a/b.png?X-Amz-Signature=secret#f") == "https://h.com:8443/a/b.png"


def _resolver(answers):
    def resolve(host, port):
        if isinstance(answers, Exception):
            raise answers
        return answers

    return resolve


def test_every_resolved_address_is_checked():
    target = UrlTarget("https", "images.example.com", 443, "/")
    assert checked_addresses(target, POLICY, "images", _resolver(["8.8.8.8", "1.1.1.1"])) == ["8.8.8.8", "1.1.1.1"]
    with pytest.raises(SourceRefused, match=r"resolves to a private address \(10.0.0.5\)"):
        checked_addresses(target, POLICY, "images", _resolver(["8.8.8.8", "10.0.0.5"]))
    with pytest.raises(FetchFailed, match="cannot resolve"):
        checked_addresses(target, POLICY, "images", _resolver(OSError("Name or service not known")))
    literal = UrlTarget("https", "169.254.169.254", 443, "/")
    with pytest.raises(SourceRefused, match="link-local"):
        checked_addresses(literal, UrlPolicy(("169.254.169.254",)), "images", _resolver(AssertionError("no lookup")))


# -- paths --------------------------------------------------------------------------------
@pytest.fixture
def volume(tmp_path):
    root = tmp_path / "volume"
    (root / "data" / "cats").mkdir(parents=True)
    (root / "data" / "cats" / "a.png").write_bytes(b"png")
    (tmp_path / "secret.png").write_bytes(b"secret")
    (root / "data" / "escape.png").symlink_to(tmp_path / "secret.png")
    (root / "data" / "dir-escape").symlink_to(tmp_path)
    (root / "data" / "alias.png").symlink_to(root / "data" / "cats" / "a.png")  # inside: fine
    return root


def test_paths_inside_the_root_resolve(volume):
    real = volume / "data" / "cats" / "a.png"
    assert resolve_input_path("data/cats/a.png", str(volume), "images") == real
    assert resolve_input_path(str(real), str(volume), "images") == real
    assert resolve_input_path("./data/alias.png", str(volume), "images") == real


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ("../secret.png", "'..' is not allowed"),
        ("data/../../secret.png", "'..' is not allowed"),
        ("/etc/passwd", "outside the input root"),
        ("data/escape.png", "leads outside the input root (a symlink)"),
        ("data/dir-escape/secret.png", "leads outside the input root (a symlink)"),
        ("data\x00.png", "not a valid path"),
    ],
)
def test_paths_that_leave_the_root_are_refused(volume, raw, fragment):
    with pytest.raises(SourceRefused) as refused:
        resolve_input_path(raw, str(volume), "images[0]")
    assert fragment in str(refused.value) and refused.value.code is ErrorCode.IMAGE_SOURCE_NOT_ALLOWED


def test_absolute_sibling_with_the_root_as_prefix_is_outside(volume, tmp_path):
    (tmp_path / "volume2").mkdir()
    (tmp_path / "volume2" / "x.png").write_bytes(b"x")
    with pytest.raises(SourceRefused, match="outside"):
        resolve_input_path(str(tmp_path / "volume2" / "x.png"), str(volume), "images")


def test_path_sources_are_off_without_a_root_and_missing_files_fail(volume):
    with pytest.raises(SourceRefused, match="path sources are off"):
        resolve_input_path("data/cats/a.png", "", "images")
    with pytest.raises(FetchFailed, match="no such file") as failed:
        resolve_input_path("data/cats/missing.png", str(volume), "images[1]")
    assert failed.value.code is ErrorCode.IMAGE_FETCH_FAILED and failed.value.field == "images[1]"
    with pytest.raises(FetchFailed, match="not a regular file"):
        resolve_input_path("data/cats", str(volume), "images")


# -- configuration ---------------------------------------------------------------------------
def test_config_reads_the_source_variables():
    config = WorkerConfig.from_env(
        {
            "FASTBACKEND_URL_ALLOWLIST": "images.example.com, *.cdn.example.org",
            "FASTBACKEND_URL_ALLOW_NETWORKS": "127.0.0.0/8",
            "FASTBACKEND_URL_ALLOW_HTTP": "true",
            "FASTBACKEND_INPUT_ROOT": "/runpod-volume",
        }
    )
    policy = url_policy(config)
    assert policy.allowlist == ALLOW and policy.allow_http and config.input_root == "/runpod-volume"
    assert policy.allowed_networks == (ipaddress.ip_network("127.0.0.0/8"),)
    assert WorkerConfig().url_allowlist == () and WorkerConfig().input_root == ""


@pytest.mark.parametrize(
    "var, value", [("FASTBACKEND_URL_ALLOWLIST", "*"), ("FASTBACKEND_URL_ALLOW_NETWORKS", "localhost")]
)
def test_config_refuses_bad_source_rules(var, value):
    with pytest.raises(ConfigError, match=repr(value)):
        WorkerConfig.from_env({var: value})
