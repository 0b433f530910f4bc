"""The page in real headless Chromium: draw a digit with pointer events and check the answer,
the explanation and one SGD step against the JSON API; train a tiny net in the page and watch
its curve move; evaluate; upload a photo of a whole number; read one from a (fake) camera.

Needs Debian's chromium and chromium-driver (``.ci/run`` installs them) and selenium; skips
with the reason when any is missing. Set SCRATCHCNN_SCREENSHOTS=folder to keep a screenshot of
each tab (the README's come from here).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photogen import number_photo
from scratchcnn.app import Classifier
from scratchcnn.app.server import make_server
from scratchcnn.data import load

from helpers import serving

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
    with serving(make_server(clf, "127.0.0.1", 0, data_dir=str(mnist_dir))) as port:
        yield f"http://127.0.0.1:{port}/"


CAMERA_DIGITS = [5, 1, 8]  # the number the fake camera shows


def camera_video(path: Path, mnist_dir: Path) -> None:
    """A one-frame Y4M video for Chromium's fake camera: a photo of the number CAMERA_DIGITS
    (MNIST test digits written on paper, ``photogen``) in the middle of a 640x480 grey frame."""
    images, labels = load("mnist", "test", mnist_dir)
    digits = [images[np.flatnonzero(labels == d)[2]] for d in CAMERA_DIGITS]
    photo = Image.open(io.BytesIO(number_photo([digits], seed=7))).convert("L")
    photo.thumbnail((560, 400))
    frame = Image.new("L", (640, 480), 96)  # the desk around the sheet of paper
    frame.paste(photo, ((640 - photo.width) // 2, (480 - photo.height) // 2))
    chroma = bytes([128]) * (320 * 240)  # no colour: U and V at their middle
    path.write_bytes(b"YUV4MPEG2 W640 H480 F30:1 Ip A1:1\nFRAME\n" + frame.tobytes() + chroma * 2)


@pytest.fixture(scope="module")
def browser(tmp_path_factory, mnist_dir):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed")
    from selenium.webdriver.chrome.service import Service

    video = tmp_path_factory.mktemp("camera") / "number.y4m"
    camera_video(video, mnist_dir)
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
        # a camera that shows a video file, lent without asking
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
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


def api(page_url: str, path: str, payload: dict) -> dict:
    request = urllib.request.Request(
        page_url + path.lstrip("/"),
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def screenshot(browser, tmp_path, name: str) -> None:
    shot = tmp_path / f"{name}.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000  # a blank page compresses to far less
    folder = os.environ.get("SCRATCHCNN_SCREENSHOTS")
    if folder:
        shutil.copy(shot, Path(folder) / f"page-{name}.png")


def open_tab(browser, name: str) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, f'button[data-tab="{name}"]').click()
    assert browser.find_element(By.ID, f"tab-{name}").is_displayed()


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
    answer = api(page_url, "api/predict", {"image": image})
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

    # The explanation and the robustness view follow on their own; they show the API's numbers.
    pixels = answer["input"]
    explained = wait_until(lambda: browser.execute_script("return window.scratchcnn.explain"))
    expected = api(page_url, "api/explain", {"pixels": pixels, "class": 7})
    assert explained["class"] == 7
    assert explained["saliency"] == expected["saliency"]
    masks = [m["mask"] for m in expected["pool_masks"]]
    assert [m["mask"] for m in explained["pool_masks"]] == masks
    assert len(browser.find_elements(By.CSS_SELECTOR, "#gradcam canvas")) == 2
    assert len(browser.find_elements(By.CSS_SELECTOR, "#masks canvas")) == 2 * 2
    robust = wait_until(lambda: browser.execute_script("return window.scratchcnn.transform"))
    assert browser.find_element(By.ID, "rob-answer").text.endswith(robust["prediction"])
    screenshot(browser, tmp_path, "draw")

    # One SGD step on the digit, said to be a 1: the page shows the loss before and after.
    browser.execute_script("document.getElementById('step-label').value = '1'")
    browser.find_element(By.ID, "step-run").click()
    step = wait_until(lambda: browser.execute_script("return window.scratchcnn.step"))
    same = api(page_url, "api/step", {"pixels": pixels, "label": 1, "lr": 0.1})
    assert step["loss"] == pytest.approx(same["loss"], rel=1e-6)
    assert step["loss_after"] < step["loss"]
    assert f"{step['loss']:.4f}" in browser.find_element(By.ID, "step-loss").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#step-layers tr")
    assert len(rows) == 1 + len(step["layers"]) == 1 + 2 + 1  # header, two convs, the dense

    open_tab(browser, "inside")
    with urllib.request.urlopen(page_url + "api/model", timeout=20) as response:
        layers = json.load(response)["layers"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#layer-table tr")) == 1 + len(layers)
    screenshot(browser, tmp_path, "inside")
    open_tab(browser, "draw")
    browser.find_element(By.ID, "clear").click()
    assert browser.find_element(By.ID, "prediction").text == "?"


def test_upload_a_photo_of_a_whole_number(page_url, browser, tmp_path, mnist_dir):
    from selenium.webdriver.common.by import By

    images, labels = load("mnist", "test", mnist_dir)
    wanted = [3, 0, 7]
    digits = [images[np.flatnonzero(labels == d)[1]] for d in wanted]
    photo = tmp_path / "number.png"
    photo.write_bytes(number_photo([digits], seed=4))
    browser.get(page_url)
    wait_until(lambda: browser.execute_script("return document.body.dataset.ready === '1'"))
    browser.find_element(By.ID, "number-mode").click()
    browser.find_element(By.ID, "upload").send_keys(str(photo))
    reading = wait_until(lambda: browser.execute_script("return window.scratchcnn.reading"))
    expected = api(
        page_url,
        "api/predict",
        {
            "image": "data:image/png;base64," + base64.b64encode(photo.read_bytes()).decode(),
            "number": True,
        },
    )
    assert reading == expected
    assert browser.find_element(By.ID, "number-text").text == " / ".join(
        row["text"] for row in reading["rows"]
    )
    assert len(reading["rows"]) == 1 and len(reading["rows"][0]["digits"]) == 3

    # The same photo as a scanned PDF: read by the server, which sends the page back as a PNG
    # (a browser draws no PDF), drawn with its boxes; then read as one digit, drawn on the pad.
    scan = tmp_path / "number.pdf"
    Image.open(photo).convert("RGB").save(scan, format="PDF", resolution=150)
    browser.execute_script(
        "window.scratchcnn.reading = null;"
        "const c = document.getElementById('number-canvas');"
        "c.getContext('2d').clearRect(0, 0, c.width, c.height);"
    )
    browser.find_element(By.ID, "upload").send_keys(str(scan))
    from_pdf = wait_until(lambda: browser.execute_script("return window.scratchcnn.reading"))
    assert [row["text"] for row in from_pdf["rows"]] == [row["text"] for row in reading["rows"]]
    assert browser.find_element(By.ID, "number-text").text == from_pdf["rows"][0]["text"]
    assert from_pdf["page"].startswith("data:image/png;base64,")
    assert wait_until(lambda: dark_pixels(browser, "number-canvas") > 500)  # the page, boxed
    assert wait_until(lambda: dark_pixels(browser, "pad") > 500)  # and on the pad
    screenshot(browser, tmp_path, "read-pdf")
    browser.find_element(By.ID, "clear").click()
    assert dark_pixels(browser, "pad") == 0
    browser.find_element(By.ID, "number-mode").click()  # one digit
    browser.execute_script("window.scratchcnn.lastResult = null")
    browser.find_element(By.ID, "upload").send_keys(str(scan))
    assert wait_until(lambda: browser.execute_script("return window.scratchcnn.lastResult"))
    assert wait_until(lambda: dark_pixels(browser, "pad") > 500)  # the page, on the pad


def dark_pixels(browser, canvas_id: str) -> int:
    """How many of a canvas's pixels are drawn and dark (not its white or empty background)."""
    return browser.execute_script(
        "const c = document.getElementById(arguments[0]);"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0;"
        "for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && d[i] < 128) n++;"
        "return n;",
        canvas_id,
    )


def test_page_through_a_scan_of_several_pages(page_url, browser, tmp_path, mnist_dir):
    # Three pages, one number each: the page reads the first, says "page 1 of 3", and Next page
    # and Previous page read the others, as the API reads them, with their pictures on the pad.
    from selenium.webdriver.common.by import By

    images, labels = load("mnist", "test", mnist_dir)
    numbers = [[4, 2], [7, 1, 9], [5, 8]]
    sheets = [
        Image.open(
            io.BytesIO(number_photo([[images[np.flatnonzero(labels == d)[2]] for d in n]], seed=i))
        )
        for i, n in enumerate(numbers)
    ]
    scan = tmp_path / "three-pages.pdf"
    sheets[0].convert("RGB").save(
        scan, format="PDF", resolution=150, save_all=True,
        append_images=[sheet.convert("RGB") for sheet in sheets[1:]],
    )  # fmt: skip
    url = "data:application/pdf;base64," + base64.b64encode(scan.read_bytes()).decode()
    expected = [
        api(page_url, "api/predict", {"image": url, "number": True, "page_number": k})
        for k in (1, 2, 3)
    ]
    browser.get(page_url)
    wait_until(lambda: browser.execute_script("return document.body.dataset.ready === '1'"))
    pager, page = browser.find_element(By.ID, "pdf-pager"), browser.find_element(By.ID, "pdf-page")
    assert not pager.is_displayed()
    browser.find_element(By.ID, "number-mode").click()
    browser.find_element(By.ID, "upload").send_keys(str(scan))

    def reading_of_page(k: int) -> dict:
        reading = wait_until(
            lambda: browser.execute_script(
                "const r = window.scratchcnn.reading;"
                "return r && r.page_number === arguments[0] ? r : null",
                k,
            )
        )
        assert reading == expected[k - 1]
        assert wait_until(lambda: page.text == f"page {k} of 3")
        text = " / ".join(row["text"] for row in reading["rows"])
        assert browser.find_element(By.ID, "number-text").text == text
        assert wait_until(lambda: dark_pixels(browser, "pad") > 200)  # the page, on the pad
        return reading

    reading_of_page(1)
    assert pager.is_displayed()
    prev, next_ = browser.find_element(By.ID, "pdf-prev"), browser.find_element(By.ID, "pdf-next")
    assert not prev.is_enabled() and next_.is_enabled()
    next_.click()
    reading_of_page(2)
    next_.click()
    reading_of_page(3)
    assert prev.is_enabled() and not next_.is_enabled()
    screenshot(browser, tmp_path, "pdf-page-3")
    prev.click()
    reading_of_page(2)
    browser.find_element(By.ID, "clear").click()  # the pad is a drawing again: no pages
    assert not pager.is_displayed()

    # One digit at a time: the same pager, over /api/predict's one-digit answers.
    browser.find_element(By.ID, "number-mode").click()
    browser.execute_script("window.scratchcnn.lastResult = null")
    browser.find_element(By.ID, "upload").send_keys(str(scan))
    wait_until(lambda: page.text == "page 1 of 3")
    browser.find_element(By.ID, "pdf-next").click()
    second = wait_until(
        lambda: browser.execute_script(
            "const r = window.scratchcnn.lastResult; return r && r.page_number === 2 ? r : null"
        )
    )
    one_digit = api(page_url, "api/predict", {"image": url, "page_number": 2})
    assert second["probabilities"] == pytest.approx(one_digit["probabilities"], abs=1e-9)


def test_read_a_number_held_up_to_the_camera(page_url, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(page_url)
    wait_until(lambda: browser.execute_script("return document.body.dataset.ready === '1'"))
    assert browser.find_element(By.ID, "camera").get_attribute("hidden") is not None
    browser.find_element(By.ID, "number-mode").click()
    browser.find_element(By.ID, "camera-start").click()
    wait_until(lambda: browser.execute_script(
        "return document.getElementById('camera-video').videoWidth"
    ))  # fmt: skip
    assert browser.find_element(By.ID, "camera").is_displayed()
    browser.find_element(By.ID, "camera-read").click()
    reading = wait_until(lambda: browser.execute_script("return window.scratchcnn.reading"))
    assert browser.execute_script("return window.scratchcnn.cameraFrames") == 1
    assert [d["digit"] for row in reading["rows"] for d in row["digits"]] == [
        str(d) for d in CAMERA_DIGITS
    ]
    assert browser.find_element(By.ID, "number-text").text == reading["rows"][0]["text"]
    screenshot(browser, tmp_path, "camera")
    browser.find_element(By.ID, "camera-stop").click()
    assert not browser.find_element(By.ID, "camera").is_displayed()
    assert browser.execute_script(
        "return document.getElementById('camera-video').srcObject"
    ) is None  # fmt: skip
    # A camera the user refuses (or that is missing): one clear line, and the page goes on.
    browser.execute_script(
        "navigator.mediaDevices.getUserMedia = () =>"
        " Promise.reject(new DOMException('refused', 'NotAllowedError'));"
    )
    browser.find_element(By.ID, "camera-start").click()
    status = wait_until(lambda: browser.find_element(By.ID, "status").text)
    assert status == "The camera did not start (NotAllowedError): upload a photo instead."
    assert not browser.find_element(By.ID, "camera").is_displayed()


def test_train_a_tiny_net_in_the_page_and_use_it(page_url, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(page_url)
    wait_until(lambda: browser.execute_script("return document.body.dataset.ready === '1'"))
    open_tab(browser, "data")
    wait_until(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#data-averages canvas")) == 10)
    assert "60,000 training images" in browser.find_element(By.ID, "data-status").text
    screenshot(browser, tmp_path, "data")

    open_tab(browser, "train")
    images = browser.find_element(By.ID, "train-images")
    images.clear()
    images.send_keys("20000")
    browser.find_element(By.ID, "train-start").click()
    wait_until(lambda: browser.find_element(By.ID, "train-stop").is_enabled(), 10)

    def finished():
        events = browser.execute_script("return window.scratchcnn.train")
        return events if events and events[-1]["kind"] in ("done", "failed") else None

    events = wait_until(finished, 120)
    assert events[-1]["kind"] == "done", events[-1]
    kinds = [e["kind"] for e in events]
    # The curve moved while it trained, not once at the end: points arrived within the first
    # epoch (how many depends on the machine's speed: one every 0.5 s).
    first_epoch = kinds[: kinds.index("epoch")]
    assert first_epoch.count("progress") + first_epoch.count("probe") >= 2, kinds
    assert kinds.count("progress") >= 2, kinds
    probes = [e["val_accuracy"] for e in events if e["kind"] in ("probe", "epoch")]
    assert probes[-1] > max(probes[0], 0.85)
    status = browser.find_element(By.ID, "train-status").text
    assert status.startswith("done") and f"{100 * probes[-1]:.2f}%" in status
    assert len(browser.find_elements(By.CSS_SELECTOR, "#train-filters canvas")) == 8
    guesses = browser.find_elements(By.CSS_SELECTOR, "#train-grid .guess")
    assert guesses and all(g.text != "?" for g in guesses)
    screenshot(browser, tmp_path, "train")

    browser.find_element(By.ID, "train-use").click()
    wait_until(
        lambda: (
            "tiny" in browser.find_element(By.ID, "model-line").text
            or "seed" in browser.find_element(By.ID, "model-line").text
        )
    )
    # The served model is now the one trained here: the API says so too.
    with urllib.request.urlopen(page_url + "api/model", timeout=20) as response:
        served = json.load(response)
    assert served["num_parameters"] < 20_000
    open_tab(browser, "evaluate")
    browser.find_element(By.ID, "evaluate-run").click()
    wait_until(lambda: "accuracy" in browser.find_element(By.ID, "evaluate-status").text, 120)
    cells = browser.find_elements(By.CSS_SELECTOR, "#confusion tr")
    assert len(cells) == 11
    total = sum(
        int(td.text) for row in cells[1:] for td in row.find_elements(By.TAG_NAME, "td")[1:]
    )
    assert total == 10_000
    assert browser.find_elements(By.CSS_SELECTOR, "#mistakes button")
    screenshot(browser, tmp_path, "evaluate")


def test_teach_it_mirrored_digits_in_the_page_and_go_back(page_url, browser, mnist_dir, tmp_path):
    # The user's digits arrive the way the Evaluate tab's mistakes do (inspect(pixels)), are
    # labelled and added; "Teach" tunes the served model on them and the page says by how much.
    from selenium.webdriver.common.by import By

    images, labels = load("mnist", "test", mnist_dir)
    pick = np.flatnonzero(np.isin(labels, (2, 7)))[:16]
    browser.get(page_url)
    wait_until(lambda: browser.execute_script("return document.body.dataset.ready === '1'"))
    assert not browser.find_element(By.ID, "tune-run").is_enabled()
    for image, label in zip(images[pick], labels[pick], strict=True):
        browser.execute_script("return inspect(arguments[0])", image[:, ::-1].tolist())
        browser.execute_script(f"document.getElementById('tune-label').value = '{label}'")
        browser.find_element(By.ID, "tune-add").click()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#tune-examples canvas")) == 16
    count = browser.find_element(By.ID, "tune-count").text
    assert count.startswith("16 example(s)") and "\u00d7 2" in count and "\u00d7 7" in count
    browser.find_element(By.ID, "tune-run").click()
    answer = wait_until(lambda: browser.execute_script("return window.scratchcnn.tune"), 180)
    report = answer["report"]
    assert report["trained_on"] + report["held_out"] == 16 and report["held_out"] == 4
    status = browser.find_element(By.ID, "tune-status").text
    after = report["after"]["held_out"]
    assert f"{100 * after:.1f}% after" in status, status
    wait_until(lambda: "taught your handwriting" in browser.find_element(By.ID, "model-line").text)
    assert browser.find_element(By.ID, "tune-download").is_displayed()
    browser.execute_script("document.getElementById('tune-panel').scrollIntoView()")
    screenshot(browser, tmp_path, "tune")
    browser.find_element(By.ID, "tune-undo").click()
    wait_until(
        lambda: (
            "taught" not in browser.find_element(By.ID, "model-line").text
            and not browser.find_element(By.ID, "tune-download").is_displayed()
        )
    )
    with urllib.request.urlopen(page_url + "api/model", timeout=20) as response:
        assert json.load(response)["tuned"] is False
