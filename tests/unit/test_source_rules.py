"""The URL, host, address and path rules of worker/sources.py, as pure functions (no network)."""

from __future__ import annotations

import http.client
import ipaddress

import pytest

from worker.config import ConfigError, WorkerConfig
from worker.errors import ErrorCode, WorkerError
from worker.limits import SourceBytes
from worker.source_rules import (
    FetchFailed,
    InvalidSource,
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
    url_syntax_problem,
)
from worker.sources import describe, holding_sources, url_policy

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


# -- what a URL or path may hold, and what messages may show (issue 24, items 2 and 8) -----------
@pytest.mark.parametrize(
    "url, problem",
    [
        ("https://images.example.com/a b.png", "a space in its path (character 29)"),
        ("https://images.example.com/a.png?sig=x y", "a space in its query string"),
        ("https://images.example.com/a.png#x\ty", "a tab in its fragment"),
        ("https://images.example.com/a\r\n.png", "a carriage return in its path"),
        ("https://images.example.com/a\x01.png", "control character 0x01 in its path"),
        ("https://imagés.example.com/a.png", "a non-ASCII character in its host"),
        ("https://images.example.com/dé.png?sig=é", "a non-ASCII character in its path (character 29)"),
    ],
)
def test_unsendable_urls_are_the_clients_mistake(url, problem):
    assert problem in url_syntax_problem(url)
    with pytest.raises(InvalidSource) as invalid:
        check_url(url, POLICY, "images[2]")
    assert invalid.value.code is ErrorCode.INVALID_INPUT and invalid.value.field == "images[2]"
    assert "sig=" not in invalid.value.message and "y" not in invalid.value.message.split(";")[0][-20:]


def test_sendable_urls_have_no_problem():
    assert url_syntax_problem("https://images.example.com/d%C3%A9.png?X-Amz-Signature=a%20b&x=1#top") is None


def test_messages_never_show_a_query_or_a_raw_control_character():
    assert redact("https://h.com/a\r\nb c.png?sig=SECRET") == "https://h.com/a\\r\\nb%20c.png"
    assert redact("https://h.com/[x?sig=SECRET") == "https://h.com/[x"
    error = http.client.InvalidURL("URL can't contain control characters. '/a b?X-Amz-Signature=SECRET' (found ' ')")
    assert "SECRET" not in describe(error) and describe(error).startswith("InvalidURL: URL can't")


def test_a_path_that_is_not_valid_text_is_invalid_input(volume):
    with pytest.raises(InvalidSource) as invalid:
        resolve_input_path("data/\ud800.png", str(volume), "images[0]")
    assert invalid.value.code is ErrorCode.INVALID_INPUT


# -- a job's source bytes (item 7) -------------------------------------------------------------------
def test_a_jobs_source_bytes_count_against_its_budget_and_the_workers():
    worker_bytes = SourceBytes(100)
    config = WorkerConfig(max_image_bytes=50, max_job_source_bytes=60, max_worker_source_bytes=100)
    with holding_sources(config, worker_bytes) as first:
        first.reserve(3, 50)  # the most 3 items can bring, capped by the job's budget
        assert worker_bytes.in_use == 60
        first.take(50)
        with pytest.raises(WorkerError) as job_over:
            first.take(11)
        assert job_over.value.code is ErrorCode.IMAGE_TOO_LARGE and "FASTBACKEND_MAX_JOB_SOURCE_BYTES" in str(
            job_over.value
        )
        with holding_sources(config, worker_bytes) as second:
            second.reserve(1, 40)
            with pytest.raises(WorkerError) as worker_over:  # 60 + 40 + 1 > 100, and no wait configured
                worker_bytes.reserve(1)
            assert worker_over.value.code is ErrorCode.RATE_LIMITED
        assert worker_bytes.in_use == 60 and second.cancel.is_set()
    assert worker_bytes.in_use == 0


@pytest.mark.parametrize(
    "values",
    [
        {"max_image_bytes": 10, "max_job_source_bytes": 9, "max_worker_source_bytes": 20},
        {"max_image_bytes": 10, "max_job_source_bytes": 20, "max_worker_source_bytes": 19},
        {"url_job_timeout_ms": 0},
    ],
)
def test_config_refuses_source_budgets_that_would_refuse_a_valid_job(values):
    with pytest.raises(ConfigError):
        WorkerConfig(**values)
