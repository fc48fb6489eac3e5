"""The operator console in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium).

A communications officer signs in (with the keyboard only), finds a contact, reads why
it was suppressed, releases the suppression with a reason, settles a review item,
downloads the suppressions and reads on the dashboard the numbers the database holds;
all without JavaScript. An admin adds an operator on the users page, who then signs
in. A viewer is not offered the users page and is refused it, sees no action, and a
crafted POST is refused; a form
without its token is refused; five wrong passwords lock the account. Screenshots of
each page go to test-artifacts/ (git-ignored).

Never `playwright install`: browser downloads are not possible here. Without Chromium
the test fails under CI=true and is skipped locally.
"""

from __future__ import annotations

import csv
import io
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from worker.console import accounts
from worker.store import users
from worker.store.db import Database
from worker.store.models import ConsoleUser, Event, ReviewItem, Suppression
from handlers.tokens import sign
from tests.conftest import IN_CI, REPO
from tests.e2e.test_links_browser import ARGS, ARTIFACTS, CHROMIUM, _need_browser, served  # noqa: F401 - fixture
from tests.integration.test_console import held_reply, rights_request, suppress
from tests.integration.test_links_http import KEYRING, add_contact

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
# UNSUBD_DOCS_SCREENSHOTS=1: also write the screenshots docs/console.md shows (docs/console/*.png).
DOCS_SHOTS = REPO / "docs" / "console" if os.environ.get("UNSUBD_DOCS_SCREENSHOTS") == "1" else None


async def _sign_in(page, base: str, name: str, password: str = PASSWORD) -> None:
    await page.goto(f"{base}/console/login?lang=en")
    await page.get_by_label("User name").fill(name)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def test_a_communications_officer_works_in_the_console(served):
    async_playwright = _need_browser()
    db, base = served
    now = datetime.now(timezone.utc)
    for name, role in (("officer", "operator"), ("vera", "viewer"), ("lotta", "operator"), ("ada", "admin")):
        await users.add_user(db, name, accounts.hash_password(PASSWORD), role, now)
    await add_contact(db, "anna@example.se")
    await suppress(db, "anna@example.se", at=now - timedelta(hours=2))
    await suppress(db, "bertil@example.se", unit="events", at=now - timedelta(days=1))
    await suppress(db, "cilla@example.se", "complaint", at=now - timedelta(hours=1))
    review_id = await held_reply(db, "doris@example.se", "sluta skicka? <script>alert(1)</script>",
                                 at=now - timedelta(hours=3))
    await rights_request(db, "anna@example.se", "access", (now + timedelta(days=20)).date().isoformat(),
                         at=now - timedelta(days=10))
    ARTIFACTS.mkdir(exist_ok=True)
    shots: list[str] = []

    async def shot(page, name: str) -> None:
        await page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)
        shots.append(name)
        if DOCS_SHOTS:                       # the pictures of docs/console.md
            DOCS_SHOTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(DOCS_SHOTS / f"{name}.png"))

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            # -- Keyboard only (JavaScript on, to read the focus): Tab reaches the fields and the button.
            ctx = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
            page = await ctx.new_page()
            await page.goto(f"{base}/console/")
            assert page.url.startswith(f"{base}/console/login")
            await shot(page, "login")
            reached = []
            for _ in range(12):
                await page.keyboard.press("Tab")
                focused = await page.evaluate(
                    "[document.activeElement.id || document.activeElement.textContent.trim(),"
                    " getComputedStyle(document.activeElement).outlineStyle,"
                    " getComputedStyle(document.activeElement).outlineWidth]")
                reached.append(focused[0])
                assert focused[1] not in ("none", "") and focused[2] != "0px", focused    # focus is visible
                if focused[0] == "name":
                    await page.keyboard.type("officer")
                elif focused[0] == "password":
                    await page.keyboard.type(PASSWORD)
                elif focused[0] == "Sign in":
                    break
            assert reached[0] == "Skip to content"
            assert reached.index("name") < reached.index("password") < reached.index("Sign in")
            async with page.expect_navigation():
                await page.keyboard.press("Enter")
            assert page.url == f"{base}/console/"
            assert "Signed in as officer (operator)" in await page.content()
            await ctx.close()

            # -- The officer's work, without JavaScript.
            ctx = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB",
                                            java_script_enabled=False, accept_downloads=True)
            page = await ctx.new_page()
            await _sign_in(page, base, "officer")
            await page.wait_for_url(f"{base}/console/")
            await shot(page, "overview")
            await page.get_by_role("link", name="Find a contact").click()
            await page.get_by_label("Email address").fill("anna@example.se")
            await page.get_by_role("button", name="Search").click()
            why = await page.locator(".suppression").inner_text()
            assert "Why: dsn: 1 failed (5.1.1 user_unknown)" in why
            assert "550 5.1.1 mailbox does not exist" in why
            await shot(page, "contact")
            await page.get_by_label("Reason for releasing the suppression").fill("new mailbox, confirmed by phone")
            await page.get_by_role("button", name="Release the suppression").click()
            assert await page.get_by_role("status").inner_text() == "The suppression is released."
            async with db.sessions() as s:
                sup = await s.scalar(select(Suppression).where(Suppression.address == "anna@example.se"))
                released = await s.scalar(select(Event).where(Event.kind == "admin").order_by(Event.occurred_at.desc()))
            assert not sup.active
            assert released.evidence["operator"] == "console:officer"
            assert released.evidence["operator_reason"] == "new mailbox, confirmed by phone"
            assert "by console:officer" in await page.locator("ol.timeline").inner_text()

            await page.get_by_role("link", name="Review queue").click()
            await page.get_by_text("The message as text").click()              # <details>, no script needed
            assert "<script>alert(1)</script>" in await page.locator("details.raw pre").inner_text()
            await shot(page, "review")
            await page.get_by_label("Comment (optional)").fill("a clear request")
            await page.get_by_role("button", name="Settle the item").click()
            assert await page.get_by_role("status").inner_text() == "The item is settled."
            async with db.sessions() as s:
                item = await s.get(ReviewItem, review_id)
            assert item.resolution == "optout"

            await page.get_by_role("link", name="Suppressions").click()
            await shot(page, "suppressions")
            async with page.expect_download() as info:
                await page.get_by_role("link", name="Download as CSV").click()
            download = await info.value
            exported = list(csv.DictReader(io.StringIO(Path(await download.path()).read_text(encoding="utf-8"))))
            async with db.sessions() as s:
                active = (await s.scalars(select(Suppression).where(Suppression.active.is_(True)))).all()
            assert sorted((r["address"], r["reason"]) for r in exported) == \
                sorted((x.address, x.reason) for x in active)
            assert {r["address"] for r in exported} == {"bertil@example.se", "cilla@example.se"}

            await page.get_by_role("link", name="Parked items").click()
            await shot(page, "parked")
            await page.get_by_role("link", name="Rights requests").click()
            await shot(page, "rights")

            await page.get_by_role("link", name="Dashboard").click()
            await shot(page, "dashboard")
            async with db.sessions() as s:
                bounces = (await s.execute(select(Event.occurred_at, Event.actions)
                                           .where(Event.kind == "bounce"))).all()
                complaints = (await s.execute(select(Event.occurred_at).where(Event.kind == "complaint"))).all()
            expected: dict[str, int] = {}
            for at, actions in bounces:
                day = at.astimezone(timezone.utc).date().isoformat()
                expected[day] = expected.get(day, 0) + sum(a["type"] == "suppress" for a in actions)
            for day, n in expected.items():
                row = page.locator("#t-bounces tbody tr").filter(has=page.locator(f"th:text-is('{day}')"))
                assert await row.locator("td").first.inner_text() == str(n), day
            today = now.date().isoformat()
            row = page.locator("#t-complaints tbody tr").filter(has=page.locator(f"th:text-is('{today}')"))
            assert await row.locator("td").first.inner_text() == str(
                sum(1 for (at,) in complaints if at.astimezone(timezone.utc).date().isoformat() == today))
            assert await page.locator("svg[role=img] title").count() == 5

            # A form sent without its token is refused, and changes nothing.
            await page.goto(f"{base}/console/contact?address=anna%40example.se&lang=en")
            token = await page.locator("form.who input[name=csrf]").get_attribute("value")
            before = await _events(db)
            refused = await ctx.request.post(f"{base}/console/contact/note",
                                             form={"address": "anna@example.se", "text": "no token"},
                                             headers={"Origin": base})
            assert refused.status == 403 and "Nothing was changed" in await refused.text()
            assert await _events(db) == before
            await page.get_by_role("button", name="Sign out").click()
            assert page.url.startswith(f"{base}/console/login")
            await ctx.close()

            # -- An admin adds an operator on the users page; the new operator signs in.
            ctx = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB",
                                            java_script_enabled=False)
            page = await ctx.new_page()
            await _sign_in(page, base, "ada")
            await page.wait_for_url(f"{base}/console/")
            await page.get_by_role("link", name="Users").click()
            assert page.url == f"{base}/console/users"
            await page.get_by_label("User name", exact=True).fill("nils")
            await page.get_by_label("Role", exact=True).select_option("operator")
            await page.get_by_label("Password (at least 12 characters").fill("nils has a long password")
            await page.get_by_role("button", name="Add", exact=True).click()
            assert await page.get_by_role("status").inner_text() == "The user nils is added."
            row = page.locator("table tbody tr").filter(has=page.locator("th:text-is('nils')"))
            assert [c.strip() for c in await row.locator("td").all_inner_texts()] == ["operator", "active", "never"]
            await shot(page, "users")
            async with db.sessions() as s:
                nils = await s.scalar(select(ConsoleUser).where(ConsoleUser.name == "nils"))
            assert nils is not None and nils.role == "operator" and not nils.disabled
            await page.get_by_role("button", name="Sign out").click()
            await _sign_in(page, base, "nils", "nils has a long password")
            await page.wait_for_url(f"{base}/console/")
            assert "Signed in as nils (operator)" in await page.content()
            assert await page.get_by_role("link", name="Users").count() == 0
            await ctx.close()

            # -- A viewer sees no action, and a crafted POST with a valid token is refused.
            ctx = await browser.new_context(java_script_enabled=False, locale="en-GB")
            page = await ctx.new_page()
            await _sign_in(page, base, "vera")
            await page.wait_for_url(f"{base}/console/")
            assert await page.get_by_role("link", name="Users").count() == 0       # the users page is not offered
            refused_page = await page.goto(f"{base}/console/users?lang=en")
            assert refused_page.status == 403
            assert "Only an admin can see and change" in await page.get_by_role("alert").inner_text()
            assert "nils" not in await page.locator("main").inner_text()
            await page.goto(f"{base}/console/contact?address=bertil%40example.se&lang=en")
            buttons = [b.strip() for b in await page.locator("main button").all_inner_texts()]
            assert buttons == ["Search"], buttons
            await page.goto(f"{base}/console/review?lang=en")
            assert await page.locator("main form").count() == 0
            token = await page.locator("form.who input[name=csrf]").get_attribute("value")
            crafted = await ctx.request.post(f"{base}/console/contact/release",
                                             form={"address": "bertil@example.se", "reason": "x", "csrf": token},
                                             headers={"Origin": base})
            assert crafted.status == 403 and "Your role may not do that" in await crafted.text()
            async with db.sessions() as s:
                assert (await s.scalar(select(Suppression).where(Suppression.address == "bertil@example.se"))).active
            await ctx.close()

            # -- Five wrong passwords lock the account: the right one is then refused too.
            ctx = await browser.new_context(java_script_enabled=False, locale="en-GB")
            page = await ctx.new_page()
            for _ in range(5):
                await _sign_in(page, base, "lotta", "not the password")
                assert "Wrong user name or password" in await page.get_by_role("alert").inner_text()
            await _sign_in(page, base, "lotta")
            assert "Wrong user name or password" in await page.get_by_role("alert").inner_text()
            assert "/console/login" in page.url
            async with db.sessions() as s:
                lotta = await s.scalar(select(ConsoleUser).where(ConsoleUser.name == "lotta"))
            assert lotta.locked_until is not None and lotta.locked_until > datetime.now(timezone.utc)
            await ctx.close()

            # -- Swedish, 360 px wide: no sideways scrolling on the pages an officer reads on a phone.
            ctx = await browser.new_context(viewport={"width": 360, "height": 780}, locale="sv-SE")
            page = await ctx.new_page()
            await page.goto(f"{base}/console/login")
            assert await page.get_attribute("html", "lang") == "sv"
            await page.get_by_label("Användarnamn").fill("officer")
            await page.get_by_label("Lösenord").fill(PASSWORD)
            await page.get_by_role("button", name="Logga in").click()
            await page.wait_for_url(f"{base}/console/")
            for path in ("/console/", "/console/contact?address=anna%40example.se", "/console/review"):
                await page.goto(f"{base}{path}")
                width = await page.evaluate("document.documentElement.scrollWidth")
                assert width <= 360, (path, width)
                if path.startswith("/console/contact"):
                    await shot(page, "contact-sv-360px")
            await ctx.close()
        finally:
            await browser.close()

    for name in shots:
        assert (ARTIFACTS / f"console-{name}.png").stat().st_size > 5000


async def _events(db: Database) -> int:
    async with db.sessions() as s:
        return len((await s.scalars(select(Event.id))).all())


AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def _axe_path() -> Path:
    """axe-core's script: UNSUBD_TEST_AXE if set, else the npm registry's package that
    `make axe` installs in node_modules/, else the copy of axe-core the PyPI wheel
    axe-playwright-python carries (the test extra: for a machine without npm). Only the
    script is used, never the wheel's Python code."""
    if os.environ.get("UNSUBD_TEST_AXE"):
        return Path(os.environ["UNSUBD_TEST_AXE"])
    from_npm = REPO / "node_modules" / "axe-core" / "axe.min.js"
    if from_npm.is_file():
        return from_npm
    try:
        from importlib.resources import files
        return Path(str(files("axe_playwright_python").joinpath("axe.min.js")))
    except ModuleNotFoundError:
        return from_npm


def _need_axe() -> str:
    """The axe-core script. Missing: fails under CI=true, skipped locally."""
    axe = _axe_path()
    if not axe.is_file():
        if IN_CI:
            pytest.fail(f"axe-core is not at {axe}, and CI=true: the accessibility check must run")
        pytest.skip(f"axe-core is not at {axe} (make axe; in CI this fails)")
    return axe.read_text(encoding="utf-8")


async def test_no_serious_accessibility_violations_on_any_console_page_or_the_preference_page(served):
    async_playwright = _need_browser()
    axe = _need_axe()
    db, base = served
    now = datetime.now(timezone.utc)
    await users.add_user(db, "ada", accounts.hash_password(PASSWORD), "admin", now)
    contact = await add_contact(db, "anna@example.se")
    await suppress(db, "anna@example.se", at=now - timedelta(hours=2))
    await suppress(db, "cilla@example.se", "complaint", at=now - timedelta(hours=1))
    await held_reply(db, "doris@example.se", "sluta skicka?", at=now - timedelta(hours=3))
    token = sign(contact, "alumni", "email", KEYRING)
    found: dict[str, list[str]] = {}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            # bypass_csp: the pages allow no script, and axe is one.
            ctx = await browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
            page = await ctx.new_page()
            pages = [f"/u/{token}?lang=sv", f"/u/{token}?lang=en", "/console/login?lang=sv"]
            for url in pages:
                await page.goto(f"{base}{url}")
                found[url] = await _axe(page, axe)
            await _sign_in(page, base, "ada")
            await page.wait_for_url(f"{base}/console/")
            for lang in ("sv", "en"):
                for path in ("/console/", "/console/review", "/console/contact?address=anna%40example.se",
                             "/console/contact?address=nobody%40example.se", "/console/suppressions",
                             "/console/parked", "/console/rights", "/console/dashboard", "/console/users",
                             "/console/suppressions?since=nonsense"):
                    url = f"{path}{'&' if '?' in path else '?'}lang={lang}"
                    await page.goto(f"{base}{url}")
                    found[url] = await _axe(page, axe)
            # The check can fail: an input without a label is a critical violation.
            await page.evaluate("document.querySelector('main').insertAdjacentHTML('beforeend', "
                                "'<input type=text name=unlabelled>')")
            assert any(v.startswith("label:") for v in await _axe(page, axe, again=True))
            await ctx.close()
        finally:
            await browser.close()
    assert len(found) == 23
    assert not {url: v for url, v in found.items() if v}, found


async def _axe(page, source: str, again: bool = False) -> list[str]:
    """axe-core's serious and critical violations on the page, as 'rule: target' lines."""
    if not again:
        await page.add_script_tag(content=source)
    result = await page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS)
    return [f"{v['id']}: {n['target']}" for v in result["violations"] if v["impact"] in ("serious", "critical")
            for n in v["nodes"]]
