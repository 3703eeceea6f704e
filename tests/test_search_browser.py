"""The search page in a real browser: headless Chromium (Debian's chromium + chromium-driver, which
.ci/run installs) driven by selenium types a query, submits it, sees ranked results with their
thumbnails drawn, opens a result's frames, and saves screenshots as test artefacts
(``test_artifacts/``; the README's picture is one of them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.service_process import Service

pytestmark = pytest.mark.integration
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ARTIFACTS = REPO_ROOT / "test_artifacts"


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # as root in a container, offline: no sandbox, no GPU, none of Chromium's own network traffic
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,1400"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _images_drawn(driver, selector: str) -> list[int]:
    """naturalWidth of each matching image once loaded (0 for one the browser could not decode)."""
    return driver.execute_script(f"return Array.from(document.querySelectorAll('{selector}')).map(i => i.complete ? i.naturalWidth : -1)")


def test_a_person_searches_and_opens_a_result(search_collection, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    ARTIFACTS.mkdir(exist_ok=True)
    service = Service(search_collection / "index")
    try:
        browser.get(f"http://127.0.0.1:{service.port}/")
        assert "8 videos indexed" in browser.find_element(By.TAG_NAME, "body").text
        box = browser.find_element(By.NAME, "q")
        box.send_keys("a red circle moves from left to right")
        box.send_keys(Keys.ENTER)
        wait = WebDriverWait(browser, 60)
        wait.until(expected_conditions.presence_of_element_located((By.ID, "results")))
        rows = browser.find_elements(By.CSS_SELECTOR, "#results tr.hit")
        assert len(rows) == 8  # k=10 on an 8-video index: all of them, ranked
        ranks = [int(row.find_element(By.TAG_NAME, "td").text) for row in rows]
        assert ranks == list(range(1, 9))
        scores = [float(row.find_element(By.CSS_SELECTOR, "td.score").text.split()[0]) for row in rows]
        assert scores[:4] == sorted(scores[:4], reverse=True)  # the fine stage's top 4, then the coarse rest
        wait.until(lambda d: all(width != -1 for width in _images_drawn(d, "img.thumb")))
        widths = _images_drawn(browser, "img.thumb")
        assert len(widths) == 8 and all(width > 100 for width in widths)  # 4 frames side by side, drawn
        assert browser.current_url.startswith(f"http://127.0.0.1:{service.port}/?q=a+red+circle")
        browser.save_screenshot(str(ARTIFACTS / "search_results.png"))
        first_key = rows[0].find_element(By.CSS_SELECTOR, "a.key").text
        rows[0].find_element(By.CSS_SELECTOR, "a.key").click()
        wait.until(expected_conditions.title_is(first_key))
        wait.until(lambda d: _images_drawn(d, "img.frame") and all(width != -1 for width in _images_drawn(d, "img.frame")))
        frames = _images_drawn(browser, "img.frame")
        assert len(frames) >= 4 and all(width > 0 for width in frames)  # the generated clips are 4 s or 7 s: a frame a second
        assert "Captions" in browser.find_element(By.TAG_NAME, "body").text
        browser.save_screenshot(str(ARTIFACTS / "video_frames.png"))
        browser.back()
        browser.find_element(By.NAME, "q").clear()
        browser.find_element(By.NAME, "q").send_keys("   ", Keys.ENTER)
        wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "p.error")))
        assert "the query is empty" in browser.find_element(By.CSS_SELECTOR, "p.error").text
    finally:
        service.stop()
    assert Path(ARTIFACTS / "search_results.png").stat().st_size > 10_000


def test_a_person_finds_a_moment_plays_it_and_asks_for_more_like_it(moments_collection, browser):
    """The moments index in Chromium: the hit for the middle scene shows its time range, its player starts
    at that second (the browser fetches the source by range requests), and "more like this" lists other videos."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    root, bounds = moments_collection
    ARTIFACTS.mkdir(exist_ok=True)
    service = Service(root / "index", "--videos", str(root / "videos"))
    try:
        browser.get(f"http://127.0.0.1:{service.port}/")
        box = browser.find_element(By.NAME, "q")
        box.send_keys("a blue square moves from bottom to top", Keys.ENTER)
        wait = WebDriverWait(browser, 60)
        wait.until(expected_conditions.presence_of_element_located((By.ID, "results")))
        first = browser.find_elements(By.CSS_SELECTOR, "#results tr.hit")[0]
        shown = first.find_element(By.CSS_SELECTOR, "div.range").text  # "moment: 95-105 s of long.mp4"
        start, end = (float(x) for x in shown.split("moment: ")[1].split(" s of ")[0].split("-"))
        assert bounds[1][0] <= start < end <= bounds[1][1] and shown.endswith("long.mp4")
        position = ("const v = document.querySelector('video.moment'); "
                    "return v.readyState >= 1 ? [v.currentTime, v.duration, v.error ? v.error.code : 0] : null")  # fmt: skip
        current, duration, error = wait.until(lambda d: d.execute_script(position))
        assert error == 0 and abs(current - start) < 0.5 and abs(duration - 180.0) < 1.0  # the media fragment's start, of the 3-minute file
        first.find_element(By.CSS_SELECTOR, "details.moments summary").click()
        assert "s of long.mp4" in first.find_element(By.CSS_SELECTOR, "details.moments li").text
        browser.save_screenshot(str(ARTIFACTS / "search_moment.png"))
        first.find_element(By.CSS_SELECTOR, "a.like").click()
        wait.until(expected_conditions.presence_of_element_located((By.ID, "query-note")))
        assert "coarse video vectors" in browser.find_element(By.ID, "query-note").text
        keys = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#results a.key")]
        assert keys == ["short"]  # more like a window of long.mp4: the other videos, not its own windows
    finally:
        service.stop()
    assert (service.process.returncode is not None) and (ARTIFACTS / "search_moment.png").stat().st_size > 10_000
