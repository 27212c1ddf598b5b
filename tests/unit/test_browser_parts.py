"""Pure parts of the browser agent: image comparison, egress configuration, judging results."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from wallestars_browser import imagediff, payloads
from wallestars_browser.bidi_shim import answer_locally
from wallestars_browser.browser import (
    CHROMIUM_ARGS,
    BrowserUnavailable,
    Launch,
    choose,
    context_options,
    launch_options,
)
from wallestars_browser.egress import (
    ALWAYS_DENIED,
    NetworkPolicy,
    acl_yaml,
    denials,
    smokescreen_args,
)
from wallestars_browser.payloads import Viewport
from wallestars_browser.runner import INLINE_LIMIT, agent_viewport, inline, viewport_for
from wallestars_browser.tasks.accessibility import over_allowed, summarize
from wallestars_browser.tasks.common import Evidence
from wallestars_browser.tasks.e2e import glob
from wallestars_browser.tasks.performance import judge, unavailable


def png(
    color: str, box: tuple[int, int, int, int] | None = None, size: tuple[int, int] = (100, 50)
) -> bytes:
    im = Image.new("RGB", size, "white")
    if box:
        ImageDraw.Draw(im).rectangle(box, fill=color)
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()


def test_identical_images_do_not_differ() -> None:
    a = png("blue", (10, 10, 29, 19))
    assert imagediff.diff(a, a) == (0.0, None)


def test_ratio_is_the_share_of_changed_pixels_and_the_diff_image_marks_them() -> None:
    a, b = png("blue", (10, 10, 29, 19)), png("red", (10, 10, 29, 19))
    ratio, marked = imagediff.diff(a, b)
    assert ratio == 20 * 10 / (100 * 50)
    assert marked is not None and Image.open(io.BytesIO(marked)).getpixel((15, 15)) == (255, 0, 0)


def test_tolerance_ignores_small_channel_differences() -> None:
    a, b = png("#808080", (0, 0, 99, 49)), png("#838383", (0, 0, 99, 49))
    assert imagediff.diff(a, b, tolerance=2)[0] == 1.0
    assert imagediff.diff(a, b, tolerance=3)[0] == 0.0


def test_different_sizes_differ_everywhere() -> None:
    assert imagediff.diff(png("blue"), png("blue", size=(100, 51)))[0] == 1.0


def test_perceptual_hash_is_stable_and_sees_a_change() -> None:
    a, b = png("black", (0, 0, 49, 49)), png("black", (50, 0, 99, 49))
    assert imagediff.perceptual_hash(a) == imagediff.perceptual_hash(a)
    assert imagediff.perceptual_hash(a) != imagediff.perceptual_hash(b)


def test_smokescreen_gets_exactly_the_agents_exceptions() -> None:
    pol = NetworkPolicy.model_validate({"allowPrivateAddresses": ["127.0.0.1:8080"],
                                        "allowPrivateCIDRs": ["10.9.0.0/16"], "denyCIDRs": ["34.0.0.0/8"]})  # fmt: skip
    args = smokescreen_args(pol, 4750, Path("/w/acl.yaml"), ["100.96.0.0/11"], ["127.0.0.1:53"])
    always = [a for c in ALWAYS_DENIED for a in ("--deny-range", c)]
    assert args == ["--listen-ip", "127.0.0.1", "--listen-port", "4750",
                    "--resolver-address", "127.0.0.1:53", "--allow-range", "10.9.0.0/16",
                    "--allow-address", "127.0.0.1:8080", *always, "--deny-range", "34.0.0.0/8",
                    "--deny-range", "100.96.0.0/11", "--config-file", "/w/smokescreen.yaml",
                    "--egress-acl-file", "/w/acl.yaml"]  # fmt: skip


def test_cloud_metadata_addresses_are_always_denied() -> None:
    """Link-local (AWS/GCP/Azure IMDS), Azure's WireServer and AWS's IPv6 IMDS (#13)."""
    assert {"169.254.0.0/16", "168.63.129.16/32", "fd00:ec2::254/128", "fe80::/10"} <= set(
        ALWAYS_DENIED
    )
    args = smokescreen_args(NetworkPolicy(), 4750, None)
    for cidr in ("168.63.129.16/32", "fd00:ec2::254/128", "169.254.0.0/16"):
        assert args[args.index(cidr) - 1] == "--deny-range"


def test_an_agent_cannot_allow_its_way_into_metadata_addresses() -> None:
    """smokescreen lets an allow range beat a deny range, so such allowances are dropped."""
    pol = NetworkPolicy.model_validate({
        "allowPrivateCIDRs": ["169.254.0.0/16", "168.63.0.0/16", "10.0.0.0/8", "fd00::/8", "0.0.0.0/0",
                              "::ffff:0:0/96", "::/0"],
        "allowPrivateAddresses": ["169.254.169.254:80", "168.63.129.16", "[fd00:ec2::254]:80",
                                  "127.0.0.1:8080", "::ffff:169.254.169.254", "[fd20:ce::254]:80"]})  # fmt: skip
    args = smokescreen_args(pol, 4750, None)
    allowed = [args[i + 1] for i, a in enumerate(args) if a in ("--allow-range", "--allow-address")]
    assert allowed == ["10.0.0.0/8", "127.0.0.1:8080"]


def test_host_allowlist_becomes_an_enforcing_default_acl() -> None:
    assert acl_yaml(NetworkPolicy()) is None  # any public host
    acl = json.loads(acl_yaml(NetworkPolicy(allowed_hosts=["example.com", "*.example.org"])) or "")
    assert acl["default"] == {"project": "wallestars", "action": "enforce",
                              "allowed_domains": ["example.com", "*.example.org"]}  # fmt: skip


def test_denials_are_read_from_smokescreens_decision_log() -> None:
    log = [
        '{"level":"info","msg":"starting"}',
        '{"allow":false,"decision_reason":"Deny: Not Global Unicast","requested_host":"127.0.0.2:80"}',
        '{"allow":true,"requested_host":"example.com:443"}',
        "not json",
    ]
    [d] = denials(log)
    assert (d.host, d.reason) == ("127.0.0.2:80", "Deny: Not Global Unicast")


def test_chromium_resolves_nothing_itself_and_uses_the_proxy() -> None:
    opts = launch_options(Launch("chromium", "/usr/bin/chromium"), "http://127.0.0.1:4750")
    assert opts["proxy"] == {"server": "http://127.0.0.1:4750"}
    assert "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1" in opts["args"]
    assert opts["args"] == list(CHROMIUM_ARGS) and opts["executable_path"] == "/usr/bin/chromium"
    assert "executable_path" not in launch_options(Launch("chromium", None), "http://p")


def test_firefox_sends_loopback_through_the_proxy_and_opens_no_side_channels() -> None:
    stock = launch_options(Launch("firefox", "/usr/bin/firefox-esr", bidi=True), "http://p:1",
                           relay="/tmp/w/firefox-bidi")  # fmt: skip
    prefs = stock["firefox_user_prefs"]
    # Every scheme through the proxy by prefs: Playwright's proxy option over BiDi sets only
    # the http proxy, and https went straight to a loopback canary in the egress suite.
    assert "proxy" not in stock
    assert (prefs["network.proxy.type"], prefs["network.proxy.http"], prefs["network.proxy.ssl"],
            prefs["network.proxy.http_port"], prefs["network.proxy.ssl_port"]) == (
                1, "p", "p", 1, 1)  # fmt: skip
    assert stock["channel"] == "moz-firefox" and stock["executable_path"] == "/tmp/w/firefox-bidi"
    assert prefs["network.proxy.allow_hijacking_localhost"] is True
    assert prefs["network.trr.mode"] == 5 and prefs["media.peerconnection.enabled"] is False
    assert prefs["network.http.http3.enable"] is False
    # Playwright's own Firefox (its image): the same prefs, no channel, its own binary.
    own = launch_options(Launch("firefox", None), "http://p:1")
    assert own["firefox_user_prefs"] == prefs and "channel" not in own
    assert "executable_path" not in own
    with pytest.raises(ValueError, match="relay"):
        launch_options(Launch("firefox", "/usr/bin/firefox-esr", bidi=True), "http://p:1")


@pytest.mark.parametrize(
    ("engine", "chromium", "firefox", "bundled", "expected"),
    [
        ("chromium", "/usr/bin/chromium", None, set(), Launch("chromium", "/usr/bin/chromium")),
        ("chromium", None, None, {"chromium"}, Launch("chromium", None)),
        ("firefox", None, "/usr/bin/firefox-esr", set(),
         Launch("firefox", "/usr/bin/firefox-esr", bidi=True)),
        ("firefox", None, None, {"firefox"}, Launch("firefox", None)),
        ("webkit", "/usr/bin/chromium", "/usr/bin/firefox-esr", {"webkit"}, Launch("webkit", None)),
    ],
)  # fmt: skip
def test_the_engine_asked_for_is_the_engine_launched(
    engine: str, chromium: str | None, firefox: str | None, bundled: set[str], expected: Launch
) -> None:
    assert choose(engine, chromium, firefox, bundled.__contains__) == expected


@pytest.mark.parametrize(
    ("engine", "words"),
    [("webkit", "no webkit"), ("firefox", "no firefox"), ("chromium", "no chromium"),
     ("opera", "unknown browser 'opera'")],
)  # fmt: skip
def test_an_engine_the_image_lacks_is_unavailable_not_silently_chromium(
    engine: str, words: str
) -> None:
    with pytest.raises(BrowserUnavailable, match=words):
        choose(engine, "/usr/bin/chromium" if engine != "chromium" else None, None,
               lambda _: False)  # fmt: skip


def test_the_bidi_relay_answers_only_an_empty_media_override() -> None:
    empty = {"id": 7, "method": "emulation.setMediaFeaturesOverride",
             "params": {"features": {}, "userContexts": ["u"]}}  # fmt: skip
    assert answer_locally(empty) == {"type": "success", "id": 7, "result": {}}
    nulls = {"id": 8, "method": "emulation.setMediaFeaturesOverride",
             "params": {"features": {"prefers-color-scheme": None}}}  # fmt: skip
    assert answer_locally(nulls) == {"type": "success", "id": 8, "result": {}}
    dark = {"id": 9, "method": "emulation.setMediaFeaturesOverride",
            "params": {"features": {"prefers-color-scheme": "dark"}}}  # fmt: skip
    assert answer_locally(dark) is None  # a real override goes to Firefox
    assert answer_locally({"id": 1, "method": "browsingContext.navigate", "params": {}}) is None


def test_the_agents_viewport_is_the_default_and_the_tasks_own_wins() -> None:
    agent = agent_viewport('{"width":1000,"height":700,"deviceScaleFactor":2}')
    assert agent == Viewport(width=1000, height=700, device_scale_factor=2)
    assert agent_viewport("") is None
    shot = payloads.parse("screenshot", {"url": "http://h/"})
    assert context_options(viewport_for(shot, agent))["viewport"] == {"width": 1000, "height": 700}
    own = payloads.parse(
        "screenshot", {"url": "http://h/", "viewport": {"width": 400, "height": 300}}
    )
    opts = context_options(viewport_for(own, agent))
    assert opts["viewport"] == {"width": 400, "height": 300} and opts["device_scale_factor"] == 1
    assert context_options(viewport_for(shot, None))["viewport"] == {"width": 1280, "height": 800}


def test_url_globs() -> None:
    rx = glob("**/form/done?*")
    assert not isinstance(rx, str)
    assert rx.match("http://h:1/form/done?name=a") and not rx.match("http://h:1/form")
    assert glob("http://exact/") == "http://exact/"
    one = glob("http://h/*/x")
    assert (
        not isinstance(one, str) and one.match("http://h/a/x") and not one.match("http://h/a/b/x")
    )


def test_budgets_pass_at_the_limit_and_fail_above() -> None:
    got = judge({"lcp": 2500.0, "tbt": 301.0}, {"lcp": 2500, "tbt": 300})
    assert got == {"lcp": {"value": 2500.0, "budget": 2500, "passed": True},
                   "tbt": {"value": 301.0, "budget": 300, "passed": False}}  # fmt: skip


def test_a_metric_the_engine_cannot_measure_is_named_and_neither_passes_nor_fails() -> None:
    firefox = ["paint", "largest-contentful-paint", "navigation", "resource"]
    missing = unavailable(firefox, "firefox")
    assert missing == {"cls": "firefox has no 'layout-shift' performance entries",
                       "tbt": "firefox has no 'longtask' performance entries"}  # fmt: skip
    got = judge({"lcp": 100.0}, {"lcp": 2500, "tbt": 300}, missing)
    assert got["lcp"]["passed"] is True
    assert got["tbt"] == {"value": None, "budget": 300, "passed": None,
                          "unavailable": missing["tbt"]}  # fmt: skip
    assert unavailable([*firefox, "layout-shift", "longtask"], "chromium") == {}


def test_violations_counted_per_impact_and_judged() -> None:
    v = [{"id": "image-alt", "impact": "critical", "nodes": [{"target": ["img"]}, {"target": ["img.b"]}]},
         {"id": "region", "impact": "moderate", "nodes": [{"target": ["p"]}]}]  # fmt: skip
    counts, listed = summarize(v)
    assert counts == {"critical": 2, "serious": 0, "moderate": 1, "minor": 0, "total": 3}
    assert listed[0]["targets"] == [["img"], ["img.b"]]
    assert over_allowed(counts, {}) == ["critical", "moderate"]  # none allowed unless said
    assert over_allowed(counts, {"critical": 2, "moderate": 5}) == []
    assert over_allowed(counts, {"critical": 5, "moderate": 5, "total": 2}) == ["total"]


def test_large_results_go_to_an_artifact() -> None:
    ev = Evidence()
    small = {"a": 1}
    assert inline(small, ev) == small and ev.files == []
    big = {"rows": ["x" * 100] * (INLINE_LIMIT // 100 + 10)}
    summary = inline(big, ev)
    assert summary["truncated"] is True and summary["artifact"] == "result.json"
    [(name, raw, ctype)] = ev.files
    assert (name, ctype) == ("result.json", "application/json") and json.loads(raw) == big


def test_network_policy_reads_every_field_of_the_agents_crd() -> None:
    import yaml
    from harness import REPO

    crd = yaml.safe_load((REPO / "crds" / "agents.wallestars.io_agents.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    network = spec["properties"]["browser"]["properties"]["network"]["properties"]
    assert set(network) == {f.alias or n for n, f in NetworkPolicy.model_fields.items()}


def test_the_attempts_log_keeps_its_last_lines_within_the_limit() -> None:
    import logging

    from wallestars_browser.runner import LogTail

    tail = LogTail(limit=1000)
    lg = logging.getLogger("test.logtail")
    lg.addHandler(tail)
    lg.setLevel(logging.INFO)
    try:
        for i in range(200):
            lg.info("line %03d", i)
    finally:
        lg.removeHandler(tail)
    text = tail.text().decode()
    assert len(tail.text()) <= 1000 and text.endswith("line 199\n")
    assert "line 000" not in text and text.count("\n") == len(tail.lines)
