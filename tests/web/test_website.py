"""The website in a real browser: headless Chromium (Debian's) against the gateway under
gunicorn, with the test model server and image host on loopback.

Every test fails on a console error, an uncaught exception or a Content-Security-Policy
violation in its page (``test_a_csp_violation_is_seen`` shows that they are caught)."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from playwright.sync_api import Browser, FilePayload, Page, ViewportSize, expect

from gateway.errors import ERRORS
from gateway.model_errors import MODEL_UNAVAILABLE
from gateway.site import UNSURE_BELOW
from serving_contract.api_keys import digest
from serving_contract.gateway_env import mib
from tests.gateway.conftest import TEST_ENV
from tests.support.browser import CHROMIUM, MISSING, Problems, chromium, collect_violations, watch
from tests.support.fake_model_server import FIXED_LOGITS, FakeModel, serve
from tests.support.gateway_process import free_port, gunicorn_gateway
from tests.support.image_host import FIXTURES, ImageHost

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=MISSING)

ROOT = Path(__file__).resolve().parents[2]
AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
DESKTOP: ViewportSize = {"width": 1000, "height": 900}
PHONE: ViewportSize = {"width": 375, "height": 740}  # an iPhone SE-sized screen, in CSS pixels


@pytest.fixture(scope="module")
def model() -> Iterator[tuple[FakeModel, int]]:
    model = FakeModel(logits_from_image=True, record=False)
    server, port = serve(model)
    yield model, port
    server.stop(0)


@pytest.fixture(scope="module")
def site(model: tuple[FakeModel, int]) -> Iterator[str]:
    env = {**TEST_ENV, "TF_SERVING_HOST": f"127.0.0.1:{model[1]}"}
    with gunicorn_gateway(env, workers=1, threads=4) as (base, _):
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def browsing(browser: Browser) -> Iterator[tuple[Page, Problems]]:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    problems = watch(page)
    yield page, problems
    collect_violations(page, problems)
    context.close()
    if problems.all():
        pytest.fail(f"the page had problems: {problems}")


@pytest.fixture
def page(browsing: tuple[Page, Problems]) -> Page:
    return browsing[0]


def bars(page: Page) -> list[tuple[str, float]]:
    """The bar chart as (class, probability), top to bottom, checked against its meters
    and the percentages beside them."""
    rows: list[dict[str, str | float]] = page.eval_on_selector_all(
        "#bars li",
        """items => items.map(li => ({
            label: li.dataset.label, probability: li.dataset.probability,
            meter: li.querySelector('meter').value, figure: li.querySelector('.value').textContent,
        }))""",
    )
    chart = []
    for row in rows:
        probability = float(row["probability"])
        assert row["meter"] == probability
        shown = float(str(row["figure"]).removesuffix("%"))
        assert abs(shown - 100 * probability) <= 0.05 + 1e-9, row
        chart.append((str(row["label"]), probability))
    return chart


def ranked(prediction: dict[str, object]) -> list[tuple[str, float]]:
    probabilities = prediction["probabilities"]
    assert isinstance(probabilities, dict)
    return sorted(probabilities.items(), key=lambda item: -item[1])


def classify_link(page: Page, url: str) -> None:
    page.get_by_label("Image link").fill(url)
    page.get_by_role("button", name="Classify").click()


def wait_for_preview(page: Page) -> None:
    page.wait_for_function(
        "() => { const img = document.querySelector('#preview');"
        " return img.complete && img.naturalWidth > 0; }"
    )


def expect_result_of(page: Page, api: dict[str, object]) -> None:
    expect(page.locator("#result")).to_be_visible()
    assert bars(page) == ranked(api)
    heading = page.get_by_role("heading", level=2)
    expect(heading).to_contain_text(str(api["top_class"]))
    model = api["model"]
    assert isinstance(model, dict)
    expect(page.locator("#model")).to_have_text(
        f"Model {model['name']}, version {model['version']}"
    )
    expect(page.get_by_role("alert")).to_be_hidden()
    wait_for_preview(page)


def api_for_url(site: str, url: str) -> dict[str, object]:
    response = requests.post(site + "/predict", json={"url": url}, timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def api_for_upload(site: str, data: bytes) -> dict[str, object]:
    response = requests.post(site + "/predict", files={"image": data}, timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_a_link_gives_the_bars_the_api_gives(site: str, image_host: ImageHost, page: Page) -> None:
    page.goto(site)
    expect(page).to_have_title("Clothing classifier")
    for name in ("shorts.jpg", "hat.jpg"):  # a second link replaces the first's answer
        url = image_host.url(f"/images/{name}")
        classify_link(page, url)
        expect_result_of(page, api_for_url(site, url))
        assert page.locator("#preview").get_attribute("src") == url


def test_an_uploaded_picture_gives_its_own_answer(site: str, page: Page) -> None:
    page.goto(site)
    for name in ("dress.jpg", "shoes.jpg"):
        path = FIXTURES / name
        page.get_by_label("Choose a picture").set_input_files(path)
        expect_result_of(page, api_for_upload(site, path.read_bytes()))
        assert str(page.locator("#preview").get_attribute("src")).startswith("blob:")


def _transfer(page: Page, event: str, data: bytes | None, text: dict[str, str]) -> None:
    """Dispatches a drop or paste event carrying a file (JPEG ``data``) and/or text."""
    page.evaluate(
        """([event, data, text]) => {
            const transfer = new DataTransfer();
            if (data !== null) {
                const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
                transfer.items.add(new File([bytes], 'picture.jpg', {type: 'image/jpeg'}));
            }
            for (const [type, value] of Object.entries(text)) transfer.setData(type, value);
            const init = {bubbles: true, cancelable: true};
            const target = document.querySelector('#drop-zone');
            target.dispatchEvent(event === 'drop'
                ? new DragEvent('drop', {...init, dataTransfer: transfer})
                : new ClipboardEvent('paste', {...init, clipboardData: transfer}));
        }""",
        [event, None if data is None else base64.b64encode(data).decode(), text],
    )


@pytest.mark.parametrize("event", ["drop", "paste"])
def test_a_dropped_or_pasted_picture_is_classified(site: str, page: Page, event: str) -> None:
    page.goto(site)
    data = (FIXTURES / "pants.jpg").read_bytes()
    _transfer(page, event, data, {})
    expect_result_of(page, api_for_upload(site, data))


@pytest.mark.parametrize("event", ["drop", "paste"])
def test_a_dropped_or_pasted_link_is_classified(
    site: str, image_host: ImageHost, page: Page, event: str
) -> None:
    """An image dragged from another page brings its link as text/uri-list."""
    page.goto(site)
    url = image_host.url("/images/skirt.jpg")
    _transfer(page, event, None, {"text/uri-list": f"# dragged\n{url}", "text/plain": url})
    expect_result_of(page, api_for_url(site, url))
    expect(page.get_by_label("Image link")).to_have_value(url)


def test_a_refused_link_is_explained_in_plain_words(site: str, page: Page) -> None:
    page.goto(site)
    private = "http://10.1.2.3/photo.jpg"
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    classify_link(page, private)
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text(ERRORS["url_not_allowed"].plain)
    expect(alert).to_contain_text("Details:")
    expect(page.locator("#result")).to_be_hidden()
    assert private not in requested  # the browser was not sent there either

    classify_link(page, "   ")
    expect(alert).to_have_text("Give a link to a picture first.")
    expect(page.get_by_label("Image link")).to_be_focused()


def test_a_file_that_is_not_a_picture_is_explained(site: str, page: Page) -> None:
    page.goto(site)
    chooser = page.get_by_label("Choose a picture")
    chooser.set_input_files({"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"})
    expect(page.get_by_role("alert")).to_contain_text(ERRORS["unsupported_media_type"].plain)

    posted: list[str] = []
    page.on("request", lambda request: posted.append(request.url))
    limit = int(chooser.get_attribute("data-max-bytes") or 0)
    assert limit == 10 * 1024 * 1024  # MAX_IMAGE_BYTES's default
    big: FilePayload = {
        "name": "big.jpg",
        "mimeType": "image/jpeg",
        "buffer": b"\xff" * (limit + 1),
    }
    chooser.set_input_files(big)
    expect(page.get_by_role("alert")).to_contain_text(ERRORS["request_too_large"].plain)
    # in MiB, as the gateway states sizes: one byte over the limit reads as over it
    expect(page.get_by_role("alert")).to_contain_text(
        f"Details: it is {mib(limit + 1, up=True)}; the limit is {mib(limit)}"
    )
    assert mib(limit + 1, up=True) == "10.01 MiB"
    assert posted == []  # refused before sending 10 MiB


# Flat: every class 10%. The stand-in's fixed answer: its top class ~45%, ahead of the
# next (~25%) but more likely wrong than right. Confident: ~94%.
ANSWERS = {
    "flat": np.zeros(10, dtype=np.float32),
    "ahead but below half": FIXED_LOGITS,
    "confident": np.array([5.0] + [0.0] * 9, dtype=np.float32),
}


def test_an_unsure_answer_says_so_in_words(
    site: str, image_host: ImageHost, model: tuple[FakeModel, int], page: Page
) -> None:
    page.goto(site)
    fake, _ = model
    url = image_host.url("/images/hat.jpg")
    note = page.locator("#unsure")
    seen = {}
    try:
        fake.logits_from_image = False
        for name, logits in ANSWERS.items():
            fake.logits = logits.copy()
            api = api_for_url(site, url)
            classify_link(page, url)
            expect_result_of(page, api)
            top = float(api["top_probability"])  # type: ignore[arg-type]
            seen[name] = unsure = top < UNSURE_BELOW
            status = page.get_by_role("status")
            if unsure:
                expect(note).to_be_visible()
                expect(note).to_have_text(
                    f"Unsure: with only {100 * top:.1f}% for {api['top_class']}, the classifier "
                    "finds it more likely that this is something else. See the other classes "
                    "below."
                )
                expect(page.locator("#result")).to_have_accessible_description(
                    re.compile("^Unsure:")
                )
                expect(status).to_have_text(
                    f"Done: most likely {api['top_class']}, but the classifier is unsure."
                )
            else:
                expect(note).to_be_hidden()
                expect(status).to_have_text(f"Done: most likely {api['top_class']}.")
    finally:
        fake.logits_from_image = True
        fake.logits = FIXED_LOGITS.copy()
    assert seen == {"flat": True, "ahead but below half": True, "confident": False}


def test_a_model_server_that_is_down_is_explained_without_its_address(page: Page) -> None:
    """The page shows the registry's words and the API's message, which name nothing
    behind the gateway (the model server's address is in the gateway's log)."""
    target = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = {**TEST_ENV, "TF_SERVING_HOST": target}
    with gunicorn_gateway(env, workers=1, threads=4) as (base, _):
        page.goto(base)
        page.get_by_label("Choose a picture").set_input_files(FIXTURES / "hat.jpg")
        alert = page.get_by_role("alert")
        expect(alert).to_contain_text(ERRORS["model_unavailable"].plain)
        expect(alert).to_contain_text(f"Details: {MODEL_UNAVAILABLE}")
        text = alert.inner_text()
        assert target.split(":")[1] not in text and "127.0.0.1" not in text, text


def test_a_waking_model_is_waited_for_and_its_answer_shown(page: Page, tmp_path: Path) -> None:
    """A model server that sleeps (MODEL_WAKE_ESTIMATE_S): the page says the model is waking
    up, with a bar that stops short of the end, asks again after each Retry-After, and
    shows the answer for the same picture once the model server is up, with nothing done
    by the person."""
    port = free_port()  # nothing listens there yet: the model server sleeps
    env = {
        **TEST_ENV,
        "TF_SERVING_HOST": f"127.0.0.1:{port}",
        "MODEL_WAKE_ESTIMATE_S": "2",  # so that Retry-After, what it leaves, is 1 s or 2
        "RETRY_AFTER_S": "1",
    }
    picture = FIXTURES / "dress.jpg"
    with gunicorn_gateway(env, workers=1, threads=4) as (base, _):
        page.goto(base)
        page.get_by_label("Choose a picture").set_input_files(picture)
        expect(page.get_by_role("status")).to_have_text("Waking the model up (about 1 minute)")
        bar = page.get_by_role("progressbar", name="Waking the model up")
        expect(bar).to_be_visible()
        expect(page.locator("#wake-hint")).to_contain_text(ERRORS["model_waking"].plain)
        expect(page.get_by_role("alert")).to_be_hidden()
        expect(page.locator("#activity progress")).to_be_hidden()  # the wake's bar instead
        # past the estimate: the bar waits at 95% until the answer says the model is up
        page.wait_for_function(
            "() => document.querySelector('#wake-progress').value === 0.95", timeout=10_000
        )
        waking = _screenshot_dir(tmp_path) / "website-waking.png"  # docs/website.md's
        page.screenshot(path=waking, full_page=True)
        assert waking.stat().st_size > 10_000
        for _ in range(2):  # and it asks again, and again
            with page.expect_request(
                lambda request: request.method == "POST" and request.url.endswith("/predict"),
                timeout=10_000,
            ):
                pass
        model = FakeModel(logits_from_image=True, record=False)
        server, _ = serve(model, port=port)
        try:
            expect(page.locator("#result")).to_be_visible(timeout=15_000)
            expect(bar).to_be_hidden()
            expect_result_of(page, api_for_upload(base, picture.read_bytes()))
            assert str(page.locator("#preview").get_attribute("src")).startswith("blob:")
        finally:
            server.stop(None)


def test_progress_is_shown_while_the_model_works(
    site: str, image_host: ImageHost, model: tuple[FakeModel, int], page: Page
) -> None:
    page.goto(site)
    progress = page.locator("#activity progress")
    expect(progress).to_be_hidden()
    fake, _ = model
    fake.delay_s = 1.0
    try:
        classify_link(page, image_host.url("/images/outwear.jpg"))
        expect(progress).to_be_visible()
        expect(page.get_by_role("status")).to_have_text("Classifying…")
        expect(page.locator("#result")).to_have_attribute("aria-busy", "true")
        expect(page.locator("#result")).to_be_visible()
    finally:
        fake.delay_s = 0.0
    expect(progress).to_be_hidden()
    expect(page.locator("#result")).to_have_attribute("aria-busy", "false")
    expect(page.get_by_role("status")).to_contain_text("Done: most likely")


def test_everything_works_from_the_keyboard(site: str, image_host: ImageHost, page: Page) -> None:
    page.goto(site)
    stops = []
    for _ in range(4):
        page.keyboard.press("Tab")
        stops.append(
            page.evaluate(
                "() => document.activeElement.id || document.activeElement.textContent.trim()"
            )
        )
    assert stops == ["image-url", "Classify", "image-file", "the API"]
    # the chooser's input is visually hidden: its label shows the focus instead
    page.get_by_label("Choose a picture").focus()
    outline = page.locator("label[for=image-file]").evaluate(
        "l => getComputedStyle(l).outlineStyle"
    )
    assert outline not in ("", "none")

    page.get_by_label("Image link").focus()
    url = image_host.url("/images/longsleeve.jpg")
    page.keyboard.type(url)
    page.keyboard.press("Enter")
    expect_result_of(page, api_for_url(site, url))


def test_it_fits_a_phone(
    site: str, image_host: ImageHost, browser: Browser, tmp_path: Path
) -> None:
    context = browser.new_context(
        viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    problems = watch(page)
    try:
        page.goto(site)
        url = image_host.url("/images/shirt.jpg")
        classify_link(page, url)
        expect_result_of(page, api_for_url(site, url))
        width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"scrolls sideways: {width}"
        for target in ("button", "label[for=image-file]", "#image-url"):
            box = page.locator(target).bounding_box()
            assert box is not None and box["height"] >= 44, (target, box)  # a finger's size
        page.screenshot(path=_screenshot_dir(tmp_path) / "website-phone.png", full_page=True)
        assert not collect_violations(page, problems).all(), problems
    finally:
        context.close()


def _screenshot_dir(tmp_path: Path) -> Path:
    """Where ``make screenshots`` asks (.cache/screenshots, or docs/), else the test's own
    directory."""
    return Path(os.environ.get("WEBSITE_SCREENSHOTS", tmp_path))


def test_screenshot(site: str, image_host: ImageHost, page: Page, tmp_path: Path) -> None:
    """The README's picture of the website, with the test model server's answer."""
    page.goto(site)
    url = image_host.url("/images/t-shirt.jpg")
    classify_link(page, url)
    expect_result_of(page, api_for_url(site, url))
    path = _screenshot_dir(tmp_path) / "website.png"
    page.screenshot(path=path, full_page=True)
    assert path.stat().st_size > 10_000


@pytest.mark.skipif(not AXE.exists(), reason=f"no {AXE}: run make setup (npm ci in tests/web)")
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_accessibility_violations(
    site: str, image_host: ImageHost, browser: Browser, scheme: str
) -> None:
    """axe-core's WCAG 2.1 A/AA rules and best practices (labels, contrast, landmarks,
    headings) on the page with a result and with an error shown. axe is injected as a
    script, so this context alone lets the page's CSP pass it."""
    context = browser.new_context(viewport=DESKTOP, bypass_csp=True, color_scheme=scheme)  # type: ignore[arg-type]
    page = context.new_page()
    try:
        page.goto(site)
        page.add_script_tag(path=AXE)
        classify_link(page, image_host.url("/images/shorts.jpg"))
        expect(page.locator("#result")).to_be_visible()
        wait_for_preview(page)
        page.get_by_label("Choose a picture").set_input_files(
            {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}
        )
        expect(page.get_by_role("alert")).to_be_visible()
        page.locator("#result").evaluate("r => { r.hidden = false; }")  # both at once
        page.locator("#waking, #wake-hint").evaluate_all(
            "all => all.forEach(e => { e.hidden = false; })"
        )
        page.locator("#unsure").evaluate("u => { u.hidden = false; u.textContent = 'Unsure'; }")
        found = page.evaluate(
            """() => axe.run(document, {runOnly: {type: 'tag',
                values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})
              .then(r => ({passed: r.passes.length, violations: r.violations.map(
                  v => `${v.id}: ${v.nodes.map(n => n.target).join(', ')}`)}))"""
        )
        assert found["violations"] == []
        assert found["passed"] >= 20  # the rules did run (labels, contrast, landmarks...)
    finally:
        context.close()


def test_a_csp_violation_is_seen(site: str, browsing: tuple[Page, Problems]) -> None:
    """The watch the other tests rely on: an inline script is refused, and recorded."""
    page, problems = browsing
    page.goto(site)
    page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.__ran = true'; document.body.append(s); }"
    )
    assert page.evaluate("() => window.__ran") is None
    collect_violations(page, problems)
    assert any(v.startswith("script-src") for v in problems.violations), problems
    assert any("Content Security Policy" in line for line in problems.console), problems
    problems.violations.clear()
    problems.console.clear()


def test_the_page_loads_nothing_from_elsewhere(site: str, page: Page) -> None:
    loaded: list[str] = []
    page.on("request", lambda request: loaded.append(request.url))
    page.goto(site)
    page.wait_for_load_state("networkidle")
    assert loaded and all(url.startswith(site + "/") for url in loaded), loaded
    assert {re.sub(r"\?v=[0-9a-f]{16}$", "", url) for url in loaded} == {
        f"{site}/",
        f"{site}/static/site.css",
        f"{site}/static/site.js",
        f"{site}/static/icon.svg",
    }


def test_the_page_asks_for_the_api_key_when_one_is_needed(
    model: tuple[FakeModel, int], image_host: ImageHost, page: Page, tmp_path: Path
) -> None:
    key = "website-key-" + "k" * 30
    keys = tmp_path / "keys"
    keys.write_text(f"web {digest(key)}\n")
    env = {**TEST_ENV, "TF_SERVING_HOST": f"127.0.0.1:{model[1]}", "API_KEYS_FILE": str(keys)}
    with gunicorn_gateway(env, workers=1, threads=4) as (base, _):
        page.goto(base)
        url = image_host.url("/images/hat.jpg")
        classify_link(page, url)
        expect(page.get_by_role("alert")).to_contain_text(ERRORS["unauthorized"].plain)
        key_field = page.get_by_label("API key")
        expect(key_field).to_be_focused()
        assert key_field.get_attribute("type") == "password"

        key_field.fill(key)
        key_field.dispatch_event("change")
        classify_link(page, url)
        answer = requests.post(
            base + "/predict", json={"url": url}, headers={"X-API-Key": key}, timeout=30
        ).json()
        expect_result_of(page, answer)
        page.reload()  # kept for the tab's life, not typed again
        expect(page.get_by_label("API key")).to_have_value(key)


def test_a_newer_request_wins_over_a_slower_older_one(
    site: str, image_host: ImageHost, page: Page
) -> None:
    page.goto(site)
    classify_link(page, image_host.url("/trickle?every=0.2&for=3"))  # ends in a 504
    expect(page.locator("#activity progress")).to_be_visible()
    picture = FIXTURES / "shorts.jpg"
    page.get_by_label("Choose a picture").set_input_files(picture)
    expected = api_for_upload(site, picture.read_bytes())
    expect_result_of(page, expected)
    page.wait_for_timeout(3000)  # the old request has ended by now, and was ignored
    expect_result_of(page, expected)
    expect(page.locator("#activity progress")).to_be_hidden()


def test_a_refusal_made_here_ends_the_request_in_flight(
    site: str, image_host: ImageHost, page: Page
) -> None:
    page.goto(site)
    classify_link(page, image_host.url("/images/hat.jpg"))
    expect(page.locator("#result")).to_be_visible()
    classify_link(page, image_host.url("/trickle?every=0.2&for=3"))
    expect(page.locator("#activity progress")).to_be_visible()
    classify_link(page, "")
    alert = page.get_by_role("alert")
    expect(alert).to_have_text("Give a link to a picture first.")
    expect(page.locator("#activity progress")).to_be_hidden()
    page.wait_for_timeout(3000)
    expect(alert).to_have_text("Give a link to a picture first.")
    expect(page.locator("#result")).to_be_hidden()
