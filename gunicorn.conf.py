"""gunicorn settings for Accord in production: ``gunicorn -c gunicorn.conf.py 'app:create_app()'``.

Every value can be overridden with the usual GUNICORN_* style command-line flags; the
environment variables below are Accord's own.
"""
import os

bind = os.environ.get("ACCORD_BIND", "127.0.0.1:8000")
# Two cores here: 2 workers of one thread each. The work is mostly Python, so a second thread only
# queues for the interpreter lock, and every recorded exchange holds the audit chain's lock from
# reading its head until its commit: a holder waiting for the interpreter (up to its 5 ms switch
# interval) holds up every writer of every worker. Under the load scenario a second thread kept
# half the threads waiting on the chain's lock and cost about a quarter of the throughput
# (docs/production.md, Capacity). The price of one thread: a slow upload or download holds its
# worker, so a deployment taking large transfers over slow links routes the transfer endpoints to
# an instance of its own with ACCORD_THREADS=4.
workers = int(os.environ.get("ACCORD_WORKERS", "2"))
threads = int(os.environ.get("ACCORD_THREADS", "1"))
# Workers that keep client connections alive between requests (sync workers close each one), which
# spares a partner system a TCP handshake per request: gthread's, which with one thread answers on
# its main thread instead of handing each request to its one pool thread and back (about a sixth
# less CPU a request under the load scenario), and spreads new connections evenly over the workers
# instead of leaving it to whichever accepts first (the p99 under load halved; app/serving.py).
worker_class = "app.serving.MainThreadWorker"
# The app is loaded once, by the arbiter, and frozen before the workers are forked from it, so
# they share its memory instead of each holding a copy: about 12 % less app CPU per request and
# 13 % more recorded exchanges a second under the load scenario (three paired runs; less for the
# two cores' caches to hold). A code change therefore needs a restart, not a HUP.
preload_app = True


def when_ready(server):
    from app.serving import share_preloaded_app

    share_preloaded_app(server)


def post_fork(server, worker):
    from app.serving import forget_inherited_connections

    forget_inherited_connections(server, worker)


# gunicorn's C parser (gunicorn_h1c) rather than its Python one: 5 to 10 % less worker CPU a request
# measured on one worker, and the same 400 for the malformed requests tests/test_serving_worker.py
# sends (Content-Length with Transfer-Encoding, two lengths, a NUL, a folded header...). Named, not
# left to "auto", so a missing package stops the start instead of quietly costing CPU.
http_parser = "fast"
# Large transfers stream for a long time; the proxy in front enforces client timeouts.
timeout = int(os.environ.get("ACCORD_WORKER_TIMEOUT", "300"))
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then so a slow leak cannot grow without bound; at a few hundred
# requests a second, a few thousand meant a restart (and a latency spike) every minute.
max_requests = int(os.environ.get("ACCORD_MAX_REQUESTS", "50000"))
max_requests_jitter = 5000
# The app logs its own JSON access lines with request ids; gunicorn's would be duplicates.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("ACCORD_LOG_LEVEL", "info").lower()
forwarded_allow_ips = os.environ.get("ACCORD_FORWARDED_ALLOW_IPS", "127.0.0.1")
# The scheduler never runs inside gunicorn: `accord scheduler run` is its own process.
raw_env = ["ACCORD_SCHEDULER_IN_PROCESS=0"]
# Several instances may share a host: manage them with signals, not a control socket in $HOME.
control_socket_disable = True
