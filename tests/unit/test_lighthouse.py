"""Lighthouse for performance tasks: its command line, what a report becomes, budgets."""

from __future__ import annotations

from pathlib import Path

import pytest
from wallestars_browser import payloads
from wallestars_browser.browser import Launch, launch_options
from wallestars_browser.tasks.lighthouse import command, judge_categories, summarize

REPORT = {
    "lighthouseVersion": "13.5.0",
    "configSettings": {"formFactor": "mobile"},
    "categories": {"performance": {"score": 0.91}, "accessibility": {"score": 1},
                   "best-practices": {"score": None}, "seo": {"score": 0.8}},
    "audits": {"first-contentful-paint": {"numericValue": 812.345},
               "largest-contentful-paint": {"numericValue": 1203.99},
               "cumulative-layout-shift": {"numericValue": 0.123456},
               "total-blocking-time": {"numericValue": 0},
               "speed-index": {"numericValue": 900.04}},
    "runWarnings": ["slow"],
}  # fmt: skip


def test_a_report_becomes_scores_and_metrics() -> None:
    s = summarize(REPORT)
    assert s["version"] == "13.5.0" and s["formFactor"] == "mobile"
    assert s["categories"] == {"performance": 0.91, "accessibility": 1,
                               "best-practices": None, "seo": 0.8}  # fmt: skip
    assert s["metrics"]["fcp"] == 812.3 and s["metrics"]["lcp"] == 1204.0
    assert s["metrics"]["cls"] == 0.1235 and s["metrics"]["tbt"] == 0.0
    assert s["metrics"]["ttfb"] is None and s["metrics"]["tti"] is None  # not in this report
    assert s["metrics"]["speedIndex"] == 900.0
    assert s["runtimeError"] is None and s["runWarnings"] == ["slow"]


def test_category_budgets_are_minimums_and_an_unscored_category_fails() -> None:
    v = judge_categories({"performance": 0.91, "best-practices": None, "seo": 0.8},
                         {"performance": 0.9, "best-practices": 0.5, "seo": 0.85})  # fmt: skip
    assert v["performance"] == {"score": 0.91, "minimum": 0.9, "passed": True}
    assert v["best-practices"]["passed"] is False and v["seo"]["passed"] is False


def test_the_command_drives_the_running_chromium_and_writes_json() -> None:
    argv = command("/n/node", "/lh/cli/index.js", "https://x/", 9333, "desktop",
                   Path("/tmp/r.json"), 100_000)  # fmt: skip
    assert argv[:3] == ["/n/node", "/lh/cli/index.js", "https://x/"]
    assert "--port=9333" in argv and "--hostname=127.0.0.1" in argv
    assert "--output=json" in argv and "--output-path=/tmp/r.json" in argv
    assert "--preset=desktop" in argv and "--no-enable-error-reporting" in argv
    assert "--max-wait-for-load=60000" in argv
    assert "--preset=desktop" not in command("n", "c", "u", 1, "mobile", Path("r"), 1000)


def test_chromium_gets_a_loopback_devtools_port_only_for_lighthouse() -> None:
    plain = launch_options(Launch("chromium", "/usr/bin/chromium"), "http://127.0.0.1:1")
    assert not any(a.startswith("--remote-debugging") for a in plain["args"])
    lh = launch_options(Launch("chromium", "/usr/bin/chromium"), "http://127.0.0.1:1", None, 9333)
    assert "--remote-debugging-port=9333" in lh["args"]
    assert "--remote-debugging-address=127.0.0.1" in lh["args"]
    assert lh["proxy"] == {"server": "http://127.0.0.1:1"}  # the same proxy as every task


@pytest.mark.parametrize(
    ("payload", "message"),
    [({"categories": {"seo": 0.9}}, "set engine: lighthouse"),
     ({"engine": "lighthouse", "categories": {"speed": 0.9}}, "unknown categories ['speed']"),
     ({"engine": "lighthouse", "categories": {"seo": 1.5}}, "less than or equal to 1"),
     ({"engine": "lighthouse", "cookies": [{"name": "a", "value": "b"}]}, "cookies is not applied"),
     ({"engine": "lighthouse", "viewport": {"width": 800, "height": 600}}, "viewport is not applied"),
     ({"engine": "lighthouse", "formFactor": "tablet"}, "formFactor")],
)  # fmt: skip
def test_lighthouse_payloads_say_what_is_wrong(payload: dict[str, object], message: str) -> None:
    with pytest.raises(payloads.PayloadError) as e:
        payloads.parse("performance", {"url": "https://x/", **payload})
    assert message in str(e.value)


def test_a_lighthouse_payload_parses_with_its_defaults() -> None:
    p = payloads.parse("performance", {"url": "https://x/", "engine": "lighthouse"})
    assert isinstance(p, payloads.Performance)
    assert p.engine == "lighthouse" and p.form_factor == "desktop" and p.categories == {}
