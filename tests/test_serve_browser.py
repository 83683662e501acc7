"""The draw-a-digit page in a real headless Chromium: draw with the mouse, read the answer.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
JSON messages ended by a NUL byte, commands on its fd 3, answers on its fd 4),
so no websocket or browser-automation package is needed. Skips when Debian's
`chromium` is not installed (`apt-get install -y chromium`).
"""

import base64
import fcntl
import json
import math
import os
import select
import shutil
import subprocess
import time

import numpy as np
import pytest
from test_serve import request, start_server, train_tiny

from mnist_tf.data import pipeline, sources

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium for the browser test: "
                             "apt-get install -y chromium")
TIMEOUT_SECONDS = 20


class Browser:
    """A headless Chromium with one page, driven over the DevTools protocol on a pipe."""

    def __init__(self, profile_dir):
        to_browser, self._commands = os.pipe()
        self._answers, from_browser = os.pipe()

        def on_fds_3_and_4():  # In the child, before exec: its ends become fds 3 and 4.
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser, from_browser)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-dev-shm-usage",
             "--remote-debugging-pipe",
             f"--user-data-dir={profile_dir}", "--window-size=900,700", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=on_fds_3_and_4)
        os.close(to_browser)
        os.close(from_browser)
        self._next_id, self._buffer, self.session = 0, b"", None

    def call(self, method, **params):
        """Sends one command (to the page once attached) and returns its result."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while True:
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._answers], [], [], left)[0]:
                    raise TimeoutError(f"chromium did not answer {method}")
                chunk = os.read(self._answers, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium exited during {method}")
                self._buffer += chunk
            raw, _, self._buffer = self._buffer.partition(b"\0")
            answer = json.loads(raw)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def open(self, url):
        target = self.call("Target.createTarget", url=url)["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        bars = "document.getElementById('bars')"
        self.wait_for(f"document.readyState === 'complete' && !!{bars} && {bars}.children.length")

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression):
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page never made this true: {expression}")
            time.sleep(0.05)

    def drag(self, points, release=True):
        """A mouse stroke through `points` (page pixels), button held down."""
        mouse = "Input.dispatchMouseEvent"
        (x, y), rest = points[0], points[1:]
        self.call(mouse, type="mouseMoved", x=x, y=y)
        self.call(mouse, type="mousePressed", x=x, y=y, button="left", buttons=1, clickCount=1)
        for x, y in rest:
            self.call(mouse, type="mouseMoved", x=x, y=y, button="left", buttons=1)
        if release:
            self.call(mouse, type="mouseReleased", x=x, y=y, button="left", buttons=0,
                      clickCount=1)

    def swipe(self, points):
        """A finger stroke through `points` (page pixels)."""
        touch = "Input.dispatchTouchEvent"
        self.call(touch, type="touchStart", touchPoints=[{"x": points[0][0], "y": points[0][1]}])
        for x, y in points[1:]:
            self.call(touch, type="touchMove", touchPoints=[{"x": x, "y": y}])
        self.call(touch, type="touchEnd", touchPoints=[])

    def close(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self._commands)
        os.close(self._answers)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(server, trained on real MNIST?): a model on real MNIST when it is prepared here."""
    workdir = tmp_path_factory.mktemp("serve_browser_run")
    data_dir = sources.default_data_dir()
    real = sources.is_prepared(data_dir)
    if real:  # A few hundred steps: about 93 % on the test split.
        train = pipeline.load_splits(data_dir, validation_size=0).train
        images, labels = train.images.numpy()[:20_000], train.labels.numpy()[:20_000]
        train_tiny(workdir, images.reshape(-1, 28, 28), labels, steps=400)
    else:
        from conftest import synthetic_digits

        train_tiny(workdir, *synthetic_digits(500, seed=3))
    server = start_server(str(workdir))
    yield server, real
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(served, tmp_path_factory):
    from mnist_tf.inference.serve import url_of

    browser = Browser(tmp_path_factory.mktemp("chromium_profile"))
    try:
        browser.open(url_of(served[0]))
        yield browser
    finally:
        browser.close()


def canvas_points(browser, shape):
    """`shape`'s points, given in canvas fractions (0..1), in page pixels."""
    box = browser.evaluate("JSON.stringify(document.getElementById('canvas')"
                           ".getBoundingClientRect())")
    box = json.loads(box)
    return [(box["left"] + u * box["width"], box["top"] + v * box["height"]) for u, v in shape]


def shown_answer(browser):
    """Waits until the page shows the answer for its canvas; returns it and the canvas PNG."""
    answer = "document.getElementById('answer')"
    browser.wait_for(f"document.body.dataset.current === 'true' && {answer}.dataset.class !== ''")
    shown = json.loads(browser.evaluate(
        "JSON.stringify({class: Number(" + answer + ".dataset.class), "
        "text: " + answer + ".textContent, "
        "percents: [...Array(10).keys()].map(k => document.getElementById('p-' + k).textContent),"
        " png: document.getElementById('canvas').toDataURL('image/png')})"))
    png = base64.b64decode(shown["png"].split(",", 1)[1])
    return shown, png


VERTICAL_STROKE = [(0.5, 0.15 + 0.7 * t / 12) for t in range(13)]
OVAL = [(0.5 + 0.22 * math.sin(a), 0.5 - 0.34 * math.cos(a))
        for a in np.linspace(0, 2 * math.pi, 40)]


@pytest.mark.parametrize("shape, plausible", [(VERTICAL_STROKE, 1), (OVAL, 0)])
def test_a_digit_drawn_with_the_mouse_is_classified_on_the_page(
        browser, served, shape, plausible, tmp_path):
    server, real = served
    browser.evaluate("document.getElementById('clear').click()")
    browser.drag(canvas_points(browser, shape))
    shown, png = shown_answer(browser)
    # The page shows what the endpoint answers for the very same canvas.
    status, _, body = request(server, "POST", "/predict", png)
    assert status == 200, body
    answer = json.loads(body)
    assert shown["class"] == answer["class"] and shown["text"] == str(answer["class"])
    assert shown["percents"] == [f"{100 * p:.1f}%" for p in answer["probabilities"]]
    (tmp_path / "page.png").write_bytes(
        base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"]))
    if real:
        assert answer["class"] == plausible, answer
    # Clear empties the canvas and the answer.
    browser.evaluate("document.getElementById('clear').click()")
    assert browser.evaluate("document.getElementById('answer').dataset.class") == ""
    assert browser.evaluate("document.getElementById('p-0').textContent") == ""


def test_a_digit_drawn_with_a_finger_is_classified(browser, served):
    browser.evaluate("document.getElementById('clear').click()")
    browser.swipe(canvas_points(browser, VERTICAL_STROKE))
    shown, png = shown_answer(browser)
    answer = json.loads(request(served[0], "POST", "/predict", png)[2])
    assert shown["class"] == answer["class"]
    if served[1]:
        assert answer["class"] == 1, answer


def test_the_answer_follows_the_drawing_before_the_button_is_released(browser, served):
    browser.evaluate("document.getElementById('clear').click()")
    browser.drag(canvas_points(browser, VERTICAL_STROKE), release=False)
    first, _ = shown_answer(browser)  # Shown while the button is still down.
    for x, y in canvas_points(browser, OVAL[10:32]):  # The same stroke goes on.
        browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y, button="left",
                     buttons=1)
    browser.call("Input.dispatchMouseEvent", type="mouseReleased", x=x, y=y, button="left",
                 buttons=0, clickCount=1)
    second, png = shown_answer(browser)
    assert second["percents"] != first["percents"]  # Updated for the added stroke.
    assert second["class"] == json.loads(request(served[0], "POST", "/predict", png)[2])["class"]
