"""A whole listening session clicked through in Debian's chromium (Playwright, headless), then the admin page.

Screenshots of the pages land in the test's tmp_path (intro.png, trial.png, done.png, admin.png)."""
import csv
import io
import json
import os
from pathlib import Path

import httpx
import pytest
from listen_support import ADMIN_TOKEN, admin_headers, make_listening_set, running_server

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} is absent (Debian package chromium; `make setup` installs it)")


def test_a_rater_completes_a_session_by_clicking_and_the_admin_sees_it(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    set_dir = make_listening_set(tmp_path / "set", per_condition=2, references=2, anchors=1)
    manifest = {c["id"]: c for c in json.loads((set_dir / "manifest.json").read_text())["clips"]}
    total = len(manifest)
    with running_server(set_dir, tmp_path / "results.db") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 1000, "height": 860}, accept_downloads=True)
            page = context.new_page()
            page.set_default_timeout(15_000)
            page_errors = []
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.goto(f"{url}/?label=participant-7")
            expect(page.locator("#intro")).to_be_visible()
            expect(page.locator("#intro-count")).to_contain_text(f"{total} clips")
            page.screenshot(path=tmp_path / "intro.png", full_page=True)
            page.click("#start")

            answered = []
            for k in range(total):
                expect(page.locator("#progress-text")).to_have_text(f"Clip {k + 1} of {total}")
                clip_id = Path(page.locator("#audio").get_attribute("src").split("?")[0]).name
                clip = manifest[clip_id]
                # Nothing can be answered before the clip has played.
                for choice in ("#rating input", "#word-grid input"):
                    expect(page.locator(choice).first).to_be_disabled()
                expect(page.locator("#next")).to_be_disabled()
                page.click("#play")
                expect(page.locator("#rating input").first).to_be_enabled()
                rating = {"reference": 5, "anchor": 1}.get(clip["role"], 4)
                word = clip["word"] or "none"
                page.click(f'#rating label:has(input[value="{rating}"])')
                page.click(f'#word-grid label:has(input[value="{word}"])')
                expect(page.locator(f'#word-grid input[value="{word}"]')).to_be_checked()
                expect(page.locator("#next")).to_be_enabled()
                if k == 0:
                    page.screenshot(path=tmp_path / "trial.png", full_page=True)
                page.click("#next")
                answered.append((clip_id, rating, word))
                if k == 2:  # a reload resumes where the rater was
                    expect(page.locator("#progress-text")).to_have_text(f"Clip 4 of {total}")
                    page.reload()
            expect(page.locator("#done")).to_be_visible()
            expect(page.locator("#progress-text")).to_have_text(f"{total} of {total}")
            page.screenshot(path=tmp_path / "done.png", full_page=True)
            assert sorted(a[0] for a in answered) == sorted(manifest)

            admin = context.new_page()
            admin.set_default_timeout(15_000)
            admin.on("pageerror", lambda e: page_errors.append(str(e)))
            admin.goto(f"{url}/admin#token={ADMIN_TOKEN}")
            expect(admin.locator("#results")).to_be_visible()
            expect(admin.locator("#conditions")).to_contain_text("features-noise")
            expect(admin.locator("#raters")).to_contain_text("ok")
            assert "token" not in admin.url  # dropped from the address bar
            admin.screenshot(path=tmp_path / "admin.png", full_page=True)
            with admin.expect_download() as download:
                admin.click("#download-csv")
            rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
            assert download.value.suggested_filename == "tiny-answers.csv"
            assert sorted((r["clip_id"], int(r["rating"]), r["word"]) for r in rows) == sorted(answered)
            assert {r["rater_label"] for r in rows} == {"participant-7"}
            assert not page_errors, page_errors
        finally:
            browser.close()
        summary = httpx.get(f"{url}/api/summary.json", headers=admin_headers(), timeout=30).json()
    assert summary["answers"]["total"] == total and summary["raters"]["ok"] == 1


def test_the_admin_page_asks_for_the_token(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    set_dir = make_listening_set(tmp_path / "set", per_condition=1, references=1, anchors=1)
    with running_server(set_dir, tmp_path / "results.db") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.goto(f"{url}/admin")
            expect(page.locator("#results")).to_be_hidden()
            page.fill("#admin-token", "wrong-token")
            page.click("#login button")
            expect(page.locator("#message")).to_contain_text("admin token required")
            page.fill("#admin-token", ADMIN_TOKEN)
            page.click("#login button")
            expect(page.locator("#results")).to_be_visible()
        finally:
            browser.close()
