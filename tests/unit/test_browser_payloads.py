"""The browser task payloads: the agent's models mirror the CRD, and bad input is named."""

from __future__ import annotations

from typing import Any, get_args

import pytest
import yaml
from harness import REPO
from pydantic import BaseModel
from wallestars_browser import payloads as p

CRD = yaml.safe_load((REPO / "crds" / "agents.wallestars.io_agenttasks.yaml").read_text())
PAYLOAD = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
    "properties"
]["payload"]["properties"]
# Payload fields for other task types (api-test, custom), not the browser's.
NOT_BROWSER = {"method", "headers", "body", "expectStatus", "data", "assertions", "requests",
               "headersFrom", "bodyFrom"}  # fmt: skip


def resolved(fields: set[str]) -> set[str]:
    """A Secret reference (`valueFrom`) is folded into its field (`value`) before the
    payload reaches the models (wallestars_sdk.secrets.resolve)."""
    return {f.removesuffix("From") for f in fields}


def aliases(model: type[BaseModel]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def test_every_crd_payload_field_is_read_by_some_browser_model() -> None:
    read = set().union(*(aliases(m) for m in p.PAYLOADS.values()))
    assert set(PAYLOAD) - NOT_BROWSER == read


@pytest.mark.parametrize(
    ("crd_path", "model"),
    [(("viewport",), p.Viewport), (("baseline",), p.Baseline), (("pagination",), p.Pagination),
     (("fields", "additionalProperties"), p.Field_), (("steps", "items"), p.Step)],
)  # fmt: skip
def test_nested_objects_have_the_same_fields(
    crd_path: tuple[str, ...], model: type[BaseModel]
) -> None:
    node: dict[str, Any] = PAYLOAD
    node = node[crd_path[0]]
    for key in crd_path[1:]:
        node = node[key]
    assert resolved(set(node["properties"])) == aliases(model)


def test_step_actions_and_standards_match_the_crd_enums() -> None:
    assert list(get_args(p.Action)) == PAYLOAD["steps"]["items"]["properties"]["action"]["enum"]
    standards = get_args(p.Accessibility.model_fields["standard"].annotation)
    assert list(standards) == PAYLOAD["standard"]["enum"]


@pytest.mark.parametrize(
    ("type_", "payload", "message"),
    [
        ("screenshot", {}, "spec.payload.url: Field required"),
        ("screenshot", {"url": "file:///etc/passwd"}, "spec.payload.url: must be an absolute http"),
        ("screenshot", {"url": "http://a/", "viewport": {"width": 99999, "height": 600}},
         "spec.payload.viewport.width: Input should be less than or equal to 7680"),
        ("screenshot", {"url": "http://a/", "selector": "#x", "fullPage": True}, "exclude each other"),
        ("screenshot", {"url": "http://a/", "format": "png", "quality": 50}, "quality applies to format jpeg"),
        ("e2e-test", {"steps": [{"action": "fly"}]}, "spec.payload.steps.0.action: Input should be"),
        ("e2e-test", {"steps": []}, "spec.payload.steps: List should have at least 1 item"),
        ("e2e-test", {"steps": [{"action": "click"}]}, "a click step needs selector"),
        ("e2e-test", {"steps": [{"action": "goto"}]}, "a goto step needs url"),
        ("e2e-test", {"steps": [{"action": "expectCount", "selector": "li"}]}, "needs count"),
        ("e2e-test", {"steps": [{"action": "click", "selector": "a", "colour": 1}]},
         "spec.payload.steps.0.colour: Extra inputs are not permitted"),
        ("scrape", {"url": "http://a/"}, "selectors or fields (at least one) is required"),
        ("scrape", {"url": "http://a/", "selectors": {"a": "h1"}, "fields": {"a": {"selector": "h2"}}},
         "['a'] named in both"),
        ("performance", {"url": "http://a/", "thresholds": {"speed": 1}}, "unknown metrics ['speed']"),
        ("accessibility", {"url": "http://a/", "thresholds": {"fatal": 0}}, "unknown impacts ['fatal']"),
        ("api-test", {"url": "http://a/"}, "'api-test' is not a browser task"),
    ],
)  # fmt: skip
def test_bad_payloads_say_what_and_where(type_: str, payload: dict[str, Any], message: str) -> None:
    with pytest.raises(p.PayloadError) as e:
        p.parse(type_, payload)
    assert message in str(e.value)


def test_good_payloads_parse_with_defaults() -> None:
    s = p.parse("screenshot", {"url": "https://example.com/", "viewport": {"width": 390, "height": 844,
                                                                           "deviceScaleFactor": 3}})  # fmt: skip
    assert isinstance(s, p.Screenshot) and s.viewport is not None
    assert (s.viewport.device_scale_factor, s.format, s.full_page, s.wait_for) == (
        3,
        "png",
        False,
        "load",
    )
    sc = p.parse("scrape", {"url": "http://a/", "selectors": {"t": "h1"},
                            "fields": {"links": {"selector": "a", "attribute": "href", "all": True}}})  # fmt: skip
    assert isinstance(sc, p.Scrape)
    assert sc.all_fields() == {"t": p.Field_(selector="h1"),
                               "links": p.Field_(selector="a", attribute="href", all=True)}  # fmt: skip
