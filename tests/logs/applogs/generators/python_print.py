import logging, subprocess, sys
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("app")
def fail(i):
    return {"a": 1}[f"user-{i}"]
for i in range(2):
    try:
        fail(i)
    except KeyError:
        log.exception("lookup failed")
    sys.stdout.flush()
    for n in range(100):
        print(f"processed row {n} of batch {i}: ok")
    sys.stdout.flush()
    subprocess.run(["ls", "-la", "/etc/hostname", "/etc/hosts"], check=True)
    sys.stdout.flush()
    print("  indented output line")
    print("Done.")
try:
    fail(9)
except KeyError:
    log.exception("lookup failed")
try:
    int("abc")
except ValueError:
    log.exception("parse failed")
sys.stdout.flush()
print("result: 42")
print("Traceback (most recent call last):")  # not quite
raise RuntimeError("final crash")
