"""Error logs: nginx lines by level and class; exceptions from Python, JVM, Node, Ruby, JSON loggers."""

from __future__ import annotations

import json
import logging
import traceback
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from upkeeper.logs.errorlog import AppLogStats, NginxErrorStats, normalize


def feed_app(text: str) -> AppLogStats:
    a = AppLogStats()
    a.feed(text.encode(), "app.log")
    a.finish()
    return a


def groups(a: AppLogStats) -> dict[tuple[str, str], int]:
    return {(g.kind, g.message): g.count for g in a.exceptions.values()}


def test_nginx_error_lines_by_level_and_class() -> None:
    log = (b'2024/03/01 10:00:00 [error] 12#12: *5 open() "/srv/www/a.php" failed (2: No such file or directory), '
           b'client: 10.0.0.1, server: x, request: "GET /a.php HTTP/1.1", host: "x"\n'
           b'2024/03/01 10:00:01 [error] 12#12: *6 open() "/srv/www/b.php" failed (2: No such file or directory), '
           b'client: 10.0.0.2, server: x, request: "GET /b.php HTTP/1.1", host: "x"\n'
           b"2024/03/01 10:05:00 [error] 12#12: *7 connect() failed (111: Connection refused) while connecting to "
           b'upstream, client: 10.0.0.3, server: x, request: "GET /api HTTP/1.1", upstream: "http://127.0.0.1:9/api"\n'
           b"2024/03/01 11:00:00 [crit] 12#12: accept4() failed (24: Too many open files)\n"
           b"2024/03/01 11:00:01 [warn] 12#12: *9 an upstream response is buffered to a temporary file\n"
           b"not an nginx line\n")
    s = NginxErrorStats()
    s.feed(log, "error.log")
    assert s.levels == {"error": 3, "crit": 1, "warn": 1}
    assert s.unparsed == 1 and s.upstream == 1  # connect() … upstream; a buffered response [warn] is no failure
    cls = {k: v for k, v in s.classes.items()}
    assert cls[("error", 'open() "…" failed (<n>: No such file or directory)')] == 2
    assert s.by_hour == {"2024-03-01 10:00": 3, "2024-03-01 11:00": 2}


def test_python_logging_tracebacks(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    logger = logging.getLogger("upk-test-app")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    try:
        for user in (7, 8, 9):
            try:
                {}[f"user-{user}"]
            except KeyError:
                logger.exception("lookup failed for user %d", user)
        try:
            print(1 / 0)
        except ZeroDivisionError:
            logger.exception("math")
        logger.warning("disk almost full on /dev/sda%d", 1)
        logger.info("all good")
    finally:
        handler.close()
        logger.removeHandler(handler)
    a = feed_app(path.read_text())
    assert groups(a) == {("KeyError", "'…'"): 3, ("ZeroDivisionError", "division by zero"): 1}
    assert a.levels == {"error": 4, "warning": 1, "info": 1}
    assert ("error", "upk-test-app: lookup failed for user <n>") in a.messages


def test_json_loggers() -> None:
    try:
        raise ValueError("bad order 17")
    except ValueError:
        tb = traceback.format_exc()
    lines = [
        json.dumps({"levelname": "ERROR", "message": "order failed", "exc_info": tb}),  # python-json-logger
        json.dumps({"level": 50, "msg": "boom", "err": {"type": "TypeError", "message": "x is undefined",
                                                         "stack": "TypeError: x is undefined\n    at f (a.js:1:1)"}}),
        json.dumps({"log.level": "error", "message": "db", "error": {"type": "java.sql.SQLException",
                                                                     "message": "Connection is closed",
                                                                     "stack_trace": "java.sql.SQLException: ..."}}),
        # log4j2 JsonTemplateLayout's LogstashJsonEventLayoutV1 template (composed after its documented output)
        json.dumps({"level": "ERROR", "message": "db", "exception": {
            "exception_class": "java.lang.RuntimeException", "exception_message": "pool exhausted",
            "stacktrace": "java.lang.RuntimeException: pool exhausted\n\tat A.main(A.java:3)\n"
                          "Caused by: java.sql.SQLTransientConnectionException: timeout\n\tat B.get(B.java:9)\n"}}),
        json.dumps({"level": "info", "msg": "hello"}),
        json.dumps({"severity": "WARNING", "message": "slow request 1234 ms"}),
        "{not json at all}",
    ]
    a = feed_app("\n".join(lines) + "\n")
    assert groups(a) == {("ValueError", "bad order <n>"): 1, ("TypeError", "x is undefined"): 1,
                         ("java.sql.SQLException", "Connection is closed"): 1,
                         ("java.lang.RuntimeException", "pool exhausted"): 1}
    assert {g.cause for g in a.exceptions.values() if g.kind == "java.lang.RuntimeException"} == \
        {"java.sql.SQLTransientConnectionException"}
    assert a.json_lines == 6
    assert a.levels["error"] == 4 and a.levels["warning"] == 1 and a.levels["info"] == 1


def test_an_error_written_as_an_object_of_its_own_is_an_exception() -> None:
    """An error object under ``err``/``error``/``exception`` with its stack but no type (an application's serializer,
    ``{message, stack}``), or named otherwise than pino's and ECS's (``name``, ``kind``); Datadog's standard attributes
    (``error.kind``, ``error.message``, ``error.stack``): each line an exception — they counted only as messages."""
    node = "Error: card 4242 declined\n    at charge (/app/pay.js:3:9)\n    at main (/app/index.js:7:3)"
    py = 'Traceback (most recent call last):\n  File "/app/pay.py", line 3, in charge\nValueError: card 4242 declined'
    lines = [
        json.dumps({"level": "error", "message": "charge failed", "err": {"message": "card 4242 declined",
                                                                            "stack": node}}),
        json.dumps({"level": "error", "message": "charge failed", "exception": {"stack_trace": py}}),
        json.dumps({"level": "error", "message": "charge failed", "error": {"name": "PaymentDeclined",
                                                                              "message": "card 4343 declined"}}),
        json.dumps({"level": "error", "message": "charge failed", "error.kind": "stripe.error.CardError",
                    "error.message": "card 4444 declined", "error.stack": py.replace("ValueError", "CardError")}),
        json.dumps({"level": "error", "message": "charge failed", "error": {"kind": "stripe.error.CardError",
                                                                              "message": "card 4545 declined"}}),
        # an error object with neither a type nor a stack (an API's answer) is none
        json.dumps({"level": "error", "message": "charge failed", "error": {"code": 402, "message": "declined"}}),
    ]
    a = feed_app("\n".join(lines) + "\n")
    assert groups(a) == {("Error", "card <n> declined"): 1, ("ValueError", "card <n> declined"): 1,
                         ("PaymentDeclined", "card <n> declined"): 1, ("stripe.error.CardError", "card <n> declined"): 2}
    assert "    at charge (/app/pay.js:3:9)" in next(g for g in a.exceptions.values() if g.kind == "Error").example


def test_a_byte_order_mark_at_a_file_s_start_loses_no_record() -> None:
    """A log written with a byte order mark (.NET's UTF-8 with BOM, PowerShell's): its first record is read as the
    others are — a JSON line's exception was lost, its line counted as text."""
    exc = "System.InvalidOperationException: order {} failed\n   at Shop.Orders.Process()"
    jsonl = "".join(json.dumps({"@t": "2026-12-07T10:00:00Z", "@mt": "boom", "@l": "Error", "@x": exc.format(i)}) + "\n"
                    for i in (1, 2))
    text = "".join(f"2026-12-07 10:00:0{i} ERROR app: boom\n" + exc.format(i) + "\n" for i in (1, 2))
    for log, json_lines in ((jsonl, 2), (text, 0)):
        a = AppLogStats()
        a.feed(b"\xef\xbb\xbf" + log.encode(), "app.log")
        a.finish()
        assert groups(a) == {("System.InvalidOperationException", "order <n> failed"): 2}, log
        assert a.json_lines == json_lines and a.levels == {"error": 2}
        assert all("\ufeff" not in k[1] for k in a.messages), a.messages


def test_a_dotnet_framework_inner_exception_on_the_exception_s_line_is_its_root_cause() -> None:
    """.NET Framework (log4net's, NLog's text) writes the inner exception after `` ---> `` on the exception's own line:
    grouped by the outer exception's message, the innermost type its cause, as .NET Core's own line for it is."""
    log = "".join(
        f"2026-12-07 10:00:0{i} ERROR Shop.Orders - order {i} failed\n"
        f"System.InvalidOperationException: Order {i} could not be saved ---> System.Data.SqlClient.SqlException: "
        f"Timeout expired.  The timeout period elapsed prior to completion of the operation (order {i}).\n"
        "   at System.Data.SqlClient.SqlConnection.OnError(SqlException exception, Boolean breakConnection)\n"
        "   --- End of inner exception stack trace ---\n"
        "   at Shop.Orders.Save(Order o) in C:\\src\\Shop\\Orders.cs:line 42\n" for i in (1, 2))
    a = feed_app(log)
    assert {(g.kind, g.message, g.cause): g.count for g in a.exceptions.values()} == \
        {("System.InvalidOperationException", "Order <n> could not be saved", "System.Data.SqlClient.SqlException"): 2}


def test_serilog_s_console_template_gives_its_levels() -> None:
    """Serilog's console sink writes ``[{Timestamp:HH:mm:ss} {Level:u3}] {Message:lj}``: its three letters end the
    bracket after the time (the file sink's own bracket was read, not this one)."""
    a = feed_app("[10:00:00 INF] Now listening on: http://[::]:8080\n[10:00:01 WRN] Slow request took 1234 ms\n"
                 "[10:00:02 ERR] Failed to process order 42\n"
                 "System.InvalidOperationException: Sequence contains no elements\n"
                 "   at Shop.Orders.OrderService.Process(Int32 orderId) in /src/Shop/Orders/OrderService.cs:line 42\n"
                 "[10:00:03 FTL] Host terminated unexpectedly\n")
    assert a.levels == {"info": 1, "warning": 1, "error": 1, "critical": 1}, a.levels
    assert groups(a) == {("System.InvalidOperationException", "Sequence contains no elements"): 1}


def test_dotnet_level_words_are_read_only_in_their_own_places() -> None:
    """Serilog's three letters and the simple console's ``fail:`` are levels where .NET writes them only: an
    application's text with ``fail:`` at a line's start (a check's output) or a list ending in ``FTL]``/``WRN]`` is
    no error, critical or warning message (each was one since the .NET commit)."""
    a = feed_app("fail: 3 of 10 checks\nthe codes seen are [A, B, FTL]\ncolumns: x, y, WRN]\n"
                 "fail: Microsoft.AspNetCore.Diagnostics.ExceptionHandlerMiddleware[1]\n"
                 "      An unhandled exception has occurred while executing the request.\n"
                 "[10:00:03 FTL] Host terminated unexpectedly\n")
    assert a.levels == {"error": 1, "critical": 1}, a.levels
    assert {k[0] for k in a.messages} == {"error", "critical"}


def test_an_error_object_with_only_a_name_is_a_result_not_an_exception() -> None:
    """An application's own ``error`` object with a ``name`` or ``kind`` but neither a message nor a stack (a lookup's
    result, a job's state) is no exception; a name that is a class's (``TimeoutError``) is one, alone too."""
    lines = [
        {"level": "info", "msg": "cache lookup", "error": {"code": 404, "name": "not_found"}},
        {"level": "info", "msg": "job state", "err": {"kind": "user", "id": 7}},
        {"level": "info", "msg": "graphql", "error": {"class": "partial", "path": ["user"]}},
        {"level": "error", "msg": "upstream", "error": {"name": "TimeoutError"}},
    ]
    lines.append({"level": "error", "msg": "lookup", "error": {"kind": "RecordNotFound"}})
    a = feed_app("".join(json.dumps(x) + "\n" for x in lines))
    assert groups(a) == {("TimeoutError", ""): 1, ("RecordNotFound", ""): 1}


def test_a_line_a_container_runtime_cut_into_many_parts_is_joined_in_linear_time() -> None:
    """The CRI format's ``P`` parts of one line (and Docker's records without a newline) are joined once, not part by
    part: 200,000 small parts took ~2.5 times as long as as many whole lines (the held text copied at each part,
    quadratic up to the 1 MiB a split line is held for), now less than these."""
    import time

    n = 200_000
    stamp = b"2026-12-07T10:00:00.123456789Z stderr "

    def took(flag: bytes) -> tuple[float, AppLogStats]:
        data = stamp + flag + b" ERROR boom\n" + b"".join(stamp + flag + b" abcd\n" for _ in range(n)) + stamp + b"F end\n"
        best, a = 1e9, AppLogStats()
        for _ in range(2):
            a = AppLogStats()
            t = time.perf_counter()
            a.feed(data, "c.log")
            a.finish()
            best = min(best, time.perf_counter() - t)
        return best, a

    (parts, joined), (whole, _) = took(b"P"), took(b"F")
    assert joined.lines == n + 2 and joined.levels == {"error": 1}, (joined.lines, joined.levels)
    assert parts < 1.2 * whole + 0.05, (parts, whole)


def test_an_application_s_record_and_text_fields_are_not_loguru_s() -> None:
    """An application's JSON with fields of its own named ``record`` and ``text`` (an import's row and raw line) is
    read by its own level and message: it was taken for loguru's and read as nothing."""
    line = {"level": "error", "message": "import failed", "record": {"id": 5, "sku": "A-1"}, "text": "5;A-1;;"}
    a = feed_app(json.dumps(line) + "\n")
    assert a.levels == {"error": 1} and dict(a.messages) == {("error", "import failed"): 1}


def test_an_http_status_tells_failures_apart() -> None:
    """axios' ``Request failed with status code 401`` (the API key stopped working) and ``… 503`` (the service is
    down) are two groups — the status was ``<n>``, so a new 401 after known 503s was no new exception; other
    numbers stay ``<n>``."""
    stack = "    at settle (/app/node_modules/axios/lib/core/settle.js:19:12)\n"
    log = "".join(f"AxiosError: Request failed with status code {code}\n{stack}" for code in (503, 503, 401))
    log += "".join(f"2026-12-07 10:00:0{i} ERROR app: GET /orders/{i} status={code} in {i}00 ms\n"
                   for i, code in ((1, 500), (2, 500), (3, 404)))
    a = feed_app(log)
    assert groups(a) == {("AxiosError", "Request failed with status code 503"): 2,
                         ("AxiosError", "Request failed with status code 401"): 1}
    assert dict(a.messages) == {("error", "app: GET /orders/<n> status=500 in <n> ms"): 2,
                                ("error", "app: GET /orders/<n> status=404 in <n> ms"): 1}


def test_a_container_log_cut_by_rotation_inside_a_trace_or_a_split_line_is_read_whole() -> None:
    """Docker's json-file and the CRI format (see applogs/README.md): a traceback whose head is in the rotated file
    and whose end is in the live one, and a line split by the runtime across the two, are read whole."""
    logs = Path(__file__).parent / "applogs"
    for name, marker in (("docker-json-file.log", b"Traceback"), ("cri-containerd.log", b"Traceback")):
        data = (logs / name).read_bytes()
        at = data.index(b"\n", data.index(marker)) + 1  # after the traceback's first line
        split = data.index(b"\n", data.rindex(b"AAAA", 0, len(data) - 20000)) + 1  # between two parts of a line
        whole = AppLogStats()
        whole.feed(data, "app.log")
        whole.finish()
        for cut in (at, split):
            rotated = AppLogStats()
            rotated.feed(data[:cut], "app.log.1")
            rotated.feed(data[cut:], "app.log")
            rotated.finish()
            assert groups(rotated) == groups(whole) and rotated.messages == whole.messages, (name, cut)


def test_a_rust_panic_before_1_73_is_an_exception_with_its_message_on_the_line() -> None:
    """Rust before 1.73 wrote a panic's message on its line, in quotes before the place: a panic (it was an error
    message, "Err" taken for its level), the place no part of the group."""
    log = "".join(f"thread 'tokio-runtime-worker' panicked at 'called `Result::unwrap()` on an `Err` value: Os {{ code: "
                  f'2, kind: NotFound, message: "No such file or directory" }}\', src/config.rs:{n}:40\n'
                  "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n" for n in (12, 13))
    a = feed_app(log)
    assert groups(a) == {("panic", 'called `Result::unwrap()` on an `Err` value: Os { code: <n>, kind: NotFound, '
                                   'message: "…" }'): 2}
    assert a.levels == {"critical": 2}


def test_a_ruby_handler_s_exception_over_two_records_is_paired_by_thread() -> None:
    """Sidekiq's threads log a job's exception as ``Class: message`` then its backtrace, each a record: another
    thread's records between the two change nothing; a ``Class: message`` not followed by a frame is no exception."""
    def rec(tid: str, msg: str) -> str:
        return f"2026-12-07T10:00:00.000Z pid=7 tid={tid} class=ChargeJob jid=ab12 WARN: {msg}\n"
    log = (rec("t1", "Stripe::CardError: card 17 declined") + rec("t2", "Net::ReadTimeout: timed out after 5s")
           + rec("t1", "app/jobs/charge_job.rb:5:in `perform'") + "lib/sidekiq/processor.rb:196:in `execute_job'\n"
           + rec("t2", "app/jobs/sync_job.rb:9:in `perform'")
           + rec("t3", "Retrying: 3 attempts left") + rec("t3", "done"))
    a = feed_app(log)
    assert groups(a) == {("Stripe::CardError", "card <n> declined"): 1, ("Net::ReadTimeout", "timed out after <n>s"): 1}
    example = next(g.example for g in a.exceptions.values() if g.kind == "Stripe::CardError").split("\n")
    assert example[-1] == "lib/sidekiq/processor.rb:196:in `execute_job'" and len(example) == 3


def test_jvm_node_ruby_traces() -> None:
    text = (
        "2024-03-01 10:00:00 ERROR [main] request failed\n"
        "java.lang.IllegalStateException: Order 42 not found\n"
        "\tat com.shop.Orders.get(Orders.java:10)\n"
        "\tat com.shop.Api.handle(Api.java:99)\n"
        "Caused by: java.sql.SQLTimeoutException: query timed out after 30000 ms\n"
        "\t... 12 more\n"
        "2024-03-01 10:00:01 INFO [main] next\n"
        "TypeError: Cannot read properties of undefined (reading 'id')\n"
        "    at handler (/app/server.js:10:5)\n"
        "    at process (/app/server.js:20:3)\n"
        "app/models/order.rb:12:in `total': undefined method `price' for nil:NilClass (NoMethodError)\n"
    )
    a = feed_app(text)
    assert groups(a) == {
        # the outermost exception, its chain's root cause apart (AppLogStats._exception)
        ("java.lang.IllegalStateException", "Order <n> not found"): 1,
        ("TypeError", "Cannot read properties of undefined (reading 'id')"): 1,
        ("NoMethodError", "undefined method `price' for nil:NilClass"): 1,
    }


def test_normalize() -> None:
    assert normalize('user 42 at 10.0.0.1:5432 id 0b9362ea-0da4-9596-fedc-b5eedbd45a17 "x y"') == \
        'user <n> at <ip> id <uuid> "…"'


def test_quoted_names_tell_exceptions_apart_and_quoted_data_is_masked() -> None:
    """'…' used to replace every quoted value: each AttributeError, ModuleNotFoundError, KeyError …
    fell into one group, so a new one was never flagged; and "couldn't … it's" was read as a quote."""
    def tb(line: str) -> str:
        return f'Traceback (most recent call last):\n  File "a.py", line 1, in <module>\n{line}\n'
    a = feed_app(tb("AttributeError: 'NoneType' object has no attribute 'id'")
                 + tb("AttributeError: 'NoneType' object has no attribute 'email'")
                 + tb("ModuleNotFoundError: No module named 'psycopg2'")
                 + tb("ModuleNotFoundError: No module named 'yaml.cyaml'")
                 + tb("KeyError: 'user-7'") + tb("KeyError: 'user-8'")
                 + tb("KeyError: 'DATABASE_URL'")
                 + tb("RuntimeError: Couldn't connect to db, it's down")
                 + tb("RuntimeError: Couldn't parse config, it's down"))
    assert groups(a) == {
        ("AttributeError", "'NoneType' object has no attribute 'id'"): 1,
        ("AttributeError", "'NoneType' object has no attribute 'email'"): 1,
        ("ModuleNotFoundError", "No module named 'psycopg2'"): 1,
        ("ModuleNotFoundError", "No module named 'yaml.cyaml'"): 1,
        ("KeyError", "'…'"): 2,
        ("KeyError", "'DATABASE_URL'"): 1,
        ("RuntimeError", "Couldn't connect to db, it's down"): 1,
        ("RuntimeError", "Couldn't parse config, it's down"): 1,
    }
    # data in quotes (digits, spaces, long values) is still masked
    assert normalize("Table 'db.users' doesn't exist") == "Table 'db.users' doesn't exist"
    assert normalize("bad token 'sess_Ab3kL9xQ'") == "bad token '…'"
    assert normalize(f"bad value '{'a' * 70}'") == "bad value '…'"
    assert normalize('relation "orders" does not exist') == 'relation "orders" does not exist'
    assert normalize('open() "/srv/www/a.php" failed') == 'open() "…" failed'
    # and data shaped like a name: a file name, a value ending the message after a colon, a user
    assert normalize("[Errno 2] No such file or directory: 'logo.png'") == \
        "[Errno <n>] No such file or directory: '…'"
    assert normalize("invalid literal for int() with base 10: 'abc'") == "invalid literal for int() with base <n>: '…'"
    assert normalize('User "alice" not found') == 'User "…" not found'
    assert normalize("No module named 'json'") == "No module named 'json'"  # an extension alone is a name
    assert normalize("'DATABASE_URL'") == "'DATABASE_URL'"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=120).map(lambda s: s.replace("\n", " ")), max_size=40))
def test_garbage_never_crashes(lines: list[str]) -> None:
    data = "\n".join(lines).encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    a = feed_app(data)
    assert a.lines <= len(lines) + 1
    s = NginxErrorStats()
    s.feed(data.encode())
    assert s.unparsed <= s.lines


def test_a_runaway_traceback_is_bounded_and_still_grouped() -> None:
    from upkeeper.logs.errorlog import MAX_TRACE_LINES

    a = AppLogStats()
    a.feed(b"Traceback (most recent call last):\n", "app.log")
    frame = b'  File "/srv/app/deep.py", line 7, in recurse\n    return recurse(n - 1)\n'
    for _ in range(5000):  # RecursionError traces run to thousands of lines
        a.feed(frame, "app.log")
        assert len(a._pending) <= MAX_TRACE_LINES
    a.feed(b"RecursionError: maximum recursion depth exceeded\n", "app.log")
    a.finish()
    [g] = a.exceptions.values()
    assert (g.kind, g.count) == ("RecursionError", 1)


def test_deeply_nested_json_line_is_read_as_text() -> None:
    """json.loads raises RecursionError (not ValueError) on a line nested thousands deep: the whole
    run used to fail; the line is now text like any other non-JSON line, and the rest is read."""
    deep = '{"a":' * 5000 + "1" + "}" * 5000
    a = feed_app('{"level": "error", "message": "disk full"}\n' + deep + "\n"
                 + '{"level": "error", "message": "disk full", "error": {"type": "OSError", "message": "x"}}\n')
    assert a.lines == 3 and a.json_lines == 2
    assert a.levels["error"] == 2
    assert groups(a) == {("OSError", "x"): 1}


def test_upstream_errors_are_failures_at_error_level_or_worse() -> None:
    """Every line that mentioned "upstream" used to count, at any level."""
    ctx = b', client: 10.0.0.3, server: x, request: "GET /api HTTP/1.1", upstream: "http://127.0.0.1:9/api"\n'
    fails = [b"upstream timed out (110: Connection timed out) while reading response header from upstream",
             b"connect() failed (111: Connection refused) while connecting to upstream",
             b"no live upstreams while connecting to upstream",
             b"upstream prematurely closed connection while reading response header from upstream",
             b"upstream sent invalid header while reading response header from upstream",
             b"recv() failed (104: Connection reset by peer) while reading response header from upstream",
             b"upstream SSL certificate verify error: (10:certificate has expired) while SSL handshaking to upstream",
             b"upstream closed prematurely FastCGI stdout while reading response header from upstream",
             b"upstream sent unexpected FastCGI record: 3 while reading response header from upstream"]
    harmless = [b"[warn] 12#12: *9 an upstream response is buffered to a temporary file /var/cache/1/00/0000000001",
                b"[warn] 12#12: *9 upstream server temporarily disabled while connecting to upstream",
                b"[info] 12#12: *9 client closed connection while waiting for request",
                b"[error] 12#12: *9 open() \"/srv/www/upstream.html\" failed (2: No such file or directory)",
                # (PHP's warnings, relayed: the answer may be a 200)
                b'[error] 12#12: *9 FastCGI sent in stderr: "PHP message: PHP Warning:  Undefined variable $x in '
                b'/srv/a.php on line 3" while reading response header from upstream, client: 10.0.0.3, server: x']
    log = b"".join(b"2024/03/01 10:00:00 [error] 12#12: *5 " + f + ctx for f in fails)
    log += b"".join(b"2024/03/01 10:00:00 " + h + b"\n" for h in harmless)
    s = NginxErrorStats()
    s.feed(log, "error.log")
    assert s.unparsed == 0 and s.upstream == len(fails)


def test_timestamps_emails_ipv6_and_hex_ids_are_normalized() -> None:
    """These were left in the message (of an ISO time the hour stayed): one problem split into many groups."""
    same = [("token expired at 2024-03-01T10:00:00Z", "token expired at 2024-03-01T11:30:59.123+01:00"),
            ("job started 2024-03-01 10:00:00,123 failed", "job started 2024-03-02 23:59:01,999 failed"),
            ("user alice@example.com not found", "user bob.smith+x@mail.example.org not found"),
            ("connect to [2001:db8::a1]:5432 failed", "connect to [fe80::1]:5432 failed"),
            ("connect to ::1 failed", "connect to ::ffff:10.0.0.1 failed"),
            ("request 9f86d081 failed", "request a3c2e1f0 failed"),
            ("commit 1a2b3c4d5e not found", "commit 99aa00bb11 not found")]
    for a, b in same:
        assert normalize(a) == normalize(b), (a, b)
    assert normalize("token expired at 2024-03-01T10:00:00Z") == "token expired at <time>"
    assert normalize("user alice@example.com: [2001:db8::a1]:5432 req 9f86d081") == "user <email>: [<ip>]:<n> req <hex>"
    # not ids or addresses: times of day, C++ names, words, plain numbers
    assert normalize("at 10:00:00 in std::vector, deadbeef 12345678") == "at <n>:<n>:<n> in std::vector, deadbeef <n>"


def test_node_error_and_java_lang_exceptions_without_a_name_before_the_suffix() -> None:
    """The exception-line pattern needed a character before Error/Exception: Node's plain `Error`,
    java.lang.Exception / Error / Throwable and an uncaught "Exception in thread" were missed."""
    text = (
        "2024-03-01 10:00:00 ERROR db down\n"
        "Error: connect ECONNREFUSED 127.0.0.1:5432\n"
        "    at TCPConnectWrapper.afterConnect [as oncomplete] (node:net:1494:16)\n"
        "java.lang.Exception: order 42 failed\n"
        "\tat com.shop.Orders.get(Orders.java:10)\n"
        "java.lang.Error: out of sorts\n"
        "\tat com.shop.Orders.get(Orders.java:11)\n"
        "java.lang.Throwable: thrown\n"
        "\tat com.shop.Orders.get(Orders.java:12)\n"
        'Exception in thread "main" java.lang.IllegalStateException: state 7\n'
        "\tat com.shop.Main.main(Main.java:3)\n"
        "Error: a plain message line, no stack, is no exception\n"
        "2024-03-01 10:00:01 INFO next\n"
    )
    a = feed_app(text)
    assert groups(a) == {
        ("Error", "connect ECONNREFUSED <ip>"): 1,
        ("java.lang.Exception", "order <n> failed"): 1,
        ("java.lang.Error", "out of sorts"): 1,
        ("java.lang.Throwable", "thrown"): 1,
        ("java.lang.IllegalStateException", "state <n>"): 1,
    }
    j = feed_app(json.dumps({"level": "error", "stack_trace": 'Exception in thread "main" java.lang.Error: x 1\n'
                                                             "\tat a.b(C.java:1)"}) + "\n")
    assert groups(j) == {("java.lang.Error", "x <n>"): 1}


GROUP_TB = '''2024-03-01 10:00:00,000 ERROR app: failed
  + Exception Group Traceback (most recent call last):
  |   File "a.py", line 3, in <module>
  |     raise ExceptionGroup("many", [ValueError(1), TypeError(2)])
  | ExceptionGroup: many (2 sub-exceptions)
  +-+---------------- 1 ----------------
    | ValueError: 1
    +---------------- 2 ----------------
    | TypeError: 2
    +------------------------------------
2024-03-01 10:00:01,000 INFO app: next
'''


def test_exception_group_traceback_is_grouped_and_the_next_line_is_read() -> None:
    """An exception group's traceback was lost, and the log line after it was taken as its
    exception line (its level never counted)."""
    a = feed_app(GROUP_TB)
    assert groups(a) == {("ExceptionGroup", "many (<n> sub-exceptions)"): 1}
    assert a.levels == {"error": 1, "info": 1}
    [g] = a.exceptions.values()
    assert "| TypeError: 2" in g.example
    # a traceback cut short (no exception line): the next line is an ordinary line
    b = feed_app('Traceback (most recent call last):\n  File "a.py", line 3, in <module>\n'
                 "2024-03-01 10:00:02,000 ERROR app: disk full\n")
    assert b.levels == {"error": 1} and ("error", "app: disk full") in b.messages
    j = feed_app(json.dumps({"level": "error", "exc_info": GROUP_TB.split("\n", 1)[1].rsplit("2024", 1)[0]}) + "\n")
    assert groups(j) == {("ExceptionGroup", "many (<n> sub-exceptions)"): 1}


CHAINED_TB = '''2024-03-01 10:00:00,000 ERROR app: failed
Traceback (most recent call last):
  File "a.py", line 3, in <module>
    d["x"]
KeyError: 'user-7'

{sentence}

Traceback (most recent call last):
  File "a.py", line 5, in <module>
    raise ValueError("bad value 42")
ValueError: bad value 42
2024-03-01 10:00:01,000 INFO app: next
'''


def test_a_chained_traceback_is_one_exception_grouped_by_the_last() -> None:
    """A chained traceback counted as two exceptions in two groups."""
    for sentence in ("During handling of the above exception, another exception occurred:",
                     "The above exception was the direct cause of the following exception:"):
        a = feed_app(CHAINED_TB.format(sentence=sentence) * 2)
        assert groups(a) == {("ValueError", "bad value <n>"): 2}
        assert a.levels == {"error": 2, "info": 2}
        [g] = a.exceptions.values()
        assert "KeyError: 'user-7'" in g.example and sentence in g.example and g.example.endswith("bad value 42")
    # tracebacks one after the other, not chained, stay apart
    tb = 'Traceback (most recent call last):\n  File "a.py", line 1, in <module>\n'
    b = feed_app(tb + "KeyError: 'user-7'\n\n" + tb + "ValueError: bad value 42\n")
    assert groups(b) == {("KeyError", "'…'"): 1, ("ValueError", "bad value <n>"): 1}


def test_fastcgi_stderr_classes_keep_the_php_message_and_multi_line_entries_are_joined() -> None:
    """Every `FastCGI sent in stderr: "…"` was one class (all PHP errors merged), and the lines of a
    multi-line PHP message were counted as unparsed."""
    ctx = (b' while reading response header from upstream, client: 10.0.0.1, server: x, request: "GET / HTTP/1.1", '
           b'upstream: "fastcgi://unix:/run/php/php8.2-fpm.sock:", host: "x"\n')
    head = b"2024/03/01 10:00:00 [error] 12#12: *5 FastCGI sent in stderr: "
    warn = head + b'"PHP message: PHP Warning:  Undefined variable $cart in /var/www/cart.php on line 42"' + ctx
    fatal = (head + b'"PHP message: PHP Fatal error:  Uncaught PDOException: SQLSTATE[HY000] [2002] Connection '
             b"refused in /var/www/db.php:12\nStack trace:\n#0 /var/www/db.php(12): PDO->__construct('mysql:host=db')\n"
             b'#1 {main}\n  thrown in /var/www/db.php on line 12"' + ctx)
    bad = (b'2024/03/01 10:00:01 [error] 12#12: *6 upstream sent invalid header: "X-Bad\\x0D..." while reading '
           b'response header from upstream, client: 10.0.0.3, server: x, request: "GET / HTTP/1.1"\n')
    s = NginxErrorStats()
    s.feed(warn + warn.replace(b"line 42", b"line 43") + fatal[:fatal.index(b"#0")], "error.log")
    s.feed(fatal[fatal.index(b"#0"):] + bad + b"not an nginx line\n", "error.log")  # an entry split between two reads
    assert s.lines == 9 and s.unparsed == 1 and s.unparsed_samples == ["error.log: not an nginx line"]
    assert s.classes == {
        ("error", 'FastCGI sent in stderr: "PHP message: PHP Warning: Undefined variable $cart in /var/www/cart.php '
                  'on line <n>" while reading response header from upstream'): 2,
        ("error", 'FastCGI sent in stderr: "PHP message: PHP Fatal error: Uncaught PDOException: SQLSTATE[HY000] '
                  '[<n>] Connection refused in /var/www/db.php:<n>"'): 1,
        ("error", 'upstream sent invalid header: "X-Bad\\x0D..." while reading response header from upstream'): 1,
    }
    fatal_key = next(k for k in s.classes if "Fatal" in k[1])
    assert s.examples[fatal_key] == fatal[len(b"2024/03/01 10:00:00 [error] 12#12: *5 "):].decode().rstrip("\n")[:500]
    # "Connection refused" written by PHP is no upstream failure; the invalid header is one
    assert s.upstream == 1


def test_is_upstream_failure_agrees_with_the_count() -> None:
    from upkeeper.logs.errorlog import is_upstream_failure

    s = NginxErrorStats()
    s.feed(b"2024/03/01 10:00:00 [error] 1#1: *1 upstream timed out (110: Connection timed out) while reading "
           b"response header from upstream, client: 1.2.3.4\n"
           b"2024/03/01 10:00:00 [warn] 1#1: *1 an upstream response is buffered to a temporary file /x/1\n"
           b'2024/03/01 10:00:00 [error] 1#1: *1 FastCGI sent in stderr: "PHP message: connect() failed: '
           b'Connection refused" while reading response header from upstream, client: 1.2.3.4\n')
    picked = [k for k in s.classes if is_upstream_failure(*k)]
    assert s.upstream == 1 and [k[1] for k in picked] == [
        "upstream timed out (<n>: Connection timed out) while reading response header from upstream"]


def test_a_ruby_logger_line_ending_in_a_parenthesized_word_is_no_exception_without_a_backtrace() -> None:
    text = (
        "I, [2024-03-01T10:00:00.000001 #1234]  INFO -- : Connected (PostgreSQL)\n"
        "Summary (today):\n"
        "E, [2024-03-01T10:00:01.000001 #1234] ERROR -- : Couldn't find User with 'id'=7 (RecordNotFound)\n"
        "app/models/user.rb:4:in 'User.find'\n"
        "E, [2024-03-01T10:00:02.000001 #1234] ERROR -- : duplicate key (PG::UniqueViolation)\n"
    )
    a = feed_app(text)
    assert groups(a) == {("RecordNotFound", "Couldn't find User with 'id'=<n>"): 1,
                         ("PG::UniqueViolation", "duplicate key"): 1}
    assert a.levels == {"info": 1, "error": 2}


def test_the_tags_of_a_ruby_logger_record_are_no_part_of_its_message_class() -> None:
    """Rails logs with log_tags ([request-id]): the tag made each error's class unique to the request
    ('[<uuid>] …' only grouped because UUIDs are masked, a tag such as [shop-12] split them), and a FATAL
    record that is its tags alone, with no exception after it, keeps its tags as its message."""
    text = (
        "E, [2024-03-01T10:00:00.000001 #1234] ERROR -- : [shop-12] [9f0c] Payment declined for order 7\n"
        "E, [2024-03-01T10:00:01.000001 #1234] ERROR -- : [shop-13] [9f0d] Payment declined for order 8\n"
        "F, [2024-03-01T10:00:02.000001 #1234] FATAL -- : [shop-14]   \n"
        "I, [2024-03-01T10:00:03.000001 #1234]  INFO -- : [shop-14] Completed 500\n"
        "F, [2024-03-01T10:00:04.000001 #1234] FATAL -- : [shop-15]   \n"
    )
    a = feed_app(text)
    assert dict(a.messages) == {("error", "Payment declined for order <n>"): 2, ("critical", "[shop-<n>]"): 2}
    assert a.levels == {"error": 2, "critical": 2, "info": 1}


PHP_FPM_LOG = r"""[05-Dec-2026 00:04:52 UTC] PHP Fatal error:  Uncaught PDOException: PDO::__construct(): php_network_getaddresses: getaddrinfo failed: Temporary failure in name resolution in /app/inc/DB.php:45
Stack trace:
#0 /app/inc/DB.php(45): PDO->__construct('mysql:host=mari...', 'user', 'password', Array)
#1 {main}

Next PDOException: SQLSTATE[HY000] [2002] php_network_getaddresses: getaddrinfo failed: Temporary failure in name resolution in /app/inc/DB.php:45
Stack trace:
#0 {main}
  thrown in /app/inc/DB.php on line {line}
[05-Dec-2026 00:04:53 UTC] PHP Warning:  Division by zero in /app/src/Calculator.php on line 17
[05-Dec-2026 00:04:55 UTC] PHP Fatal error:  Allowed memory size of 134217728 bytes exhausted (tried to allocate 20480 bytes) in /app/src/Report.php on line {line}
"""


def test_php_fatal_errors_are_exceptions_wherever_they_happened() -> None:
    """PHP's uncaught exceptions and fatal errors (its error_log, php-fpm's) were no exceptions at all;
    the place in the message must not split a group after a deploy moves the line."""
    a = feed_app(PHP_FPM_LOG.replace("{line}", "45") + PHP_FPM_LOG.replace("{line}", "46").replace(":45", ":46"))
    assert groups(a) == {
        # the outermost exception: the last "Next" (its cause, the first PDOException, apart)
        ("PDOException", "SQLSTATE[HY000] [<n>] php_network_getaddresses: getaddrinfo failed: Temporary failure in "
                         "name resolution"): 2,
        ("PHP Fatal error", "Allowed memory size of <n> bytes exhausted (tried to allocate <n> bytes)"): 2}
    g = next(g for g in a.exceptions.values() if g.kind == "PDOException")
    assert g.example.startswith("[05-Dec-2026") and g.example.endswith("  thrown in /app/inc/DB.php on line 45")
    assert "Next PDOException: SQLSTATE[HY000] [2002] php_network_getaddresses" in g.example
    assert a.levels == {"critical": 4, "warning": 2}  # "Stack trace:" is no TRACE line


def test_a_line_after_a_path_is_read_when_no_caret_follows() -> None:
    """The line after ``/path:12`` is held to see whether it is Node's source excerpt: when it is not, it
    is read as itself, at the end of the file too."""
    a = feed_app("/run/app.sock:3\n2024-03-01 10:00:00 ERROR db down\n2024-03-01 10:00:01 INFO ok\n")
    assert a.levels == {"error": 1, "info": 1} and ("error", "db down") in a.messages
    b = feed_app("/srv/app.js:1\nERROR last")
    assert b.levels == {"error": 1} and ("error", "last") in b.messages


def test_the_values_of_a_query_string_are_data() -> None:
    """``…?token=abc`` and ``…?token=xyz`` made two groups: an HTTP client's error for each request."""
    a = normalize("500 Server Error: Internal Server Error for url: https://api.x.io/v2/users/12?token=abc&page=2")
    b = normalize("500 Server Error: Internal Server Error for url: https://api.x.io/v2/users/97?token=Zq9&page=30")
    assert a == b == "<n> Server Error: Internal Server Error for url: https://api.x.io/v2/users/<n>?token=…&page=…"
    assert normalize("https://api.x.io/v2/users?page=2") != normalize("https://api.x.io/v2/orders?page=2")
    assert normalize("is it ok? a=b") == "is it ok? a=b"


def test_compose_prefix_with_colours_or_a_replica_number() -> None:
    """``docker compose logs --ansi always``: a prefix in colour is a container's whatever its name
    (``container_name: shop``), its lines read apart from another's; without colour only a name ending in its replica
    number (``web-1``) is one — ``ERROR | …`` (a ``LEVEL | message`` format) and ``shop | …`` are read as they are."""
    shop = ["Error: stock 1 gone", "    at take (/app/stock.js:3:9)", "    at main (/app/main.js:8:3)"]
    mail = ["Error: smtp 2 down", "    at send (/app/mail.js:5:11)"]
    text = "".join(f"\x1b[36mshop    | \x1b[0m{x}\n" + (f"\x1b[33mmailer  | \x1b[0m{mail[i]}\n" if i < len(mail) else "")
                   for i, x in enumerate(shop))
    a = feed_app(text + "ERROR | queue full\nshop | WARNING disk 91% full\n")
    assert {(g.kind, g.message, g.count) for g in a.exceptions.values()} == \
        {("Error", "stock <n> gone", 1), ("Error", "smtp <n> down", 1)}
    assert next(g for g in a.exceptions.values() if "stock" in g.message).example == "\n".join(shop)
    assert a.messages == {("error", "stock <n> gone"): 1, ("error", "smtp <n> down"): 1,
                          ("error", "queue full"): 1, ("warning", "disk <n>% full"): 1}


def test_the_further_lines_of_a_message_end_where_a_log_line_starts() -> None:
    """A message's further lines are held until a frame shows they are its own (none follows the JVM's here: the
    line after it is read as the log line it is), and a Python message's go on to the next record: Django's
    ``Internal Server Error: …`` and werkzeug's access line are none of it."""
    a = AppLogStats()
    a.feed(b"java.lang.OutOfMemoryError: Java heap space\n"
           b"worker 3 ERROR lost job 7\n"
           b"Traceback (most recent call last):\n"
           b'  File "/app/views.py", line 3, in boom\n'
           b"psycopg.errors.UniqueViolation: duplicate key value violates unique constraint \"u_pkey\"\n"
           b"DETAIL:  Key (id)=(1) already exists.\n"
           b"Internal Server Error: /orders/7\n"
           b'127.0.0.1 - - [05/Dec/2026 12:09:43] "GET /orders/7 HTTP/1.1" 500 -\n', "app.log")
    a.finish()
    assert dict(a.levels) == {"error": 2}
    assert dict(a.messages) == {("error", "lost job <n>"): 1, ("error", "/orders/<n>"): 1}
    examples = {g.kind: g.example.split("\n") for g in a.exceptions.values()}
    assert examples == {
        "java.lang.OutOfMemoryError": ["java.lang.OutOfMemoryError: Java heap space"],
        "psycopg.errors.UniqueViolation": ["Traceback (most recent call last):", '  File "/app/views.py", line 3, in boom',
                                           'psycopg.errors.UniqueViolation: duplicate key value violates unique '
                                           'constraint "u_pkey"', "DETAIL:  Key (id)=(1) already exists."]}


_TB = 'Traceback (most recent call last):\n  File "/srv/app/a.py", line 8, in <module>\n    load(i)\nKeyError: \'user-1\'\n'


def _ids(a: AppLogStats) -> dict[str, tuple[str, str, str]]:
    return {gid: (g.kind, g.message, g.cause) for gid, g in a.exceptions.items()}


def test_lines_printed_after_a_python_traceback_do_not_change_its_group() -> None:
    # what a program prints after a traceback (a print(), a subprocess) is read as further lines of the exception's
    # message, as log shippers join unstamped lines to the event before them (Filebeat's multiline, Datadog's
    # auto multi-line); but only the traceback — its exception line and the chain Python's sentences join — makes
    # the group (Sentry: type and frames): a "caused by:" or "Wrapped by:" among those lines made another group,
    # a new one whenever the program printed something else
    alone = _ids(feed_app(_TB))
    assert list(alone.values()) == [("KeyError", "'…'", "")]
    for after in ("caused by: timeout", "Wrapped by: RuntimeError: batch failed", "  [cause]: TypeError: x",
                  "[previous exception] [object] (PDOException(code: 0): x"):
        a = feed_app(_TB + "".join(f"row {i}: {after}\n" if i else f"{after}\n" for i in range(120)))
        assert _ids(a) == alone, after
    # a Python traceback in a JSON field, its message of several lines
    tb = _TB.replace("'user-1'", "'user-1'\\ncaused by: timeout")
    a = feed_app(json.dumps({"levelname": "ERROR", "message": "lookup failed", "exc_info": tb.replace("\\n", "\n")}))
    assert list(_ids(a).values()) == [("KeyError", "'…'", "")]


def test_the_nested_causes_of_a_json_error_are_its_chain() -> None:
    # pino's errWithCause serializer (and a VError serialized as it is) writes the causes as objects, not in the
    # stack: the root cause splits the group as a log4j2 "thrown" cause, a stack's "Caused by:" do
    def rec(err: dict[str, object]) -> str:
        return json.dumps({"level": 50, "msg": "request failed", "err": err})

    db = {"type": "DbError", "message": "connect ECONNREFUSED 10.0.0.1:5432",
          "stack": "DbError: connect ECONNREFUSED 10.0.0.1:5432\n    at load (/app/db.js:5:26)"}
    outer = {"type": "Error", "message": "request 1 failed", "stack": "Error: request 1 failed\n    at h (/app/a.js:7:3)"}
    a = feed_app("\n".join([
        rec({**outer, "cause": db}),
        rec({**outer, "cause": {"name": "WError", "message": "pool", "cause": {"name": "TimeoutError", "message": "t"}}}),
        rec({**outer, "cause": "timeout"}),  # a cause that is no error
        # pino's default serializer: the causes already in the stack, and a cause object too: not added twice
        rec({**outer, "stack": outer["stack"] + "\ncaused by: " + str(db["stack"]), "cause": db})]))
    causes = sorted((g.cause, g.count) for g in a.exceptions.values())
    assert causes == [("", 1), ("DbError", 2), ("TimeoutError", 1)]
    [g] = [g for g in a.exceptions.values() if g.cause == "DbError"]
    assert g.example.count("DbError: connect") == 1 and "at load (/app/db.js:5:26)" in g.example


_LINK = st.sampled_from(["Wrapped by: ", "Caused by: ", "caused by: ", "  [cause]: ", "  [errors]: [", "Error: ", "\tat ",
                         "    at ", "Traceback (most recent call last):", "x.FooError: ", "[previous exception] [object] (",
                         ""])


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(_LINK, st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"),
                                         max_size=30)).map("".join), max_size=8))
@example(["Error: ", "Wrapped by: "])  # a trace's "Wrapped by:" without a type: the whole run failed (IndexError)
def test_lines_like_chain_links_after_a_traceback_never_crash_nor_lose_it(noise: list[str]) -> None:
    a = feed_app(_TB + "".join(n + "\n" for n in noise))
    assert set(_ids(feed_app(_TB))) <= set(_ids(a))


def test_odd_structlog_dict_tracebacks_are_no_crash() -> None:
    # "frames" that is no list: the whole run failed (TypeError)
    a = feed_app(json.dumps({"event": "x", "level": "error",
                             "exception": [{"exc_type": "ValueError", "exc_value": "bad", "frames": True}]}))
    assert list(_ids(a).values()) == [("ValueError", "bad", "")]


#: a JVM class name as Object.toString() prints it: a (nested) class, in a package or not, an array of objects or of
#: a primitive type, a lambda's hidden class
_JVM_CLASS = st.one_of(
    st.from_regex(r"(?:[a-z][a-z0-9]{0,6}\.){0,3}[A-Z][A-Za-z0-9]{0,10}(?:\$[A-Z][A-Za-z0-9]{0,8})?", fullmatch=True),
    st.from_regex(r"\[{1,2}(?:Ljava\.lang\.[A-Z][a-z]{1,8};|[BCDFIJSZ])", fullmatch=True),
    st.from_regex(r"[A-Z][a-z]{1,8}\$\$Lambda\$[0-9]{1,4}/0x[0-9a-f]{16}", fullmatch=True))


@settings(max_examples=100, deadline=None)
@given(_JVM_CLASS, st.integers(0, 2**31 - 1), st.sampled_from(["order {} is locked", "{}", "cannot run {} now",
                                                              "bad amount 5 for {}", "[{}]", "{}, {}"]))
def test_an_identity_hash_code_of_any_length_makes_one_group(cls: str, h: int, text: str) -> None:
    """``Order@1b6d3586`` and ``Order@5b0fbc1``, ``Order@12345678``, ``Order@deadbeef``: one hash code in hex, of one
    to eight digits, whatever they are (Integer.toHexString of an identity hash code); a class loader's too."""
    assert normalize(text.format(f"{cls}@{h:x}", f"{cls}@{h:x}")) == \
        normalize(text.format(f"{cls}@1b6d3586", f"{cls}@1b6d3586"))
    # a class loader as the JVM names it in a ClassCastException: its class or name, a space, its hash code
    for loader in ([cls] if cls[0].isalpha() and "/" not in cls else []) + [f"'{cls.lower()}-{h % 7}'"]:
        assert normalize(f"(X is in unnamed module of loader {loader} @{h:x}; Y is in module java.base)") == \
            normalize(f"(X is in unnamed module of loader {loader} @1b6d3586; Y is in module java.base)")


_NODE_TAIL = st.sampled_from(["", "Node.js v20.20.2", "(Use `node --trace-uncaught ...` to show where the exception was "
                              "thrown)", "    at f (/app/x.js:1:1)", "TypeError: x", "/app/y.js:3", "  ^", "{", "}",
                              "FATAL ERROR: ", " 1: 0xb78db3 node::Abort() [node]", "----- Native stack trace -----",
                              "2026-12-05 10:00:00 ERROR db down", '{"level":"error","msg":"x"}',
                              "(Use `node --trace-warnings ...` to show where the warning was created)",
                              "(node:77) UnhandledPromiseRejectionWarning: ", "[Error: x]", "[TypeError: y] {",
                              "(node:77) UnhandledPromiseRejectionWarning: Unhandled promise rejection. This error "
                              "originated either by throwing inside of an async function (rejection id: 1)"])
_LINE_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=40)
_TYPE_ERROR = ("\n/app/server.js:12\n  o.user.name;\n         ^\n\nTypeError: Cannot read properties of undefined "
               "(reading 'name')\n    at f (/app/server.js:12:10)\n\nNode.js v20.20.2\n")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(_NODE_TAIL, _LINE_TEXT, st.tuples(_NODE_TAIL, _LINE_TEXT).map("".join)), max_size=8))
@example(["(Use `node --trace-uncaught ...` to show where the exception was thrown)"])  # the hint alone: IndexError
def test_what_follows_node_s_caret_or_a_v8_fatal_error_never_crashes_nor_swallows_the_next_report(
        lines: list[str]) -> None:
    """Whatever a log holds under the caret of Node's report (a thrown value, an Error after a blank line, anything)
    or after V8's ``FATAL ERROR:``, the run goes on, and the next crash report is read as it is alone."""
    alone = groups(feed_app(_TYPE_ERROR))
    for head in ("/app/pay.js:7\nthrow `declined`;\n^\n", "FATAL ERROR: Reached heap limit\n",
                 # an Error printed without its stack; an unhandled rejection under --unhandled-rejections=warn
                 "/app/pay.js:7\nthrow e;\n^\n\n[PaymentError: card declined] {\n",
                 "(node:77) UnhandledPromiseRejectionWarning: RangeError: bad offset\n    at f (/app/x.js:1:1)\n",
                 "(node:77) UnhandledPromiseRejectionWarning: oops\n"):
        a = feed_app(head + "".join(ln + "\n" for ln in lines) + "\nNode.js v20.20.2\n" + _TYPE_ERROR)
        assert all(groups(a).get(key, 0) >= n for key, n in alone.items()), groups(a)
        b = feed_app(head + "".join(ln + "\n" for ln in lines) + _TYPE_ERROR)
        assert a.lines == b.lines + 2
    # a logger's line worded as V8's, no native stack after it, is a message, no exception
    c = feed_app("FATAL ERROR: database unreachable\n2026-12-05 10:00:00 INFO retrying\n")
    assert not c.exceptions and c.levels == {"critical": 1, "info": 1}


#: a thread's name as logback prints it: any text without a bracket's end or a line's, not a level word alone
_THREAD = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="]\n\r\x85\u2028\u2029"),
                  min_size=1, max_size=40).filter(lambda t: t.strip().lower() not in _LEVEL_WORDS)
_LEVEL_WORDS = {"trace", "debug", "info", "notice", "warn", "warning", "error", "err", "severe", "crit", "critical",
                "fatal", "vrb", "dbg", "inf", "wrn", "ftl"}  # (Serilog's in brackets: a thread named 'INF' is one)


@settings(max_examples=150, deadline=None)
@given(_THREAD, st.sampled_from(["WARN", "ERROR"]))
@example("error-reporter", "WARN")  # logback's default pattern: the level word in the thread's name was the level
@example("pool-1-thread-3", "ERROR")
@example(" ", "WARN")  # padded to 15 blanks: a thread, not Spring Boot's blank correlation (49)
def test_a_thread_s_name_is_no_part_of_a_message_class(thread: str, level: str) -> None:
    """logback's and log4j2's ``%-5level [%thread] %logger - %msg`` and Spring Boot's ``%5p PID --- [%t] %logger :
    %m`` print the thread's name inside the message: the same message from two threads is one class; the default
    ``[%thread] %-5level`` puts it before the level, whose word only counts."""
    def classes(name: str) -> dict[tuple[str, str], int]:
        a = feed_app(f"10:00:00.123 {level:<5} [{name}] com.shop.OrderService - payment failed for order 5\n"
                     f"2026-12-05T10:00:00.123Z {level:>5} 4242 --- [{name}] c.s.OrderService       : payment failed\n"
                     f"2026-12-05T10:00:00.123Z {level:>5} 4242 --- [shop] [{name:>15}] c.s.Cart : cart gone\n"
                     f"2026-12-05T10:00:00.123Z {level:>5} 4242 --- [shop] [{name:>15}] [{' ' * 49}] c.s.Pay : declined\n"
                     f"10:00:00.123 [{name}] {level:<5} com.shop.OrderService - payment failed for order 5\n")
        assert sum(a.levels.values()) == 5
        return dict(a.messages)
    assert classes(thread) == classes("main")
    assert sum(classes(thread).values()) == 5


def test_spring_boot_s_correlation_field_is_no_part_of_a_message_class() -> None:
    """Spring Boot 3.2+ prints ``${LOG_CORRELATION_PATTERN}`` between the thread and the logger: Micrometer's
    ``[traceId-spanId]`` (blanks outside a span) or a custom ``[cid=… tx=…]``, per request — one class per request
    otherwise.  The application's name stays: two applications are two classes."""
    a = feed_app("2026-12-05T10:00:00.123Z ERROR 4242 --- [shop] [nio-8080-exec-1] "
                 "[803b448a0489f84084905d3093480352-3425f23bb2432450] c.s.Cart                 : cart gone\n"
                 "2026-12-05T10:00:01.123Z ERROR 4243 --- [shop] [nio-8080-exec-2] "
                 "[903b448a0489f84084905d3093480352-4425f23bb2432451] c.s.Cart                 : cart gone\n"
                 "2026-12-05T10:00:02.123Z ERROR 4243 --- [shop] [           main] "
                 f"[{' ' * 49}] c.s.Cart                 : cart gone\n"
                 "2026-12-05T10:00:03.123Z ERROR 4243 --- [nio-8080-exec-3] "
                 "[a03b448a0489f84084905d3093480352-5425f23bb2432452] c.s.Cart                 : cart gone\n"
                 "2026-12-05T10:00:04.123Z ERROR 4243 --- [auth] [nio-8081-exec-1] "
                 "[cid=abbb4c1c-81aa-4aaa-808c-b508ba11fec2 tx=n/a] c.p.Login : login failed\n"
                 "2026-12-05T10:00:05.123Z ERROR 4243 --- [auth] [nio-8081-exec-2] "
                 "[cid=bbbb4c1c-81aa-4aaa-808c-b508ba11fec3 tx=7] c.p.Login : login failed\n")
    assert dict(a.messages) == {("error", "<n> --- [shop] c.s.Cart : cart gone"): 3,
                                ("error", "<n> --- c.s.Cart : cart gone"): 1,
                                ("error", "<n> --- [auth] c.p.Login : login failed"): 2}


def test_a_bracket_that_is_no_thread_field_stays_in_the_class() -> None:
    """Python's ``%(levelname)s [%(name)s] %(message)s``: the logger's name in brackets, no ``logger - `` after it;
    ``[ERROR]`` is the level; Celery's ``[…: ERROR/MainProcess]`` too."""
    a = feed_app("[ERROR] WARN lamp is on\n"
                 "2026-12-05 10:00:00,001 ERROR [app.db] connection lost\n"
                 "2026-12-05 10:00:00,002 ERROR [app.cache] connection lost\n"
                 "[2026-12-05 10:00:00,003: ERROR/MainProcess] Task failed with error: x\n")
    assert dict(a.messages) == {("error", "[app.db] connection lost"): 1, ("error", "[app.cache] connection lost"): 1,
                                ("error", "WARN lamp is on"): 1, ("error", "Task failed with error: x"): 1}


_PID = st.integers(1, 4_000_000)
#: an unhandled rejection Node warned of (``--unhandled-rejections=warn``) and the group it makes
_WARNED = st.sampled_from([
    ("UnhandledPromiseRejectionWarning: RangeError: bad offset {n}\n    at f (/app/x.js:{n}:7)\n"
     "    at node:internal/main/run_main_module:28:49\n", ("RangeError", "bad offset <n>")),
    ("UnhandledPromiseRejectionWarning: oops {n}\n", ("UnhandledPromiseRejection", "oops <n>")),
    ("UnhandledPromiseRejectionWarning: Error: lost {n}\n", ("UnhandledPromiseRejection", "Error: lost <n>")),
    ("UnhandledPromiseRejectionWarning: #<Object>\n", ("UnhandledPromiseRejection", "#<Object>")),
    ("UnhandledPromiseRejectionWarning: Error: job {n} failed\nafter line {n}\n    at f (/app/x.js:1:1)\n",
     ("Error", "job <n> failed"))])
_AFTER = st.one_of(st.sampled_from(["", "Node.js v20.20.2", "2026-12-05 10:00:00 ERROR db down", "    at g (/a.js:1:1)",
                                    '{"level":"error","msg":"x"}', "TypeError: x", "}"]), _LINE_TEXT)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_WARNED, _PID, st.integers(0, 10**6), st.booleans(), _AFTER), max_size=6))
def test_each_unhandled_rejection_node_warned_of_is_one_exception_and_its_trailer_no_record(
        runs: list[tuple[tuple[str, tuple[str, str]], int, int, bool, str]]) -> None:
    """Each ``(node:PID) UnhandledPromiseRejectionWarning: …`` counts once in its group whatever the PID, and Node's
    hint and sentence after it count no level nor message; what follows is read as it is alone."""
    text, expected, levels, messages = "", Counter[tuple[str, str]](), Counter[str](), Counter[object]()
    for (warning, key), pid, n, hint, after in runs:
        text += f"(node:{pid}) " + warning.format(n=n)
        if hint:
            text += "(Use `node --trace-warnings ...` to show where the warning was created)\n"
        text += (f"(node:{pid}) UnhandledPromiseRejectionWarning: Unhandled promise rejection. This error originated "
                 "either by throwing inside of an async function without a catch block, or by rejecting a promise "
                 "which was not handled with .catch(). To terminate the node process on unhandled promise rejection, "
                 "use the CLI flag `--unhandled-rejections=strict` (see https://nodejs.org/api/cli.html#cli_unhandled_"
                 f"rejections_mode). (rejection id: {n % 3 + 1})\n" + after + "\n")
        expected[key] += 1
        # each line after a rejection read alone, by a reader of its own: one reader fed them all joined the last
        # of one to a frame beginning the next ("A", then "    at g (…)": an exception A) — as a log rotated
        # between them is read, but here a rejection stands between them
        alone = AppLogStats()
        alone.feed((after + "\n").encode(), "app.log")
        alone.finish()
        expected.update(groups(alone))
        levels.update(alone.levels)
        messages.update(alone.messages)
    a = feed_app(text)
    assert groups(a) == dict(expected)
    assert (a.levels, a.messages) == (levels, messages)


def test_opaque_ids_and_named_dates_do_not_make_a_group_per_occurrence() -> None:
    """A request, payment or customer id of letters and digits (``req_8f3a2b1c9d``, Stripe's ``cus_NffrFeUfNV2Hib``,
    ``pi_3MtwBwLkdIwHu7ix28a3tqPa``), a token, or a date-time with a month's name (Java's Date.toString(), RFC 1123)
    stayed in the normalized message: each occurrence was a group of its own, so the same failure was a "new
    exception" finding on every run. Names with digits still tell exceptions apart."""
    def tb(line: str) -> str:
        return f'Traceback (most recent call last):\n  File "a.py", line 1, in <module>\n{line}\n'
    a = feed_app(tb("PaymentError: payment pi_3MtwBwLkdIwHu7ix28a3tqPa declined for customer cus_NffrFeUfNV2Hib")
                 + tb("PaymentError: payment pi_3NuxCxMleJxIv8jy39b4urQb declined for customer cus_OggsGfVgOW3Ijc")
                 + tb("RuntimeError: request req_8f3a2b1c9d failed")
                 + tb("RuntimeError: request req_1a2b3c4d5e failed")
                 + tb("PermissionError: token abc123XYZdef456ghi789 revoked")
                 + tb("PermissionError: token zzz999YYYxxx888www777 revoked")
                 + tb("TimeoutError: lock held since Mon Dec  7 03:46:35 UTC 2026")
                 + tb("TimeoutError: lock held since Tue Dec  8 11:02:09 UTC 2026")
                 + tb("ValueError: stale since Mon, 07 Dec 2026 03:46:35 GMT")
                 + tb("ValueError: stale since Wed, 09 Dec 2026 23:59:01 GMT")
                 + tb("ModuleNotFoundError: No module named 'psycopg2'")
                 + tb("LookupError: no handler for Http2ServerException")
                 + tb("LookupError: no handler for OAuth2Client"))
    assert groups(a) == {
        ("PaymentError", "payment pi_<id> declined for customer cus_<id>"): 2,
        ("RuntimeError", "request req_<id> failed"): 2,
        ("PermissionError", "token <id> revoked"): 2,
        ("TimeoutError", "lock held since <time>"): 2,
        ("ValueError", "stale since <time>"): 2,
        ("ModuleNotFoundError", "No module named 'psycopg2'"): 1,
        ("LookupError", "no handler for Http2ServerException"): 1,
        ("LookupError", "no handler for OAuth2Client"): 1,
    }
    assert normalize("at 07/Dec/2026:03:46:35 +0000 the cache missed") == "at <time> the cache missed"
    assert normalize("Dec  7 03:46:35 db1 postgres: gone") == "<time> db1 postgres: gone"
    for name in ("sha256sum", "x86_64", "ubuntu2204", "getUTF8String()", "G1YoungGen", "Uint8ClampedArray",
                 "AES256GCM"):
        assert normalize(f"unsupported {name}") == f"unsupported {name}"


def test_an_upstream_answering_in_a_way_nginx_refuses_is_an_upstream_failure(services_dir: Path) -> None:
    """A real nginx in front of upstreams that answer but break HTTP: a header bigger than proxy_buffer_size ("upstream
    sent too big header"), a status line that is no HTTP ("upstream sent no valid HTTP/1.0 header"). The client gets a
    502 either way; neither counted as an upstream failure (only "invalid", "timed out", "refused" … did)."""
    import socket
    import threading
    import urllib.error
    import urllib.request

    from upkeeper.sandbox.nginx import NginxServer

    answers = {b"/big": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 16_000 + b"\r\nContent-Length: 0\r\n\r\n",
               b"/junk": b"this is no HTTP answer\r\n\r\n"}
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                head = conn.recv(65536)
                path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
                conn.sendall(answers.get(path, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))

    threading.Thread(target=serve, daemon=True).start()
    import uuid

    nginx = NginxServer(services_dir / f"nginx-upstreams-{uuid.uuid4().hex[:8]}", server_extra=f"location /u/ {{ proxy_pass http://127.0.0.1:{port}/; "
                                                         "proxy_buffer_size 1k; }")
    nginx.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as got:
            urllib.request.urlopen(nginx.url + "/u/big", timeout=10)
        got.value.close()
        assert got.value.code == 502
        # (nginx hands on an answer without a status line as HTTP/0.9, after logging it at [error])
        with socket.create_connection(("127.0.0.1", nginx.port), timeout=10) as c:
            c.sendall(b"GET /u/junk HTTP/1.0\r\nHost: x\r\n\r\n")
            assert b"this is no HTTP answer" in c.recv(65536)
    finally:
        nginx.stop()
        listener.close()
    s = NginxErrorStats()
    s.feed(nginx.error_log.read_bytes(), "error.log")
    classes = {c for _, c in s.classes}
    assert any(c.startswith("upstream sent too big header") for c in classes), classes
    assert any(c.startswith("upstream sent no valid HTTP/<n> header") for c in classes), classes
    assert s.upstream == 2, s.classes


def test_modsecurity_lines_are_classed_by_their_action_and_rule() -> None:
    """libmodsecurity 3's nginx connector writes each rule that matched as an [error] line whose bracketed fields
    ([id "…"], [msg "…"], [uri "…"], [unique_id "…"]) all normalized to "…": every rule's lines were one class, a
    new rule blocking requests no new class. Now the action and the rule (its id and message) are the class."""
    def line(n: int, action: str, rule: str, msg: str, value: str) -> bytes:
        return (f'2024/03/01 10:00:0{n} [error] 12#12: *{n} [client 10.0.0.{n}] ModSecurity: {action}. Matched '
                f'"Operator `Rx\' with parameter `x\' against variable `ARGS:q\' (Value: `{value}\' ) [file '
                f'"/etc/nginx/modsec/coreruleset/rules/REQUEST-9.conf"] [line "{n}0"] [id "{rule}"] [rev ""] [msg '
                f'"{msg}"] [data "Matched Data: {value} found within ARGS:q"] [severity "2"] [ver "OWASP_CRS/3.3.2"] '
                f'[hostname "10.0.0.1"] [uri "/p{n}"] [unique_id "17123{n}"] [ref ""], client: 10.0.0.{n}, server: x, '
                f'request: "GET /p{n}?q=1 HTTP/1.1", host: "x"\n').encode()

    log = (line(1, "Access denied with code 403 (phase 2)", "949110", "Inbound Anomaly Score Exceeded (Total Score: 5)",
                "5")
           + line(2, "Access denied with code 403 (phase 2)", "949110",
                  "Inbound Anomaly Score Exceeded (Total Score: 10)", "10")
           + line(3, "Warning", "942100", "SQL Injection Attack Detected via libinjection", "1 union select")
           + line(4, "Warning", "941100", "XSS Attack Detected via libinjection", '[id "1"] [msg "forged"]')
           + b'2024/03/01 10:00:05 [error] 12#12: *5 [client 10.0.0.5] ModSecurity: Warning. detected XSS using '
             b'libinjection. [file "/r/REQUEST-941.conf"] [line "37"] [id "941100"] [msg "XSS Attack Detected via '
             b'libinjection"] [uri "/"], client: 10.0.0.5, server: x, request: "GET /?a=1 HTTP/1.1", host: "x"\n')
    s = NginxErrorStats()
    s.feed(log, "error.log")
    assert dict(s.classes) == {
        ("error", 'ModSecurity: Access denied with code <n> (phase <n>) [id "949110"] [msg "Inbound Anomaly Score '
                  'Exceeded (Total Score: <n>)"]'): 2,
        ("error", 'ModSecurity: Warning [id "942100"] [msg "SQL Injection Attack Detected via libinjection"]'): 1,
        ("error", 'ModSecurity: Warning [id "941100"] [msg "XSS Attack Detected via libinjection"]'): 2,
    }, s.classes
    assert s.upstream == 0 and s.unparsed == 0
