"""The browser task types' payloads, validated before the browser starts.

They mirror `spec.payload` in the AgentTask CRD (a unit test walks both, so neither
can grow a field the other lacks). The API server already refuses most bad input; this
is the agent's own check, for payloads that reach it another way and for the rules a
CRD cannot express. A payload that fails here is the user's error: not retried.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

Selector = Annotated[str, Field(min_length=1, max_length=1024)]
WaitFor = Annotated[str, Field(max_length=1024)]


def http_url(v: str) -> str:
    u = urlsplit(v)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError("must be an absolute http or https URL")
    return v


Url = Annotated[str, Field(max_length=4096), AfterValidator(http_url)]


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


class Viewport(Model):
    width: int = Field(1280, ge=200, le=7680)
    height: int = Field(800, ge=200, le=4320)
    device_scale_factor: float = Field(1.0, ge=0.5, le=4)


class BasicAuth(Model):
    """HTTP basic auth for every request of the page (``passwordFrom``: from a Secret)."""

    username: Annotated[str, Field(min_length=1, max_length=256)]
    password: Annotated[str, Field(max_length=4096)] = ""


class Cookie(Model):
    """A cookie set before the page opens (``valueFrom``: from a Secret)."""

    name: Annotated[str, Field(min_length=1, max_length=256)]
    value: Annotated[str, Field(max_length=4096)] = ""
    url: Url | None = None  # default: the task's URL


class Session(Model):
    """What a page sees of who it is talking to: basic auth and cookies."""

    basic_auth: BasicAuth | None = None
    cookies: Annotated[list[Cookie], Field(max_length=50)] = []


class Page(Session):
    """What every page-opening task shares."""

    url: Url
    viewport: Viewport | None = None
    wait_for: WaitFor = "load"


K8sName = Annotated[
    str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
]
ArtifactName = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]


class ArtifactSource(Model):
    """An artifact of another AgentTask in the task's own namespace (a previous run's
    screenshot), read from the webhook service by this attempt only."""

    task: K8sName
    name: ArtifactName = "screenshot.png"


class Baseline(Model):
    url: Url | None = None
    artifact: ArtifactSource | None = None
    max_diff_ratio: float = Field(0.0, ge=0, le=1)
    pixel_tolerance: int = Field(0, ge=0, le=255)

    @model_validator(mode="after")
    def _one_source(self) -> Baseline:
        if (self.url is None) == (self.artifact is None):
            raise ValueError("a baseline is either a url or an artifact, exactly one")
        return self


class Screenshot(Page):
    selector: Selector | None = None
    full_page: bool = False
    format: Literal["png", "jpeg"] = "png"
    quality: int | None = Field(None, ge=1, le=100)
    baseline: Baseline | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Screenshot:
        if self.quality is not None and self.format != "jpeg":
            raise ValueError("quality applies to format jpeg only")
        if self.baseline is not None and self.format != "png":
            raise ValueError("a baseline comparison needs format png (jpeg is lossy)")
        if self.selector is not None and self.full_page:
            raise ValueError("selector (an element) and fullPage (the page) exclude each other")
        return self


class Field_(Model):
    selector: Selector
    attribute: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    all: bool = False


class Pagination(Model):
    next_selector: Selector
    max_pages: int = Field(5, ge=1, le=50)


class Scrape(Page):
    selectors: Annotated[dict[str, Selector], Field(max_length=128)] = {}
    fields: Annotated[dict[str, Field_], Field(max_length=128)] = {}
    pagination: Pagination | None = None

    @model_validator(mode="after")
    def _some_field(self) -> Scrape:
        if not self.selectors and not self.fields:
            raise ValueError("selectors or fields (at least one) is required")
        both = set(self.selectors) & set(self.fields)
        if both:
            raise ValueError(f"{sorted(both)} named in both selectors and fields")
        return self

    def all_fields(self) -> dict[str, Field_]:
        """The shorthand `selectors` (text of the first match) and `fields` as one map."""
        return {**{k: Field_(selector=v) for k, v in self.selectors.items()}, **self.fields}


Action = Literal[
    "goto", "click", "fill", "select", "press", "waitForSelector", "waitForUrl",
    "waitForNetworkIdle", "expectText", "expectVisible", "expectCount", "expectUrl",
    "screenshot", "wait",
]  # fmt: skip
NEEDS_SELECTOR = frozenset(
    {"click", "fill", "select", "press", "expectText", "expectVisible", "expectCount",
     "waitForSelector"}
)  # fmt: skip
NEEDS_VALUE = frozenset({"select", "press", "expectText", "expectUrl", "waitForUrl"})


class Step(Model):
    action: Action
    url: Url | None = None
    selector: Selector | None = None
    value: Annotated[str, Field(max_length=4096)] | None = None
    name: Annotated[str, Field(max_length=128)] | None = None
    timeout_ms: int | None = Field(None, ge=0, le=600_000)
    count: int | None = Field(None, ge=0, le=100_000)
    continue_on_failure: bool = False

    @model_validator(mode="after")
    def _complete(self) -> Step:
        if self.action == "goto" and self.url is None:
            raise ValueError("a goto step needs url")
        if self.action in NEEDS_SELECTOR and self.selector is None:
            raise ValueError(f"a {self.action} step needs selector")
        if self.action in NEEDS_VALUE and self.value is None:
            raise ValueError(f"a {self.action} step needs value")
        if self.action == "expectCount" and self.count is None:
            raise ValueError("an expectCount step needs count")
        return self

    def label(self, index: int) -> str:
        return self.name or f"{index + 1}. {self.action}"


class E2E(Session):
    url: Url | None = None  # opened before step 1 if set
    viewport: Viewport | None = None
    wait_for: WaitFor = "load"
    steps: Annotated[list[Step], Field(min_length=1, max_length=200)]

    @model_validator(mode="after")
    def _cookies_have_a_url(self) -> E2E:
        if self.url is None and any(c.url is None for c in self.cookies):
            raise ValueError("cookies need a url when the task has none")
        return self


# Core Web Vitals and navigation timing, in milliseconds except cls (unitless).
PERF_METRICS = ("ttfb", "fcp", "lcp", "cls", "tbt", "domContentLoaded", "load")


LIGHTHOUSE_CATEGORIES = ("performance", "accessibility", "best-practices", "seo")


class Performance(Page):
    # playwright: measured in the page (every engine); lighthouse: a Lighthouse run in
    # the same Chromium behind the same egress proxy, its report an artifact.
    engine: Literal["playwright", "lighthouse"] = "playwright"
    thresholds: dict[str, Annotated[float, Field(ge=0)]] = {}
    # Lighthouse: the lowest acceptable score (0 to 1) per category.
    categories: dict[str, Annotated[float, Field(ge=0, le=1)]] = {}
    form_factor: Literal["desktop", "mobile"] = "desktop"  # Lighthouse's emulation

    @field_validator("thresholds")
    @classmethod
    def _known(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(PERF_METRICS))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; known: {list(PERF_METRICS)}")
        return v

    @field_validator("categories")
    @classmethod
    def _categories(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(LIGHTHOUSE_CATEGORIES))
        if unknown:
            raise ValueError(f"unknown categories {unknown}; known: {list(LIGHTHOUSE_CATEGORIES)}")
        return v

    @model_validator(mode="after")
    def _lighthouse(self) -> Performance:
        if self.engine != "lighthouse":
            if self.categories:
                raise ValueError("categories are Lighthouse scores: set engine: lighthouse")
            return self
        # Lighthouse drives a tab of its own, outside the task's browser context.
        for name, given in (("basicAuth", self.basic_auth), ("cookies", self.cookies),
                            ("viewport", self.viewport)):  # fmt: skip
            if given:
                raise ValueError(f"{name} is not applied by engine lighthouse (it opens its "
                                 "own tab; use formFactor for its emulation)")  # fmt: skip
        return self


IMPACTS = ("critical", "serious", "moderate", "minor")


class Accessibility(Page):
    standard: Literal[
        "wcag2a", "wcag2aa", "wcag2aaa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"
    ] = "wcag2aa"
    # Violations allowed per impact (and "total"); any impact not listed allows none.
    thresholds: dict[str, Annotated[float, Field(ge=0)]] = {}

    @field_validator("thresholds")
    @classmethod
    def _known(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - {*IMPACTS, "total"})
        if unknown:
            raise ValueError(f"unknown impacts {unknown}; known: {[*IMPACTS, 'total']}")
        return v


PAYLOADS: dict[str, type[Model]] = {
    "screenshot": Screenshot,
    "scrape": Scrape,
    "e2e-test": E2E,
    "performance": Performance,
    "accessibility": Accessibility,
}


class PayloadError(ValueError):
    """The payload cannot be run; the message names every field at fault."""


def parse(task_type: str, raw: Any) -> Model:
    """The typed payload of a browser task, or PayloadError saying what is wrong and where."""
    model = PAYLOADS.get(task_type)
    if model is None:
        raise PayloadError(
            f"task type {task_type!r} is not a browser task (known: {sorted(PAYLOADS)})"
        )
    if not isinstance(raw, dict):
        raise PayloadError("spec.payload must be an object")
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise PayloadError(describe(e)) from None


def describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors(include_url=False):
        where = ".".join(str(p) for p in ("spec.payload", *err["loc"]))
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)
