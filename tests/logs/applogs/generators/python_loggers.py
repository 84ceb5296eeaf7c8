import logging, sys, structlog
from structlog.processors import dict_tracebacks
def boom(uid):
    d = {}
    return d[f"user-{uid}"]
def fail(uid):
    try:
        boom(uid)
    except KeyError as e:
        raise RuntimeError(f"lookup failed for user {uid} at 0x7f3a2b1c") from e
which = sys.argv[1]
if which == "structlog":
    structlog.configure(processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso"),
        structlog.processors.format_exc_info, structlog.processors.JSONRenderer()])
elif which == "structlog-dict":
    structlog.configure(processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso"),
        dict_tracebacks, structlog.processors.JSONRenderer()])
if which.startswith("structlog"):
    log = structlog.get_logger()
    log.info("started", port=8000)
    for uid in (1, 2):
        try: fail(uid)
        except Exception: log.exception("request failed", path="/x")
    log.warning("slow query", ms=1234)
    try: int("abc")
    except ValueError: log.error("bad input", exc_info=True)
elif which == "jsonlogger":
    try:
        from pythonjsonlogger.json import JsonFormatter
    except ImportError:
        from pythonjsonlogger.jsonlogger import JsonFormatter
    h = logging.StreamHandler(sys.stdout)
    fmt = sys.argv[2] if len(sys.argv) > 2 else "%(asctime)s %(levelname)s %(name)s %(message)s"
    h.setFormatter(JsonFormatter(fmt))
    log = logging.getLogger("app"); log.addHandler(h); log.setLevel(logging.DEBUG)
    log.info("started")
    for uid in (1, 2):
        try: fail(uid)
        except Exception: log.exception("request failed")
    log.warning("slow query 1234 ms")
elif which == "ecs":
    import ecs_logging
    h = logging.StreamHandler(sys.stdout); h.setFormatter(ecs_logging.StdlibFormatter())
    log = logging.getLogger("app"); log.addHandler(h); log.setLevel(logging.DEBUG)
    log.info("started")
    for uid in (1, 2):
        try: fail(uid)
        except Exception: log.exception("request failed")
    log.warning("slow query 1234 ms")
