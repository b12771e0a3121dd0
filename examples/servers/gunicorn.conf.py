"""gunicorn settings for wsgi_app; flags given on the command line win over these."""

preload_app = True  # import the app, build its key cache and warm it once, in the master
workers = 2
graceful_timeout = 10


def post_worker_init(worker: object) -> None:
    """Runs in each worker once it is set up (after a gevent worker's monkey-patching):
    build this worker's client now rather than at its first request. Optional, since
    ``client()`` builds it on first use anyway."""
    import wsgi_app

    wsgi_app.client()
