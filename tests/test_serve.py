"""`python -m mnist_tf.serve` over HTTP: the page, POST /predict, and every refusal."""

import builtins
import http.client
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_usage_error, run_module, synthetic_digits
from PIL import Image, ImageDraw

from mnist_tf.config import TrainConfig
from mnist_tf.data import pipeline, preprocess
from mnist_tf.inference import serve
from mnist_tf.training import trainer

REPO = Path(__file__).resolve().parents[1]


def train_tiny(workdir, images, labels, steps=60):
    """A small MLP trained in-process on arrays; returns the workdir."""
    examples = pipeline.from_arrays(images, labels)
    splits = pipeline.Splits(train=examples, validation=None, test=examples,
                             num_train=len(labels), num_validation=0, num_test=len(labels))
    config = TrainConfig(hidden_sizes=(32,), batch_size=50, train_steps=steps,
                         learning_rate=3e-3, validation_size=0, log_every_steps=1000,
                         checkpoint_every_steps=10_000, eval_batch_size=500)
    trainer.train_and_evaluate(config, str(workdir), splits=splits, allow_download=False,
                               log=lambda _: None)
    return str(workdir)


def start_server(workdir, host="127.0.0.1"):
    """Serves the workdir's model on a free port in a thread; returns the server."""
    server = serve.make_server(serve.load_classifier(workdir), host=host, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    images, labels = synthetic_digits(500, seed=3)
    return train_tiny(tmp_path_factory.mktemp("serve_run"), images, labels)


@pytest.fixture(scope="module")
def server(workdir):
    server = start_server(workdir)
    yield server
    server.shutdown()
    server.server_close()


def request(server, method, path, body=None, headers=None):
    """(status, headers, body bytes) of one request on a fresh connection."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def drawing(kind="png", size=(280, 280), ink="white", paper="black", mode="RGB"):
    """A '1'-like vertical stroke, as bytes of a PNG or JPEG."""
    image = Image.new(mode, size, paper)
    draw = ImageDraw.Draw(image)
    width, height = size
    draw.line([(width // 2, height // 5), (width // 2 + 8, 4 * height // 5)], fill=ink,
              width=max(2, width // 14))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if kind == "jpeg" else "PNG")
    return buffer.getvalue()


def png_declaring(width, height):
    """A tiny valid PNG (a 1x1 image's data) whose header declares width x height pixels."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr:ihdr + 17]))
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def assert_answers(server):
    """The server still classifies a good drawing."""
    status, _, body = request(server, "POST", "/predict", drawing())
    assert status == 200, body
    assert set(json.loads(body)) == {"class", "probabilities"}


def assert_one_line_error(status, headers, body, expected_status, *fragments):
    assert status == expected_status, body
    assert headers["Content-Type"] == "application/json"
    text = body.decode()
    assert text.endswith("\n") and "\n" not in text[:-1], text
    error = json.loads(text)
    assert list(error) == ["error"] and error["error"], error
    for fragment in fragments:
        assert fragment in error["error"], error


def test_predict_returns_the_class_and_ten_probabilities(server, workdir):
    classifier = serve.load_classifier(workdir)
    for kind, mode, ink, paper in (("png", "RGB", "white", "black"),
                                   ("png", "L", "black", "white"),
                                   ("png", "RGBA", (255, 255, 255, 255), (0, 0, 0, 0)),
                                   ("jpeg", "RGB", "black", "white")):
        body = drawing(kind, mode=mode, ink=ink, paper=paper)
        status, headers, answer = request(server, "POST", "/predict", body)
        assert status == 200, answer
        assert headers["Content-Type"] == "application/json"
        answer = json.loads(answer)
        probabilities = answer["probabilities"]
        assert len(probabilities) == 10 and abs(sum(probabilities) - 1) < 1e-5
        assert answer["class"] == int(np.argmax(probabilities))
        # The predict tool's preparation and model, called directly, agree.
        digit = preprocess.prepare_image(Image.open(io.BytesIO(body)))
        expected = classifier.predict_fn(preprocess.to_model_input(digit[None])).numpy()[0]
        np.testing.assert_allclose(probabilities, expected, atol=1e-6)


def test_the_drawing_is_centred_and_scaled_as_mnist_digits_are(server):
    # The same stroke, small in a corner or large in the middle: one digit.
    small = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(small).line([(20, 20), (24, 80)], fill=255, width=6)
    large = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(large).line([(130, 40), (142, 220)], fill=255, width=18)
    answers = []
    for image in (small, large):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        answers.append(json.loads(request(server, "POST", "/predict", buffer.getvalue())[2]))
    assert answers[0]["class"] == answers[1]["class"]
    np.testing.assert_allclose(answers[0]["probabilities"], answers[1]["probabilities"],
                               atol=0.05)


@pytest.mark.parametrize("method, path, body, status, fragment", [
    ("POST", "/predict", b"not an image at all", 400, "not a PNG or JPEG"),
    ("POST", "/predict", b"GIF89a" + bytes(40), 400, "not a PNG or JPEG"),
    ("POST", "/predict", drawing()[:200], 400, "damaged"),
    ("POST", "/predict", b"", 400, "empty body"),
    ("POST", "/predict", png_declaring(5000, 5000), 413, "5000x5000"),
    ("POST", "/predict", png_declaring(30000, 30000), 413, "16,777,216 pixels"),
    ("POST", "/predict", png_declaring(1, 2**31 - 1), 413, "16,777,216 pixels"),
    ("POST", "/predict", drawing(ink="black"), 400, "no ink"),
    ("GET", "/predict", None, 405, "POST"),
    ("PUT", "/predict", b"x", 405, "POST"),
    ("DELETE", "/", None, 405, "GET"),
    ("POST", "/", drawing(), 405, "/predict"),
    ("GET", "/nothing", None, 404, "/nothing"),
    ("POST", "/predict/extra", drawing(), 404, "/predict"),
])
def test_bad_requests_get_one_line_json_errors_and_the_server_serves_on(
        server, method, path, body, status, fragment):
    assert_one_line_error(*request(server, method, path, body), status, fragment)
    assert_answers(server)


def raw_exchange(server, head: bytes, body: bytes = b"") -> bytes:
    """Sends raw request bytes and returns everything the server answers until it closes."""
    with socket.create_connection(server.server_address[:2], timeout=10) as connection:
        connection.sendall(head + body)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def split_response(raw: bytes):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("expect", [False, True])
def test_a_body_over_1_mb_is_refused_before_it_is_read(server, expect):
    # Only the headers and a few bytes are sent: the answer comes from the
    # declared length, without waiting for (or reading) the rest.
    head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 50000000\r\n" + (b"Expect: 100-continue\r\n" if expect else b"")
            + b"\r\n")
    raw = raw_exchange(server, head, b"" if expect else drawing()[:100])
    assert not raw.startswith(b"HTTP/1.1 100")  # No invitation to send 50 MB.
    status, headers, body = split_response(raw)
    assert_one_line_error(status, headers, body, 413, "50,000,000 bytes", "1,000,000")
    assert_answers(server)


def test_a_body_just_under_the_limit_is_read(server):
    body = drawing() + bytes(serve.MAX_BODY_BYTES - len(drawing()))  # PNG ignores the tail.
    status, _, answer = request(server, "POST", "/predict", body)
    assert status == 200, answer


def test_a_body_that_stops_arriving_times_out_and_the_server_serves_on(server, monkeypatch):
    monkeypatch.setattr(serve.Handler, "timeout", 0.5)
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
    raw = raw_exchange(server, head, drawing()[:100])
    assert_one_line_error(*split_response(raw), 408, "5000 bytes", "0.5 s")
    monkeypatch.undo()
    assert_answers(server)


def test_a_failure_inside_is_a_one_line_500_and_the_server_serves_on(server, monkeypatch,
                                                                      capsys):
    def broken(body):
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(server, "classifier", types.SimpleNamespace(predict=broken))
    assert_one_line_error(*request(server, "POST", "/predict", drawing()), 500, "internal error")
    assert "broken on purpose" in capsys.readouterr().err  # The traceback, for the operator.
    monkeypatch.undo()
    assert_answers(server)


def test_a_request_without_content_length_is_refused(server):
    raw = raw_exchange(server, b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert_one_line_error(*split_response(raw), 411, "Content-Length")


def test_get_serves_the_page_from_package_data(server):
    status, headers, body = request(server, "GET", "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    page = (REPO / "mnist_tf" / "inference" / "draw.html").read_bytes()
    assert body == page
    assert b"<canvas" in body and b'"/predict"' in body
    assert request(server, "GET", "/index.html")[2] == page


def test_paths_never_name_files(server, monkeypatch):
    opened = []
    real_open = builtins.open
    real_os_open = os.open

    def spy_open(file, *args, **kwargs):
        opened.append(file)
        return real_open(file, *args, **kwargs)

    def spy_os_open(path, *args, **kwargs):
        opened.append(path)
        return real_os_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(io, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    for path in ("/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd",
                 "/draw.html", "/inference/draw.html", "/mnist_tf/inference/draw.html",
                 "/serve.py", "/..%2f..%2fetc%2fpasswd"):
        status, headers, body = request(server, "GET", path)
        assert_one_line_error(status, headers, body, 404, "no such path")
        assert b"root:" not in body
    monkeypatch.undo()
    assert opened == []


def test_binds_loopback_unless_told_otherwise(workdir):
    server = serve.make_server(serve.load_classifier(workdir), port=0)
    try:
        assert server.server_address[0] == "127.0.0.1"
        assert serve.url_of(server).startswith("http://127.0.0.1:")
    finally:
        server.server_close()


def test_the_command_serves_on_loopback_and_prints_the_url(workdir):
    env = dict(os.environ)
    env.pop("MNIST_TF_VERBOSE", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "mnist_tf.serve", f"--workdir={workdir}", "--port=0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        assert lines[0].startswith("Serving "), (lines, process.stderr.read())
        url = lines[1].split()[4]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/"), lines
        host, port = url[len("http://"):-1].split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("POST", "/predict", drawing())
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_usage_errors_are_one_line(tmp_path, workdir):
    assert_usage_error(run_module("mnist_tf.serve"), "--workdir")
    assert_usage_error(run_module("mnist_tf.serve", f"--workdir={tmp_path / 'none'}"),
                       str(tmp_path / "none"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_usage_error(run_module("mnist_tf.serve", f"--workdir={workdir}", f"--port={port}"),
                           f"--port={port}", "cannot listen")
