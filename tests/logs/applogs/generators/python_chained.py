import logging, sys, uuid
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(name)s] %(message)s", filename=sys.argv[1])
log = logging.getLogger("shop.orders")

def load(uid):
    return {}["user-%d" % uid]

def fetch(uid):
    try:
        load(uid)
    except KeyError as e:
        raise RuntimeError(f"lookup failed for user {uid} at {hex(id(e))}") from e

def handle(uid):
    try:
        fetch(uid)
    except RuntimeError:
        int("abc%d" % uid)

for uid in (1, 2):
    try:
        fetch(uid)
    except Exception:
        log.exception("request %s failed\nuser=%d\nextra context line", uuid.uuid4(), uid)
    try:
        handle(uid)
    except Exception:
        log.exception("handler failed for user %d", uid)

def eg(n):
    errs = []
    for i in range(2):
        try:
            raise ValueError(f"bad item {i+n}")
        except ValueError as e:
            errs.append(e)
    try:
        raise TypeError(f"wrong type {n}")
    except TypeError as e:
        errs.append(ExceptionGroup(f"nested {n}", [e]))
    raise ExceptionGroup(f"batch {n} failed", errs)

for n in (1, 2):
  try:
    try:
        eg(n)
    except* ValueError:
        log.exception("batch %d failed", n)
  except BaseExceptionGroup:
    log.exception("rest of batch %d", n)
if len(sys.argv) > 2:
    fetch(int(sys.argv[2]))
log.info("done")
