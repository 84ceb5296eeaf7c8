"""loguru's file sink with its defaults (backtrace=True, diagnose=True: a blank line between frames, the values of
the variables under each line, "> File" where the exception was caught): logger.exception() of a chained exception
twice, a warning, @logger.catch. python python_loguru.py FILE [json]"""

import sys

from loguru import logger

logger.remove()
logger.add(sys.argv[1], colorize=False, serialize=sys.argv[2:] == ["json"])


def charge(order):
    cards = {1: "visa"}
    return cards[order]


def pay(order):
    try:
        charge(order)
    except KeyError as e:
        raise RuntimeError(f"payment for order {order} failed") from e


for o in (17, 18):
    try:
        pay(o)
    except Exception:
        logger.exception("checkout failed")
logger.warning("slow request {} ms", 1234)


@logger.catch
def main(n):
    return 1 / n


main(0)
logger.info("done")
