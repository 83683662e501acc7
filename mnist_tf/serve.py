"""Serve a draw-a-digit page: `python -m mnist_tf.serve --workdir=W [--port=8000] [--host=H]`.

Open the printed address, draw a digit and watch the ten probabilities. The
page and `POST /predict` (PNG or JPEG bytes -> `{"class": k, "probabilities":
[...]}`) are served by `mnist_tf.inference.serve`; docs/serve.md has the details.
Binds 127.0.0.1 (this machine only) unless --host says otherwise. Ctrl-C stops it.
"""

from __future__ import annotations

from absl import flags, logging

from mnist_tf import cli  # cli sets TF's log level before TF loads.
from mnist_tf import workdir as workdirs
from mnist_tf.errors import UserError

FLAGS = flags.FLAGS
SHORT_HELP = ("workdir", "port", "host", "checkpoint")


def define_serve_flags() -> None:
    """Defines the serving flags; called only by this entry point."""
    flags.DEFINE_string("workdir", None, "Training workdir whose model is served (required).")
    flags.DEFINE_integer("port", 8000, "TCP port (0 picks a free one).", lower_bound=0,
                         upper_bound=65535)
    flags.DEFINE_string("host", "127.0.0.1",
                        "Address to bind: 127.0.0.1 serves this machine only; 0.0.0.0 (or ::) "
                        "serves anyone who can reach it (the server has no authentication).")
    cli.define_checkpoint_flag("serve")
    flags.mark_flag_as_required("workdir")
    cli.define_short_help(SHORT_HELP)


def main(argv: list[str]) -> None:
    """Binds the address, loads the model, prints the URL and serves until interrupted."""
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    try:
        workdirs.check_is_directory(FLAGS.workdir)  # Before TensorFlow's start-up.
        from mnist_tf.inference import serve

        # Bound before the model loads, so a taken port is reported at once.
        server = serve.make_server(None, FLAGS.host, FLAGS.port)
    except UserError as e:
        cli.fail(str(e))
    except OSError as e:  # Taken port, unknown or foreign address.
        cli.fail(f"--host={FLAGS.host} --port={FLAGS.port}: cannot listen there "
                 f"({e.strerror or e}); pick another --port (0 picks a free one) or --host")
    try:
        cli.import_tensorflow_quietly()
        server.classifier = serve.load_classifier(FLAGS.workdir, FLAGS.checkpoint)
    except UserError as e:
        server.server_close()
        cli.fail(str(e))
    except KeyboardInterrupt:
        cli.fail("interrupted")
    print(f"Serving {server.classifier.description}")
    print(f"Draw a digit at {serve.url_of(server)}  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    define_serve_flags()
    cli.run(main)
