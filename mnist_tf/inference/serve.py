"""A draw-a-digit page and `POST /predict`, served by the standard library's HTTP server.

The library half of `python -m mnist_tf.serve`. Two routes, nothing else:

- `GET /` (or `/index.html`): the page (`draw.html`, shipped in the package),
  where a canvas drawing is sent to `/predict` as PNG while it is drawn and
  the ten probabilities are shown as bars.
- `POST /predict` with PNG or JPEG bytes: `{"class": k, "probabilities": [10
  floats]}`. The image is prepared as an MNIST digit exactly as
  `python -m mnist_tf.predict` prepares a file (`preprocess.prepare_image`:
  ink found, cropped, fitted to 20x20, centred by mass in 28x28), so strokes
  drawn anywhere on the canvas, at any size, reach the model as MNIST digits.

Every refusal is a 4xx with a one-line JSON body `{"error": "..."}`, and the
server goes on serving: a body over `MAX_BODY_BYTES` (413, judged by its
Content-Length before any of it is read), a body that is not a PNG or JPEG
(400), an image declaring more than `MAX_PIXELS` pixels (413, judged from its
header before any pixel is decoded: a small file can declare a huge image), an
image with no ink (400), a wrong method (405) or path (404). No request names
a file: the page is the one file read, from package data, at start-up.

Python's `http.server` is enough for a loopback demo and adds no dependency;
a public deployment belongs behind a production server.
"""

from __future__ import annotations

import dataclasses
import io
import json
import socket
import sys
import threading
import traceback
import warnings
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import urlsplit

import numpy as np

from mnist_tf.constants import NUM_PIXELS

MAX_BODY_BYTES = 1_000_000  # 1 MB: a drawn 280x280 canvas is a few KB.
MAX_PIXELS = 4096 * 4096  # Declared width x height; decoding more costs gigabytes.
ACCEPTED_FORMATS = ("PNG", "JPEG")
PAGE_NAME = "draw.html"
PAGE_PATHS = ("/", "/index.html")
PREDICT_PATH = "/predict"
# A client that stops sending mid-request holds a thread no longer than this.
REQUEST_TIMEOUT_SECONDS = 10


class RequestError(Exception):
    """A request the server refuses (or fails): an HTTP status and a one-line reason."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def read_page() -> bytes:
    """The draw-a-digit page's bytes, from the package's data (the only file served)."""
    return resources.files("mnist_tf.inference").joinpath(PAGE_NAME).read_bytes()


def decode_image(body: bytes):
    """Opens PNG or JPEG bytes as a Pillow image, refusing huge ones before decoding.

    Args:
        body: the request body.

    Returns:
        A loaded `PIL.Image.Image`, its EXIF orientation applied.

    Raises:
        RequestError: 400 if the bytes are not a PNG or JPEG (or are damaged),
            413 if the image declares more than `MAX_PIXELS` pixels.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not body:
        raise RequestError(HTTPStatus.BAD_REQUEST,
                           "empty body; POST the bytes of a PNG or JPEG image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Reads the header only: the declared size is known before decoding.
            image = Image.open(io.BytesIO(body), formats=ACCEPTED_FORMATS)
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise RequestError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"the image declares {width}x{height} pixels, over the limit of "
                    f"{MAX_PIXELS:,} pixels; send a smaller image")
            image.load()
            return ImageOps.exif_transpose(image)
    except UnidentifiedImageError:
        raise RequestError(HTTPStatus.BAD_REQUEST,
                           "not a PNG or JPEG image; POST the bytes of one") from None
    except Image.DecompressionBombError:  # Pillow's own, stricter-than-ours limit, at open.
        raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           f"the image declares more than {Image.MAX_IMAGE_PIXELS * 2:,} "
                           f"pixels, over the limit of {MAX_PIXELS:,} pixels; send a smaller "
                           "image") from None
    except (OSError, ValueError, SyntaxError) as e:  # Truncated or corrupt data.
        raise RequestError(HTTPStatus.BAD_REQUEST,
                           f"damaged or unsupported image ({e})") from None


@dataclasses.dataclass(frozen=True)
class Classifier:
    """A restored model and its traced predict function, shared by every request.

    Attributes:
        predict_fn: float32 [N, 784] in [0, 1] -> probabilities [N, 10]
            (`inference.restore.make_predict_fn`).
        description: the checkpoint, as the tools print it.
    """

    predict_fn: object
    description: str
    # TensorFlow runs one call at a time well on a small machine, and the lock
    # bounds the memory of decoding to one image at a time.
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def predict(self, body: bytes) -> dict:
        """Classifies PNG or JPEG bytes: `{"class": k, "probabilities": [10 floats]}`.

        Raises:
            RequestError: 400/413 for bytes that are not a usable image
                (`decode_image`), 400 for an image with no ink.
        """
        from mnist_tf.data import preprocess

        with self.lock:
            image = decode_image(body)
            try:
                digit = preprocess.prepare_image(image)
            except (preprocess.BlankImageError, preprocess.PixelValueError) as e:
                raise RequestError(HTTPStatus.BAD_REQUEST, str(e)) from None
            probabilities = self.predict_fn(preprocess.to_model_input(digit[None])).numpy()[0]
        probabilities = [float(p) for p in probabilities]
        return {"class": int(np.argmax(probabilities)), "probabilities": probabilities}


def load_classifier(workdir: str, checkpoint: str | None = None) -> Classifier:
    """Restores the workdir's model once and traces its predict function.

    Args:
        workdir: a training workdir.
        checkpoint: "latest" or None, "best", or a checkpoint prefix
            (`inference.restore.load_model`).

    Raises:
        UserError: if the workdir holds no run; CheckpointError (a UserError)
            if no checkpoint can be restored.
    """
    from mnist_tf.inference.restore import load_model, make_predict_fn

    loaded = load_model(workdir, checkpoint)
    predict_fn = make_predict_fn(loaded.model)
    predict_fn(np.zeros((1, NUM_PIXELS), np.float32))  # Traced now, not on the first drawing.
    return Classifier(predict_fn, loaded.describe())


class Handler(BaseHTTPRequestHandler):
    """Answers `GET /` with the page and `POST /predict` with JSON; refuses the rest."""

    protocol_version = "HTTP/1.1"  # Keep-alive: the page posts many drawings.
    timeout = REQUEST_TIMEOUT_SECONDS
    server_version = "mnist_tf"
    server: DigitServer

    @property
    def route(self) -> str:
        """The request's path without its query string (`/predict?x=1` is `/predict`)."""
        return urlsplit(self.path).path

    def do_GET(self) -> None:
        """The page for `/` and `/index.html`; 405 for `/predict`, 404 otherwise."""
        if self.route in PAGE_PATHS:
            self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        elif self.route == PREDICT_PATH:
            self._refuse(RequestError(HTTPStatus.METHOD_NOT_ALLOWED,
                                      f"{PREDICT_PATH} takes POST with image bytes"),
                         allow="POST")
        else:
            self._refuse(_not_found(self.path))

    def do_HEAD(self) -> None:
        """As GET, without the body (the status and headers only)."""
        self.do_GET()

    def do_POST(self) -> None:
        """Classifies the body for `/predict`; refuses other paths and bodies."""
        try:
            if self.route != PREDICT_PATH:
                self.close_connection = True  # The body is left unread.
                if self.route in PAGE_PATHS:
                    raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED,
                                       f"{self.route} takes GET; POST images to {PREDICT_PATH}")
                raise _not_found(self.path)
            answer = self.server.classifier.predict(self._read_body())
        except RequestError as e:
            self._refuse(e, allow="GET, HEAD" if self.route in PAGE_PATHS else None)
            return
        except Exception:  # A bug: its traceback in the terminal, one line to the client.
            traceback.print_exc()
            self._refuse(RequestError(HTTPStatus.INTERNAL_SERVER_ERROR,
                                      "internal error; the server's terminal shows it"))
            return
        self._send(HTTPStatus.OK, json.dumps(answer).encode(), "application/json")

    def do_PUT(self) -> None:
        """405 on a known path, 404 otherwise."""
        self._wrong_method()

    do_DELETE = do_PATCH = do_OPTIONS = do_PUT

    def handle_expect_100(self) -> bool:
        """Refuses an oversized body before the client sends it (`Expect: 100-continue`)."""
        try:
            if self.route == PREDICT_PATH and self.command == "POST":
                self._body_length()
        except RequestError as e:
            self.close_connection = True
            self._refuse(e)
            return False
        return super().handle_expect_100()

    def _wrong_method(self) -> None:
        self.close_connection = True
        if self.route == PREDICT_PATH:
            self._refuse(RequestError(HTTPStatus.METHOD_NOT_ALLOWED,
                                      f"{PREDICT_PATH} takes POST"), allow="POST")
        elif self.route in PAGE_PATHS:
            self._refuse(RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.route} takes GET"),
                         allow="GET, HEAD")
        else:
            self._refuse(_not_found(self.path))

    def _body_length(self) -> int:
        """The declared Content-Length, checked against `MAX_BODY_BYTES` before reading."""
        declared = self.headers.get("Content-Length")
        if declared is None:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED,
                               "no Content-Length; send the image bytes with their length")
        try:
            length = int(declared)
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST,
                               f"Content-Length {declared[:40]!r} is not a number") from None
        if length < 0:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"Content-Length {length} is negative")
        if length > MAX_BODY_BYTES:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"body of {length:,} bytes is over the limit of "
                               f"{MAX_BODY_BYTES:,}; send a smaller image")
        return length

    def _read_body(self) -> bytes:
        try:
            length = self._body_length()
        except RequestError:
            self.close_connection = True  # Its body is never read.
            raise
        try:
            body = self.rfile.read(length)
        except OSError:  # The client stopped sending (the timeout) or went away.
            self.close_connection = True
            raise RequestError(HTTPStatus.REQUEST_TIMEOUT,
                               f"the body's {length} bytes did not arrive within "
                               f"{self.timeout} s") from None
        if len(body) < length:
            self.close_connection = True
            raise RequestError(HTTPStatus.BAD_REQUEST,
                               f"body ended after {len(body)} of {length} bytes")
        return body

    def _refuse(self, error: RequestError, allow: str | None = None) -> None:
        # Closed after a refusal: a body left unread must not be read as the next request.
        self.close_connection = True
        body = json.dumps({"error": str(error)}).encode() + b"\n"
        headers = {"Allow": allow} if allow else {}
        self._send(error.status, body, "application/json", headers)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str,
              headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        """Quiet: the terminal shows the URL, not a line per drawing."""


def _not_found(path: str) -> RequestError:
    shown = path if len(path) <= 80 else path[:77] + "..."
    return RequestError(HTTPStatus.NOT_FOUND,
                        f"no such path {shown!r}; the page is at / and the endpoint at "
                        f"{PREDICT_PATH}")


class DigitServer(ThreadingHTTPServer):
    """The threading HTTP server, holding what every request shares.

    Attributes:
        classifier: the model (`load_classifier`); set before `serve_forever`.
        page: the page's bytes, read once from package data.
    """

    daemon_threads = True  # A stuck client never holds up the exit.
    classifier: Classifier | None = None
    page: bytes = b""

    def handle_error(self, request, client_address) -> None:
        """Quiet for clients that went away or stalled; a traceback for anything else (a bug)."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _IPv6Server(DigitServer):
    address_family = socket.AF_INET6


def make_server(classifier: Classifier | None, host: str = "127.0.0.1",
                port: int = 8000) -> DigitServer:
    """Binds the server (port 0 picks a free one); `serve_forever()` then serves.

    Args:
        classifier: from `load_classifier`; None to bind first and set
            `server.classifier` before serving (a taken port is then
            reported before the model loads).
        host: the address to bind; loopback unless a caller asks for more.
        port: the TCP port.

    Raises:
        OSError: if the address cannot be bound (e.g. the port is taken).
    """
    server = (_IPv6Server if ":" in host else DigitServer)((host, port), Handler)
    server.classifier = classifier
    server.page = read_page()
    return server


def url_of(server: DigitServer) -> str:
    """The page's address, `http://HOST:PORT/` (IPv6 hosts bracketed)."""
    host, port = server.server_address[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/"
