"""The page in real headless Chromium: draw a digit with pointer events, check the answer.

Needs Debian's chromium and chromium-driver (``.ci/run`` installs them) and selenium; skips
with the reason when any is missing. Set SCRATCHCNN_SCREENSHOT=path to keep the screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from scratchcnn.app import Classifier
from scratchcnn.app.server import make_server
from scratchcnn.data import load

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="Chromium not installed (apt-get install -y chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def page_url(mnist_dir, tmp_path_factory):
    images, labels = load("mnist", "train", mnist_dir)
    clf = Classifier.create("keras", seed=0)
    clf.fit(images[:8000], labels[:8000], epochs=2, lr=0.02, momentum=0.9, batch_size=64)
    httpd = make_server(clf, "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1500",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait_until(predicate, limit: float = 30.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("the page did not get there in time")


def test_draw_a_seven_and_the_page_agrees_with_the_api(page_url, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser.get(page_url)
    wait_until(lambda: browser.execute_script("return document.body.dataset.ready === '1'"))
    assert "keras network trained on mnist" in browser.find_element(By.ID, "model-line").text
    pad = browser.find_element(By.ID, "pad")
    # A "7": a bar across the top, then a stroke down to the lower left (offsets from centre).
    (
        ActionChains(browser)
        .move_to_element_with_offset(pad, -70, -90)
        .click_and_hold()
        .move_by_offset(40, 0)
        .move_by_offset(40, 0)
        .move_by_offset(40, 0)
        .move_by_offset(-20, 40)
        .move_by_offset(-20, 40)
        .move_by_offset(-20, 40)
        .move_by_offset(-20, 40)
        .move_by_offset(-10, 30)
        .release()
        .perform()
    )

    def settled():
        state = browser.execute_script(
            "return [window.scratchcnn.lastResult, window.scratchcnn.lastImage,"
            " document.getElementById('prediction').textContent]"
        )
        return state if state[0] is not None else None

    result, image, shown = wait_until(settled)
    time.sleep(0.5)  # let a send queued by the last pointer events finish
    result, image, shown = settled()
    # The page shows what the API says for exactly the pixels it sent.
    request = urllib.request.Request(
        page_url + "api/predict",
        data=json.dumps({"image": image}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        answer = json.load(response)
    assert shown == answer["prediction"] == result["prediction"]
    assert shown == "7", f"the drawn 7 was read as {shown}: {answer['probabilities']}"
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
    assert len(bars) == 10
    assert (
        bars[7].find_element(By.CSS_SELECTOR, ".pct").text
        == f"{100 * answer['probabilities'][7]:.1f}%"
    )
    maps = browser.find_elements(By.CSS_SELECTOR, "#maps canvas")
    assert len(maps) == 32 + 32 + 64 + 64  # every channel of both convolutions and pools
    assert len(browser.find_elements(By.CSS_SELECTOR, "#filters canvas")) == 32

    shot = tmp_path / "serve.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("SCRATCHCNN_SCREENSHOT"):
        shutil.copy(shot, os.environ["SCRATCHCNN_SCREENSHOT"])

    browser.find_element(By.ID, "clear").click()
    assert browser.find_element(By.ID, "prediction").text == "?"
