"""The preference page in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium).

Never `playwright install`: browser downloads are not possible here. Without Chromium
the test fails under CI=true and is skipped locally. Screenshots go to test-artifacts/
(git-ignored): sv and en, desktop and 360 px wide.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from handlers.tokens import Keyring, sign
from worker.store import migrate
from worker.store.db import Database
from worker.ingress.http import build_app
from worker.store.models import Preference
from tests.conftest import IN_CI, REPO, make_settings
from tests.integration.test_links_http import KEYRING, KEYS_ENV, SECRET, add_contact, no_metrics

CHROMIUM = os.environ.get("UNSUBD_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO / "test-artifacts"

pytestmark = pytest.mark.browser


def _need_browser():
    missing = None
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        missing = "the playwright package (pip install playwright)"
    if missing is None and not os.access(CHROMIUM, os.X_OK):
        missing = f"Chromium at {CHROMIUM} (apt-get install chromium)"
    if missing:
        if IN_CI:
            pytest.fail(f"{missing} is not installed, and CI=true: the browser test must run")
        pytest.skip(f"{missing} is not installed (in CI this fails)")
    return async_playwright


@pytest.fixture
async def served(tmp_path: Path):
    db = Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'unsubd.db'}")
    await migrate.upgrade(db.engine)
    db.tombstone_keys = KEYRING                # erasure from the console finds its keys, as in serve
    app = build_app(make_settings(**KEYS_ENV), db.sessions, no_metrics, db=db)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield db, f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()
        await db.close()


async def test_the_preference_page_in_chromium(served):
    async_playwright = _need_browser()
    db, base = served
    cid = await add_contact(db, "olle@example.se")
    token = sign(cid, "alumni", "email", Keyring({"k1": SECRET.encode()}, "k1"))
    url = f"{base}/u/{token}"
    ARTIFACTS.mkdir(exist_ok=True)

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            for lang in ("sv", "en"):
                for name, size in (("desktop", {"width": 1280, "height": 900}),
                                   ("360px", {"width": 360, "height": 780})):
                    ctx = await browser.new_context(viewport=size, locale=lang, java_script_enabled=False)
                    page = await ctx.new_page()
                    await page.goto(f"{url}?lang={lang}")
                    assert await page.get_attribute("html", "lang") == lang
                    assert await page.locator("form").count() == 1
                    await page.screenshot(path=str(ARTIFACTS / f"preferences-{lang}-{name}.png"), full_page=True)
                    await ctx.close()

            # Without JavaScript: keep the pre-selected alumni opt-out, untick two more boxes, save.
            ctx = await browser.new_context(viewport={"width": 360, "height": 780}, java_script_enabled=False)
            page = await ctx.new_page()
            await page.goto(f"{url}?lang=en")
            assert not await page.get_by_label("Email").first.is_checked()            # alumni first, pre-unticked
            assert "Alumni News (Email)" in await page.content()
            await page.locator("#b-research-news-sms").uncheck()
            await page.locator("#b-events-letter").uncheck()
            await page.get_by_role("button", name="Save").click()
            await page.wait_for_url(re.compile(r"saved=1"))
            assert await page.get_by_role("status").inner_text() == "Your choices are saved."
            assert not await page.locator("#b-research-news-sms").is_checked()
            await ctx.close()

            # With JavaScript (to measure layout only): no horizontal scrolling at 360 px, and
            # keyboard focus is visible.
            ctx = await browser.new_context(viewport={"width": 360, "height": 780})
            page = await ctx.new_page()
            await page.goto(f"{url}?lang=sv")
            assert await page.evaluate("document.documentElement.scrollWidth") <= 360
            await page.keyboard.press("Tab")
            outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
            assert outline not in ("none", "")
            await ctx.close()
        finally:
            await browser.close()

    async with db.sessions() as s:
        rows = {(p.unit, p.channel): (p.state, p.source)
                for p in (await s.scalars(select(Preference).where(Preference.contact_id == cid))).all()}
    assert rows == {("alumni", "email"): ("unsubscribed", "page"),
                    ("research-news", "sms"): ("unsubscribed", "page"),
                    ("events", "letter"): ("unsubscribed", "page")}
    for lang in ("sv", "en"):
        for name in ("desktop", "360px"):
            assert (ARTIFACTS / f"preferences-{lang}-{name}.png").stat().st_size > 5000


async def test_stop_all_is_undone_by_unticking_it_in_chromium(served):
    """Issue 20's page defect, as a person meets it: tick "Stop all", save; untick it alone, save."""
    async_playwright = _need_browser()
    db, base = served
    cid = await add_contact(db, "siv@example.se", units=("alumni", "events"))
    url = f"{base}/u/{sign(cid, 'events', 'email', Keyring({'k1': SECRET.encode()}, 'k1'))}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            ctx = await browser.new_context(java_script_enabled=False)
            page = await ctx.new_page()
            await page.goto(f"{url}?lang=en&saved=1")
            await page.locator("#b-alumni-sms").uncheck()          # an earlier choice, kept beneath the stop
            await page.get_by_role("button", name="Save").click()
            await page.wait_for_url(re.compile(r"saved=1"))
            await page.locator("#stop_all").check()
            await page.get_by_role("button", name="Save").click()
            await page.wait_for_url(re.compile(r"saved=1"))
            assert await page.locator("#stop_all").is_checked()
            assert await page.locator("#stop_all_on").count() == 1
            await page.locator("#stop_all").uncheck()
            await page.get_by_role("button", name="Save").click()
            await page.wait_for_url(re.compile(r"saved=1"))
            assert not await page.locator("#stop_all").is_checked()
            assert await page.locator("#b-events-email").is_checked()
            assert not await page.locator("#b-alumni-sms").is_checked()
            await page.screenshot(path=str(ARTIFACTS / "preferences-stop-all-undone.png"), full_page=True)
            await ctx.close()
        finally:
            await browser.close()
    async with db.sessions() as s:
        rows = {(p.unit, p.channel): p.state
                for p in (await s.scalars(select(Preference).where(Preference.contact_id == cid))).all()}
    assert rows[("*", "*")] == "subscribed" and rows[("alumni", "sms")] == "unsubscribed"
