"""Application logs written by the real libraries (tests/logs/applogs/, see its README): for each format,
the levels counted, the exceptions grouped by type and normalized message, and the stack kept as the
example. One row per format; the same exception logged twice (with other ids, addresses, line numbers)
must make one group."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from upkeeper.logs.errorlog import AppLogStats, NginxErrorStats
from upkeeper.logs.samples import trace_excerpt

LOGS = Path(__file__).parent / "applogs"


@dataclass(frozen=True)
class Case:
    file: str
    levels: dict[str, int]
    #: (type, normalized message) → count
    groups: dict[tuple[str, str], int]
    #: for some groups: lines their example must hold (the stack, the exception line)
    example_has: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    json_lines: int | None = None
    #: the warning-or-worse message classes, when the case checks them: (level, normalized) → count
    messages: dict[tuple[str, str], int] | None = None
    #: the type each group's chain starts with (its root cause), for the groups that have one; the causes when
    #: the same (type, message) is several groups, one per cause
    causes: dict[tuple[str, str], str | tuple[str, ...]] = field(default_factory=dict)


CASES = [
    Case("node-pino-bunyan-winston.jsonl",
         {"info": 3, "warning": 3, "error": 8, "critical": 1},
         {("TypeError", "Cannot read properties of undefined (reading 'id') for order <n>"): 4,
          ("DbError", "connect ECONNREFUSED <ip>"): 2, ("Error", "out of memory"): 1,
          # bunyan without its serializers writes the error's name only (``err``), and so does winston without
          # format.errors() (``error``: the error's own properties)
          ("DbError", ""): 2},
         {("TypeError", "Cannot read properties of undefined (reading 'id') for order <n>"):
          ("TypeError: Cannot read properties of undefined (reading 'id') for order 17",
           "    at fail (/tmp/jl/node/gen.js:4:31)")},
         json_lines=15),
    Case("structlog.jsonl", {"info": 1, "error": 3, "warning": 1},
         {("RuntimeError", "lookup failed for user <n> at <hex>"): 2,
          ("ValueError", "invalid literal for int() with base <n>: '…'"): 1},
         {("RuntimeError", "lookup failed for user <n> at <hex>"):
          ("KeyError: 'user-1'", "RuntimeError: lookup failed for user 1 at 0x7f3a2b1c")},
         json_lines=5, causes={("RuntimeError", "lookup failed for user <n> at <hex>"): "KeyError"}),
    Case("structlog-dict-tracebacks.jsonl", {"info": 1, "error": 3, "warning": 1},
         {("RuntimeError", "lookup failed for user <n> at <hex>"): 2,
          ("ValueError", "invalid literal for int() with base <n>: '…'"): 1},
         {("RuntimeError", "lookup failed for user <n> at <hex>"):
          ("Traceback (most recent call last):", '  File "/tmp/jl/gen_py.py", line 5, in boom',
           "KeyError: 'user-1'", "The above exception was the direct cause of the following exception:",
           "RuntimeError: lookup failed for user 1 at 0x7f3a2b1c")},
         json_lines=5, causes={("RuntimeError", "lookup failed for user <n> at <hex>"): "KeyError"}),
    Case("python-json-logger.jsonl", {"info": 1, "error": 2, "warning": 1},
         {("RuntimeError", "lookup failed for user <n> at <hex>"): 2},
         {("RuntimeError", "lookup failed for user <n> at <hex>"):
          ("Traceback (most recent call last):", "RuntimeError: lookup failed for user 1 at 0x7f3a2b1c")},
         json_lines=4, causes={("RuntimeError", "lookup failed for user <n> at <hex>"): "KeyError"}),
    Case("ecs-logging-python.jsonl", {"info": 1, "error": 2, "warning": 1},
         {("RuntimeError", "lookup failed for user <n> at <hex>"): 2},
         {("RuntimeError", "lookup failed for user <n> at <hex>"):
          ('  File "/tmp/jl/gen_py.py", line 10, in fail',)},
         json_lines=4),
    Case("google-cloud-logging.jsonl", {"info": 2, "error": 3, "warning": 1},
         {("KeyError", "'…'"): 2},
         {("KeyError", "'…'"): ("Traceback (most recent call last):", "KeyError: 'user-1'")},
         json_lines=6, messages={("error", "request failed for user <n>"): 2, ("error", "db down"): 1,
                                 ("warning", "slow query <n> ms"): 1}),
    # Go errors have no type: the error string at level error or worse is an exception of type "error"
    Case("go-zap-logrus.jsonl", {"info": 2, "error": 4, "warning": 2, "critical": 1},  # zap's dpanic
         {("error", "dial tcp <ip>: connect: connection refused"): 4, ("error", "cart <n> has no owner"): 1},
         {("error", "dial tcp <ip>: connect: connection refused"):
          ("dial tcp 10.0.0.1:5432: connect: connection refused", "main.main", "\t/tmp/jl/go/src/gen/main.go:25")},
         json_lines=9),
    # zerolog: the error in "error", pkgerrors' frames in "stack", a recovered panic's value in "panic" and
    # debug.Stack() in "stack"; a record with no message (.Send()) is classed by its error
    Case("go-zerolog.jsonl", {"info": 1, "error": 6, "warning": 1, "critical": 2},  # panic and fatal levels
         {("error", "dial tcp <ip>: connect: connection refused"): 2, ("error", "cart <n>: no owner"): 2,
          ("error", "sql: no rows in result set"): 1, ("error", "listen tcp :<n>: bind: address already in use"): 1,
          ("panic", "invalid memory address or nil pointer dereference"): 1},
         {("error", "cart <n>: no owner"): ("cart 7: no owner", "main", "\tmain.go:37"),
          ("panic", "invalid memory address or nil pointer dereference"):
          ("panic: invalid memory address or nil pointer dereference", "goroutine 1 [running]:",
           "\t/tmp/jl/go/src/genzl/main.go:25 +0x88")},
         json_lines=10,
         messages={("error", "request failed"): 2, ("warning", "slow query <n> ms"): 1, ("error", "checkout failed"): 2,
                   ("error", "sql: no rows in result set"): 1, ("error", "handler panicked"): 1,
                   ("critical", "invoice <n> total is negative"): 1, ("critical", "cannot start"): 1}),
    Case("go-panic.txt", {"critical": 7},
         {("panic", "runtime error: invalid memory address or nil pointer dereference"): 2,
          ("panic", "order <n>: connection refused"): 1,
          ("panic", "runtime error: index out of range [<n>] with length <n>"): 2,  # net/http recovered it
          ("panic", "job <n> failed"): 1, ("fatal error", "concurrent map writes"): 1},
         {("panic", "runtime error: invalid memory address or nil pointer dereference"):
          ("[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x56487d]", "goroutine 1 [running]:",
           "main.main()", "\t/tmp/jl/go/src/gen/main.go:17 +0x7d"),
          ("panic", "runtime error: index out of range [<n>] with length <n>"):
          ("goroutine 24 [running]:", "main.main.func1({0x3b?, 0xffffffffffffffff?}, 0x4a6693?)",
           "created by net/http.(*Server).Serve"),
          ("panic", "job <n> failed"): ("\tpanic: cleanup failed for job 9", "main.main()"),
          ("fatal error", "concurrent map writes"): ("goroutine 28 [running]:", "goroutine 1 [semacquire]:")}),
    # Logger#fatal(e) of a NoMethodError on Ruby 3.1: its message holds error_highlight's code and caret, the
    # class after the caret (it was no exception: only the uncaught one was counted)
    Case("ruby-logger.log", {"info": 1, "error": 4, "critical": 1, "warning": 1},
         {("ActiveRecordNotFound", "Couldn't find User with 'id'=<n>"): 4,
          ("NoMethodError", "undefined method `upcase' for nil:NilClass"): 2},
         {("ActiveRecordNotFound", "Couldn't find User with 'id'=<n>"):
          ("E, [2026-12-04T19:40:09.581825 #2168] ERROR -- : Couldn't find User with 'id'=1 (ActiveRecordNotFound)",
           "gen.rb:4:in `find'", "gen.rb:6:in `<main>'")}),
    Case("rails-debug-exceptions.log", {"info": 2, "critical": 2},
         {("RecordNotFound", "Couldn't find User with 'id'=<n>"): 2},
         {("RecordNotFound", "Couldn't find User with 'id'=<n>"):
          ("[4f1c2a9e-77b0-4c1e-9a3d-111111111111] RecordNotFound (Couldn't find User with 'id'=1):",
           "[4f1c2a9e-77b0-4c1e-9a3d-111111111111] gen_rails.rb:13:in `block in <main>'")},
         # the FATAL record's own line is the request's tag alone: its class is the exception on the next
         # line (it was "[<uuid>]", one class for every exception of every request)
         messages={("critical", "RecordNotFound (Couldn't find User with 'id'=<n>)"): 2}),
    Case("ruby34-uncaught.txt", {},
         {("NoMethodError", "undefined method 'time' for an instance of Integer"): 1},
         {("NoMethodError", "undefined method 'time' for an instance of Integer"): ("\tfrom test.rb:2:in '<main>'",)}),
    Case("logrus-text.log", {"info": 1, "error": 3, "warning": 1},
         {("error", "dial tcp <ip>: connect: connection refused"): 2, ("error", 'parse "…": invalid URI'): 1},
         messages={("error", "request failed"): 2, ("warning", "slow query"): 1, ("error", 'bad "callback" URL'): 1}),
    Case("logback-logstash-encoder.jsonl", {"info": 1, "error": 2, "warning": 1},
         {("java.lang.RuntimeException", "request <n> failed"): 2},
         {("java.lang.RuntimeException", "request <n> failed"):
          ("java.lang.RuntimeException: request 1 failed", "\tat App.main(App.java:8)",
           "Caused by: java.lang.IllegalStateException: order 1 not found")},
         json_lines=4, causes={("java.lang.RuntimeException", "request <n> failed"): "java.lang.IllegalStateException"}),
    Case("logback-text.log", {"info": 1, "error": 2, "warning": 1},
         {("java.lang.RuntimeException", "request <n> failed"): 2},
         {("java.lang.RuntimeException", "request <n> failed"):
          ("java.lang.RuntimeException: request 1 failed", "\tat App.load(App.java:4)")},
         causes={("java.lang.RuntimeException", "request <n> failed"): "java.lang.IllegalStateException"}),
    Case("java-uncaught.txt", {},
         {("java.lang.RuntimeException", "request failed"): 3,
          ("java.lang.NullPointerException", 'Cannot invoke "Object.toString()" because "…" is null'): 1},
         {("java.lang.RuntimeException", "request failed"):
          ("java.lang.RuntimeException: request failed", "\tat Main.handle(Main.java:4)",
           "Caused by: java.lang.IllegalStateException: order 1 not found in shard 0x7f3a")},
         causes={("java.lang.RuntimeException", "request failed"): "java.lang.IllegalStateException"}),
    # logging.exception: a message of several lines, tracebacks chained both ways, exception groups whose
    # sub-exceptions have tracebacks of their own (their "| Traceback" headers are no chain), an uncaught one
    *(Case(f"python3{v}-chained-groups.log", {"error": 8},
           {("RuntimeError", "lookup failed for user <n> at <hex>"): 3,
            ("ValueError", "invalid literal for int() with base <n>: '…'"): 2,
            ("ExceptionGroup", "batch <n> failed (<n> sub-exceptions)"): 4},
           {("ExceptionGroup", "batch <n> failed (<n> sub-exceptions)"):
            ("  | ExceptionGroup: batch 1 failed (2 sub-exceptions)", "    | ValueError: bad item 2"),
            ("ValueError", "invalid literal for int() with base <n>: '…'"):
            ("KeyError: 'user-1'", "During handling of the above exception, another exception occurred:",
             "ValueError: invalid literal for int() with base 10: 'abc1'")},
           messages={("error", "[shop.orders] request <uuid> failed"): 2,
                     ("error", "[shop.orders] handler failed for user <n>"): 2,
                     ("error", "[shop.orders] batch <n> failed"): 2, ("error", "[shop.orders] rest of batch <n>"): 2},
           causes={("RuntimeError", "lookup failed for user <n> at <hex>"): "KeyError",
                   ("ValueError", "invalid literal for int() with base <n>: '…'"): "KeyError"})
      for v in ("11", "13")),
    # Node's own report of an uncaught exception: the place, the source line and its caret are no log
    # lines; an unhandled rejection is grouped by what the promise was rejected with
    Case("node20-uncaught.txt", {"error": 6},
         {("TypeError", "Cannot read properties of undefined (reading 'id')"): 6,
          ("Error", "order <n> not found"): 2, ("UnhandledPromiseRejection", "oops <n>"): 2,
          ("RangeError", "bad offset <n>"): 2, ("Error", "connect ECONNREFUSED <ip>"): 2,
          ("DbError", "query failed for tenant <n>"): 2,
          ("SyntaxError", "Expected property name or '…' in JSON at position <n>"): 2},
         {("Error", "connect ECONNREFUSED <ip>"):
          ("Error: connect ECONNREFUSED 127.0.0.1:1", "Emitted 'error' event on Socket instance at:",
           "    at process.processTicksAndRejections (node:internal/process/task_queues:82:21) {")},
         messages={("error", "order <n> not found"): 2, ("error", "connect ECONNREFUSED <ip>"): 2,
                   ("error", 'originated either by throwing inside of an async function without a catch block, or by '
                             'rejecting a promise which was not handled with .catch(). The promise rejected with the '
                             'reason "…".'): 2}),
    # PM2 (--time, --log-date-format) writes a time stamp before every line of the program's output
    Case("pm2-time-error.log", {},
         {("TypeError", "Cannot read properties of undefined (reading 'id')"): 3, ("RangeError", "offset <n> out of range"): 2},
         {("RangeError", "offset <n> out of range"):
          ("RangeError: offset 276 out of range", "    at Timeout._onTimeout (/tmp/drill/pm2/app.js:8:35)")}),
    Case("pm2-date-format-error.log", {},
         {("TypeError", "Cannot read properties of undefined (reading 'id')"): 1, ("RangeError", "offset <n> out of range"): 1}),
    Case("pm2-time-out.log", {"error": 6},
         {("TypeError", "Cannot read properties of undefined (reading 'id')"): 3, ("Error", "connect ECONNREFUSED <ip>"): 3},
         messages={("error", "order <n> failed"): 3, ("error", "connect ECONNREFUSED <ip>"): 3}),
    # java.util.logging's SimpleFormatter, a Suppressed exception, a message of two lines, a cause chain
    Case("java17-jul.txt", {"error": 8, "warning": 4},
         {("java.lang.RuntimeException", "request <n> failed"): 4,
          ("java.util.concurrent.CompletionException", "java.lang.RuntimeException: request <n> failed"): 4,
          ("java.sql.SQLException", 'ERROR: duplicate key value violates unique constraint "users_email_key"'): 4,
          ("java.lang.NullPointerException", 'Cannot invoke "Object.toString()" because "…" is null'): 4,
          ("java.lang.ArrayIndexOutOfBoundsException", "Index <n> out of bounds for length <n>"): 2},
         {("java.sql.SQLException", 'ERROR: duplicate key value violates unique constraint "users_email_key"'):
          ("  Detail: Key (email)=(u1@x.org) already exists.", "\tSuppressed: java.io.IOException: close failed for conn 1")},
         causes={("java.lang.RuntimeException", "request <n> failed"): "java.lang.IllegalStateException",
                 ("java.util.concurrent.CompletionException", "java.lang.RuntimeException: request <n> failed"):
                 "java.lang.IllegalStateException"}),
    # Apache's error log: PHP writes an uncaught exception and its stack on one line (copied, see the README)
    Case("php-apache-error.log", {"error": 2},
         {("PDOException", "PDO::__construct(): php_network_getaddresses: getaddrinfo failed: No address"): 1,
          ("PDOException", "PDO::__construct(): php_network_getaddresses: getaddrinfo failed: No address associated "
                           "with hostname"): 1}),
    # Celery's "[… ERROR/MainProcess] …": the level word before a slash and the process name
    Case("celery-worker.log", {"warning": 3, "info": 7, "error": 3},
         {("KeyError", "'…'"): 2, ("ConnectionError", "gateway <ip> unreachable"): 1},
         {("ConnectionError", "gateway <ip> unreachable"):
          ("Traceback (most recent call last):", "ConnectionError: gateway 10.0.0.3 unreachable")},
         messages={("warning", "No hostname was supplied. Reverting to default 'localhost'"): 3,
                   ("error", "Task tasks.charge[<uuid>] raised unexpected: KeyError('…')"): 2,
                   ("error", "Task tasks.charge[<uuid>] raised unexpected: ConnectionError('…')"): 1}),
    Case("django-verbose.log", {"error": 3, "warning": 1},
         {("KeyError", "'…'"): 2, ("KeyError", "None"): 1},
         {("KeyError", "'…'"): ("Traceback (most recent call last):", "KeyError: 'order-5'")},
         messages={("error", "<time> log <n> <n> Internal Server Error: /orders/<n>"): 3,
                   ("warning", "<time> log <n> <n> Not Found: /missing"): 1}),
    Case("gunicorn-error.log", {"info": 8, "error": 2},
         {("KeyError", "'…'"): 2},
         {("KeyError", "'…'"): ("Traceback (most recent call last):", '  File "/tmp/jl/wsgiapp.py", line 3, in app',
                                 "KeyError: 'user-1'")}),
    # a program's output after a traceback (captured prints, a banner, a statement) is read as no message of its
    # own; each traceback counts once, the one right after the next too
    Case("gunicorn-capture-output.log", {"info": 18, "error": 4},
         {("KeyError", "'…'"): 4}, {("KeyError", "'…'"): ("KeyError: '/a'", "row 3: /sql processed")},
         messages={("error", f"Error handling request GET /{p}"): 1 for p in ("a", "sql", "b", "c")}),
    Case("python311-print-after-traceback.log", {"error": 4},
         {("KeyError", "'…'"): 3, ("ValueError", "invalid literal for int() with base <n>: '…'"): 1,
          ("RuntimeError", "final crash"): 1},
         {("KeyError", "'…'"): ("KeyError: 'user-0'",), ("RuntimeError", "final crash"): ("RuntimeError: final crash",)}),
    # JVM exceptions in JSON: grouped by the outermost exception and its message's first line, split by the
    # root cause — log4j2's "thrown" object, logstash-logback-encoder's stack_trace also printed root cause
    # first ("Wrapped by:"), as logback's %rootException prints it in text: one group for all of them
    Case("log4j2-jsonlayout.jsonl", {"error": 4}, {("java.lang.RuntimeException", "request <n> failed"): 4},
         {("java.lang.RuntimeException", "request <n> failed"):
          ("java.lang.RuntimeException: request 1 failed", "\tat Jvm.main(Jvm.java:9)",
           "Caused by: java.lang.IllegalStateException: order 1 not found")},
         json_lines=4, causes={("java.lang.RuntimeException", "request <n> failed"): "java.lang.IllegalStateException"}),
    Case("logback-logstash-chains.jsonl", {"error": 4}, {("java.lang.RuntimeException", "request <n> failed"): 4},
         json_lines=4, causes={("java.lang.RuntimeException", "request <n> failed"): "java.lang.IllegalStateException"}),
    Case("logback-rootexception.log", {"error": 2}, {("java.lang.RuntimeException", "request <n> failed"): 2},
         {("java.lang.RuntimeException", "request <n> failed"):
          ("java.lang.IllegalStateException: order 1 not found", "Wrapped by: java.lang.RuntimeException: request 1 "
           "failed", "\tat Jvm.main(Jvm.java:9)")},
         causes={("java.lang.RuntimeException", "request <n> failed"): "java.lang.IllegalStateException"}),
    # pino appends the causes' messages to an error's and writes "caused by:": the error's own message, its
    # cause; bunyan writes no Error.cause (a group of its own, without cause), a VError's "Caused by:"
    Case("pino-bunyan-causes.jsonl", {"error": 8},
         {("Error", "request <n> failed"): 4, ("VError", "order <n> failed: connect ECONNREFUSED <ip>"): 4},
         json_lines=8, causes={("Error", "request <n> failed"): ("DbError", ""),
                               ("VError", "order <n> failed: connect ECONNREFUSED <ip>"): ("DbError",)}),
    # JVM chains: a group is the outermost exception (what was thrown), split by its root cause (the last
    # "Caused by:" at the start of a line; the indented one is a Suppressed exception's cause)
    Case("java17-chain-suppressed.txt", {},
         {("java.lang.RuntimeException", "request <n> failed"): 4},
         causes={("java.lang.RuntimeException", "request <n> failed"):
                 ("java.lang.IllegalStateException", "java.sql.SQLTimeoutException")}),
    # Monolog's LineFormatter (Laravel: the stack on the lines after; Symfony: on one line), composed after
    # the documented output (see the README): the exception in the context, its message class without it
    Case("laravel-monolog.log", {"error": 3, "info": 1, "warning": 1},
         {("Illuminate\\Database\\QueryException", "SQLSTATE[HY000] [<n>] Connection refused (SQL: select * from "
           "`users` where `id` = <n> limit <n>)"): 2, ("ErrorException", "Undefined variable $order"): 1},
         {("ErrorException", "Undefined variable $order"):
          ("[stacktrace]", "#1 {main}", '"} ')},
         messages={("error", "SQLSTATE[HY000] [<n>] Connection refused (SQL: select * from `users` where `id` = <n> "
                             "limit <n>)"): 2, ("error", "Undefined variable $order"): 1,
                   ("warning", "slow request <n> ms"): 1},
         causes={("Illuminate\\Database\\QueryException", "SQLSTATE[HY000] [<n>] Connection refused (SQL: select * "
                  "from `users` where `id` = <n> limit <n>)"): ("", "PDOException")}),
    # PHP prints an uncaught chain from its first exception; "Next …" is the one raised after it (composed)
    Case("php-next-chain.log", {"critical": 1},
         {("RuntimeException", "cannot load order <n>"): 1},
         causes={("RuntimeException", "cannot load order <n>"): "PDOException"}),
    Case("symfony-monolog.log", {"error": 1, "info": 1},
         {("Symfony\\Component\\HttpKernel\\Exception\\HttpException", "This value should not be blank."): 1},
         causes={("Symfony\\Component\\HttpKernel\\Exception\\HttpException", "This value should not be blank."):
                 "Symfony\\Component\\Validator\\Exception\\ValidationFailedException"}),
    # Node's Error.cause (util.inspect: "[cause]: …" two spaces deeper per link) and AggregateError ("[errors]: [",
    # Promise.any's "[AggregateError: …] {" without frames): grouped by the outermost error, apart by the
    # innermost cause, an AggregateError without one by its first error; a cause that is no error is none
    Case("node20-error-chains.txt", {"error": 8},
         {("Error", "request <n> failed"): 6, ("Error", "job <n> failed"): 2,
          ("AggregateError", "All promises were rejected"): 2, ("AggregateError", "all <n> replicas failed"): 2},
         {("AggregateError", "All promises were rejected"):
          ("[AggregateError: All promises were rejected] {", "    RangeError: offset 1 out of range", "}"),
          ("Error", "job <n> failed"): ("    at Object.<anonymous> (/tmp/ncdrill/node_chains.js:11:40)",
                                        "  [cause]: 'timeout'", "}")},
         causes={("Error", "request <n> failed"): ("DbError", "SyntaxError"),
                 ("AggregateError", "All promises were rejected"): "TypeError",
                 ("AggregateError", "all <n> replicas failed"): "DbError"}),
    # two processes' traces line by line in one file, each line with its writer's prefix (syslog's "app[101]: ",
    # pm2 logs' "0|api | "): each trace read whole, none cut by the other's lines
    Case("syslog-pm2-interleaved.log", {"error": 4},
         {("KeyError", "'…'"): 1, ("ValueError", "invalid order id 'x7'"): 1, ("Error", "request <n> failed"): 2},
         {("KeyError", "'…'"): ("Traceback (most recent call last):", '    {}["user-1"]', "KeyError: 'user-1'"),
          ("ValueError", "invalid order id 'x7'"):
          ("KeyError: 'order-7'", "", "The above exception was the direct cause of the following exception:")},
         messages={("error", "request failed"): 1, ("error", "order import failed"): 1,
                   ("error", "request <n> failed"): 2},
         causes={("ValueError", "invalid order id 'x7'"): "KeyError",
                 ("Error", "request <n> failed"): ("DbError", "SyntaxError")}),
    # console.error('payment failed', err) (util.format: the message, then the error's stack on the same line), and
    # console.error(err) with the error's properties after its frames (a system error's errno, code, syscall …):
    # grouped as the error alone is, the properties part of its example
    Case("node20-console-error.txt", {"error": 8},
         {("TypeError", "Cannot read properties of undefined (reading 'id')"): 2,
          ("CardError", "card declined for order <n>"): 4, ("Error", "order <n> not found"): 2,
          ("TypeError", 'The "path" argument must be of type string or an instance of Buffer or URL. Received undefined'): 4,
          ("Error", "upstream timeout"): 2, ("Error", "connect ECONNREFUSED <ip>"): 4},
         {("CardError", "card declined for order <n>"):
          ("payment failed: CardError: card declined for order 101", "  declineCode: 'insufficient_funds'", "}"),
          ("Error", "upstream timeout"): ("sync failed Error: upstream timeout", "  [cause]: RangeError: offset 1 out of range"),
          ("Error", "connect ECONNREFUSED <ip>"): ("  code: 'ECONNREFUSED',", "  port: 1", "}")},
         messages={("error", "order <n> not found"): 2, ("error", "upstream timeout"): 2,
                   ("error", "connect ECONNREFUSED <ip>"): 4},
         causes={("Error", "upstream timeout"): "RangeError"}),
    # docker compose logs (composed from real output, see the README): containers' lines alternating, each behind
    # its prefix — read per container, the prefix, the colours and --timestamps' time stamp no part of a line
    Case("compose-v2-ansi.log", {"info": 1, "error": 1},
         {("TypeError", 'The "path" argument must be of type string or an instance of Buffer or URL. Received undefined'): 2,
          ("CardError", "card declined for order <n>"): 2, ("KeyError", "'…'"): 1},
         {("TypeError", 'The "path" argument must be of type string or an instance of Buffer or URL. Received undefined'):
          ('TypeError [ERR_INVALID_ARG_TYPE]: The "path" argument must be of type string or an instance of Buffer or '
           'URL. Received undefined', "    at Object.openSync (node:fs:571:10)",
           "    at Object.<anonymous> (/tmp/apperr/node_console.js:19:12)", "  code: 'ERR_INVALID_ARG_TYPE'", "}"),
          ("KeyError", "'…'"): ("Traceback (most recent call last):", '    {}["job-7"]', "KeyError: 'job-7'")},
         messages={("error", "worker: job <n> failed"): 1}),
    Case("compose-v2-timestamps.log", {"error": 4},
         {("TypeError", "Cannot read properties of undefined (reading 'id')"): 2,
          ("CardError", "card declined for order <n>"): 2, ("Error", "order <n> not found"): 2,
          ("TypeError", 'The "path" argument must be of type string or an instance of Buffer or URL. Received undefined'): 2,
          ("Error", "upstream timeout"): 2},
         {("Error", "upstream timeout"):
          ("sync failed Error: upstream timeout", "    ... 4 lines matching cause stack trace ...",
           "  [cause]: RangeError: offset 1 out of range", "}")},
         messages={("error", "order <n> not found"): 2, ("error", "upstream timeout"): 2},
         causes={("Error", "upstream timeout"): "RangeError"}),
    Case("compose-v1.log", {"error": 3, "info": 1},
         {("Error", "connect ECONNREFUSED <ip>"): 2, ("KeyError", "'…'"): 1},
         {("Error", "connect ECONNREFUSED <ip>"):
          ("Error: connect ECONNREFUSED 127.0.0.1:1", "  errno: -111,", "  port: 1", "}"),
          ("KeyError", "'…'"): ("Traceback (most recent call last):", "KeyError: 'job-7'")},
         messages={("error", "connect ECONNREFUSED <ip>"): 2, ("error", "worker: job <n> failed"): 1}),
    # messages of several lines: a JVM and Node print the further lines before the frames (a cause's too), Python after
    # the exception's line and before the chain's next traceback — grouped by the first line, the rest in the example
    Case("java17-multiline-message.txt", {},
         {("java.lang.RuntimeException", "wrapper <n>"): 2, ("java.lang.IllegalStateException", "order <n> failed"): 2},
         {("java.lang.RuntimeException", "wrapper <n>"):
          ("java.lang.RuntimeException: wrapper 1", "more", "\tat MultiLine.g(MultiLine.java:10)",
           "Caused by: java.lang.IllegalStateException: bad state 1", "second line", "", "after blank",
           "\tat MultiLine.f(MultiLine.java:8)"),
          ("java.lang.IllegalStateException", "order <n> failed"): ("line2 of order 1", "line3", "\tat MultiLine.main(MultiLine.java:6)")},
         causes={("java.lang.RuntimeException", "wrapper <n>"): "java.lang.IllegalStateException"}),
    # Node: the same, and errors whose name does not end in Error/Exception (a class with its name set, alone, after a
    # message, uncaught), a name in brackets after the class (Timeout [Error], DOMException [AbortError]): by the class
    Case("node20-multiline-named.txt", {"error": 4},
         {("Error", "query <n> failed"): 2, ("TypeError", "bad <n>"): 2, ("RangeError", "uncaught <n>"): 2,
          ("PaymentDeclined", "card declined for order <n>"): 6, ("Timeout", "timed out after <n> ms"): 2,
          ("DOMException", "This operation was aborted"): 4},
         {("Error", "query <n> failed"): ("Error: query 1 failed", "DETAIL: key 1", "HINT: retry"),
          ("TypeError", "bad <n>"): ("job failed TypeError: bad 1", "line two"),
          ("PaymentDeclined", "card declined for order <n>"):
          ("payment failed PaymentDeclined: card declined for order 1", "  code: 'card_declined'", "}"),
          ("DOMException", "This operation was aborted"):
          ("fetch aborted DOMException [AbortError]: This operation was aborted",
           "    at new DOMException (node:internal/per_context/domexception:53:5)")}),
    # SQLAlchemy around psycopg: the DETAIL line of the cause does not cut the chain (it made the cause a group of
    # its own), nor are "(Background on this error at: …)" lines error messages; logged as text and as JSON lines
    # with the traceback in exc_info (whose exception was lost: the last line of the text was taken for it)
    Case("python-multiline-sqlalchemy.log", {"error": 6, "info": 2},
         {("sqlalchemy.exc.IntegrityError", '(psycopg.errors.UniqueViolation) duplicate key value violates unique '
           'constraint "u_email_key"'): 2,
          ("sqlalchemy.exc.OperationalError", '(psycopg.OperationalError) connection failed: connection to server at '
           '"…", port <n> failed: Connection refused'): 2,
          ("ValueError", "bad input <n>"): 2, ("ValueError", "uncaught <n>"): 2},
         {("sqlalchemy.exc.IntegrityError", '(psycopg.errors.UniqueViolation) duplicate key value violates unique '
           'constraint "u_email_key"'):
          ("DETAIL:  Key (email)=(a@b.c) already exists.", "The above exception was the direct cause of the following "
           "exception:", "[SQL: insert into u values (%(i)s, %(m)s)]",
           "(Background on this error at: https://sqlalche.me/e/21/gkpj)"),
          ("ValueError", "uncaught <n>"): ("ValueError: uncaught 1", "second line 1")},
         messages={("error", "[app] signup failed for user <n>"): 2, ("error", "[app] db down"): 2,
                   ("error", "[app] parse failed"): 2},
         causes={("sqlalchemy.exc.IntegrityError", '(psycopg.errors.UniqueViolation) duplicate key value violates '
                  'unique constraint "u_email_key"'): "psycopg.errors.UniqueViolation",
                 ("sqlalchemy.exc.OperationalError", '(psycopg.OperationalError) connection failed: connection to '
                  'server at "…", port <n> failed: Connection refused'): "psycopg.OperationalError"}),
    Case("python-multiline-sqlalchemy.jsonl", {"error": 6, "info": 2},
         {("sqlalchemy.exc.IntegrityError", '(psycopg.errors.UniqueViolation) duplicate key value violates unique '
           'constraint "u_email_key"'): 2,
          ("sqlalchemy.exc.OperationalError", '(psycopg.OperationalError) connection failed: connection to server at '
           '"…", port <n> failed: Connection refused'): 2,
          ("ValueError", "bad input <n>"): 2},
         {("ValueError", "bad input <n>"): ("ValueError: bad input 1", "second line")},
         json_lines=8,
         causes={("sqlalchemy.exc.IntegrityError", '(psycopg.errors.UniqueViolation) duplicate key value violates '
                  'unique constraint "u_email_key"'): "psycopg.errors.UniqueViolation",
                 ("sqlalchemy.exc.OperationalError", '(psycopg.OperationalError) connection failed: connection to '
                  'server at "…", port <n> failed: Connection refused'): "psycopg.OperationalError"}),
    # a thread pool's exceptions whose message holds an object's default toString() (its identity hash code in hex:
    # eight digits, or fewer) make one group, logged by logback or uncaught in any pool thread; the JVM's one line of
    # -XX:+ExitOnOutOfMemoryError is an exception; a class loader's hash code in a ClassCastException (`` @c8e4bb0``); an
    # exception without a message logged by logback (``…Exception: null``) and uncaught (the class alone): one group
    Case("java17-pool-hashcodes.txt", {"error": 4},
         {("java.lang.IllegalStateException", "order PoolHashes$Order@<hex> is locked by pool-<n>-thread-<n>"): 4,
          ("java.lang.IllegalArgumentException", "bad amount -<n> for PoolHashes$Order@<hex>"): 1,
          ("java.lang.OutOfMemoryError", "Java heap space"): 1,
          ("java.lang.ClassCastException", "class LoaderCast$Thing cannot be cast to class java.util.function.Supplier "
           "(LoaderCast$Thing is in unnamed module of loader LoaderCast$Loader @<hex>; java.util.function.Supplier is in "
           "module java.base of loader 'bootstrap')"): 2,
          ("java.util.ConcurrentModificationException", ""): 2},
         {("java.lang.IllegalStateException", "order PoolHashes$Order@<hex> is locked by pool-<n>-thread-<n>"):
          ("java.lang.IllegalStateException: order PoolHashes$Order@5f9b2141 is locked by pool-1-thread-1",
           "\tat PoolHashes.lock(PoolHashes.java:11)"),
          ("java.lang.OutOfMemoryError", "Java heap space"):
          ("Terminating due to java.lang.OutOfMemoryError: Java heap space",)}),
    # Node's report of an uncaught throw of a value that is no Error (right under the caret), grouped by the value
    # as type "Uncaught" (an object printed over several lines: whole); V8's fatal out-of-memory error; an Error's
    # report and a worker's (the main thread's place and caret, then the worker's) are no such value; console.trace()'s
    # ``Trace: …`` and its frames are no exception
    Case("node20-thrown-values.txt", {"critical": 1, "debug": 2},
         {("Uncaught", "payment <n> declined"): 2, ("Uncaught", "{ code: <n>, order: <n> }"): 2,
          ("Uncaught", "{ code: 'E_PAYMENT_DECLINED', order: <n>, customer: { id: <n>, email: '…' }, retry: false }"): 2,
          ("Uncaught", "timer <n> expired"): 2,
          ("TypeError", "Cannot read properties of undefined (reading 'name')"): 2,
          ("TypeError", "worker <n> failed"): 2,
          ("TypeError", "Cannot read properties of null (reading 'order1')"): 1,
          ("TypeError", "Cannot read properties of null (reading 'order2')"): 1,
          ("FATAL ERROR", "Reached heap limit Allocation failed - JavaScript heap out of memory"): 1},
         {("Uncaught", "payment <n> declined"):
          ("/tmp/gen/node_thrown.js:6", "if (kind === 'string') throw `payment ${id} declined`;", "payment 1 declined",
           "(Use `node --trace-uncaught ...` to show where the exception was thrown)"),
          ("Uncaught", "{ code: 'E_PAYMENT_DECLINED', order: <n>, customer: { id: <n>, email: '…' }, retry: false }"):
          ("{", "  customer: { id: 7, email: 'c1@example.org' },", "}"),
          ("FATAL ERROR", "Reached heap limit Allocation failed - JavaScript heap out of memory"):
          ("----- Native stack trace -----",
           " 1: 0xb78db3 node::OOMErrorHandler(char const*, v8::OOMDetails const&) [node]")},
         messages={("critical", "ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory"): 1}),
    # Node's uncaught Error printed without its stack (``[TypeError: …]`` under the caret and a blank line; its properties
    # and cause after it) is of its type; an unhandled rejection Node warned of (``--unhandled-rejections=warn``:
    # ``(node:PID) UnhandledPromiseRejectionWarning: …``) is of the error's type when its frames follow, else an
    # ``UnhandledPromiseRejection`` of what the promise was rejected with — the groups the rejection makes when it ends
    # the process (``#<Object>``: both); Node's hint and sentence after the warning are no records
    Case("node20-no-stack-rejection-warn.txt", {"error": 2},
         {("TypeError", "order <n> has no total"): 2, ("Error", "upstream <n> refused"): 4,
          ("UnhandledPromiseRejection", "#<Object>"): 4, ("RangeError", "bad offset <n>"): 2,
          ("Error", "charge <n> failed"): 2, ("UnhandledPromiseRejection", "oops <n>"): 2,
          ("UnhandledPromiseRejection", "Error: lost <n>"): 2, ("Error", "first <n>"): 2, ("Error", "second <n>"): 2},
         {("TypeError", "order <n> has no total"): ("/tmp/gen/node_nostack.js:6", "[TypeError: order 1 has no total]"),
          ("Error", "upstream <n> refused"): ("  [cause]: RangeError: port 1 out of range", "}"),
          ("RangeError", "bad offset <n>"): ("    at Object.<anonymous> (/tmp/gen/node_nostack.js:14:39)",
                                              "(Use `node --trace-warnings ...` to show where the warning was created)")},
         messages={("error", 'originated either by throwing inside of an async function without a catch block, or by '
                             'rejecting a promise which was not handled with .catch(). The promise rejected with the '
                             'reason "…".'): 2},
         causes={("Error", "upstream <n> refused"): ("", "RangeError")}),
    # logback's ``%-5level [%thread] %logger - %msg`` and Spring Boot's ``%5p PID --- [%t] %logger : %m`` print the
    # thread inside the message: one class for the same message of every thread; the default ``[%thread] %-5level``
    # puts it before the level (a level word in a thread's name, ``[error-reporter] WARN``, is no level)
    Case("logback-thread-after-level.log", {"warning": 15, "error": 15}, {},
         messages={("warning", "com.shop.OrderService - slow query <n> ms"): 10,
                   ("error", "com.shop.OrderService - payment failed for order <n>"): 10,
                   ("warning", "<n> --- com.shop.OrderService : slow query <n> ms"): 5,
                   ("error", "<n> --- com.shop.OrderService : payment failed for order <n>"): 5}),
    # Go 1.19 binaries (generators/go_runtime.go): the same crash in two runs is two occurrences of one group
    # (the second "fatal error: …" after the first's goroutines was taken for the runtime's repeated line, and
    # a panic whose line was the same in both runs, a struct's address, was counted once); net/http's recovered
    # panic is classed as the panic is; the standard logger's lines have no level (only "ERROR:" in the text)
    Case("go119-runtime-log.txt", {"error": 2, "critical": 10},
         {("fatal error", "all goroutines are asleep - deadlock!"): 2,
          ("panic", "runtime error: slice bounds out of range [:<n>] with capacity <n>"): 2,
          ("panic", "(main.Order) <hex>"): 2, ("panic", "order <n> not found"): 4},
         {("fatal error", "all goroutines are asleep - deadlock!"):
          ("goroutine 1 [chan send]:", "created by main.main"),
          ("panic", "order <n> not found"): ("panic: order 1 not found", "goroutine 1 [running]:")},
         messages={("error", "payment <n> declined: card expired"): 2,
                   ("critical", "all goroutines are asleep - deadlock!"): 2,
                   ("critical", "runtime error: slice bounds out of range [:<n>] with capacity <n>"): 2,
                   ("critical", "(main.Order) <hex>"): 2, ("critical", "order <n> not found"): 4}),
    # slog's JSONHandler (golang.org/x/exp/slog, as Go 1.21's log/slog writes it): the error in "err" or "error"
    Case("go-x-exp-slog.jsonl", {"info": 2, "error": 6, "warning": 2},
         {("error", "dial tcp <ip>: connect: connection refused"): 2, ("error", "order <n> not found"): 2,
          ("error", "card <n> expired"): 2}, json_lines=10,
         messages={("error", "request failed"): 2, ("error", "checkout failed"): 2, ("warning", "slow query"): 2,
                   ("error", "payment declined"): 2}),
    # Rails 6.1's DebugExceptions through an untagged logger: one FATAL record of several lines; a NoMethodError's
    # message holds Ruby 3.1's error_highlight code and caret, its "):" after them (it was no exception, its
    # record of class "")
    Case("rails61-untagged-fatal.log", {"info": 4, "critical": 4},
         {("ActiveRecord::RecordNotFound", "Couldn't find User with 'id'=<n>"): 2,
          ("NoMethodError", "undefined method `name' for nil:NilClass"): 2},
         {("NoMethodError", "undefined method `name' for nil:NilClass"):
          ("                      ^^^^^):", "ruby_app.rb:29:in `show'", "ruby_app.rb:49:in `<main>'")},
         messages={("critical", "ActiveRecord::RecordNotFound (Couldn't find User with 'id'=<n>)"): 2,
                   ("critical", "NoMethodError (undefined method `name' for nil:NilClass)"): 2}),
    # Ruby 3.1: Logger#error(e), then uncaught exceptions (stderr): a NoMethodError with error_highlight's code
    # and caret before its backtrace, a RuntimeError raised in a rescue with its cause printed after it (the
    # cause is its root, not a crash of its own; the next run's crash after it is one)
    Case("ruby31-uncaught-cause.log", {"error": 4},
         {("ActiveRecord::RecordNotFound", "Couldn't find User with 'id'=<n>"): 2,
          ("RuntimeError", "checkout <n> failed"): 4, ("NoMethodError", "undefined method `name' for nil:NilClass"): 2},
         {("NoMethodError", "undefined method `name' for nil:NilClass"):
          ("                      ^^^^^", "\tfrom ruby_app.rb:65:in `<main>'")},
         causes={("RuntimeError", "checkout <n> failed"): ("", "PaymentGateway::Declined")},
         messages={("error", "Couldn't find User with 'id'=<n> (ActiveRecord::RecordNotFound)"): 2,
                   ("error", "checkout <n> failed (RuntimeError)"): 2}),
    # PHP 8.2 CLI with log_errors (stderr), and the same lines in an error_log file (a time stamp before each):
    # uncaught exceptions (one with a previous), an Error, warnings, a notice, a deprecation (a warning, as
    # Sentry's PHP SDK has it; it was not counted), E_USER_ERROR's fatal error
    *[Case(name, {"critical": 8, "warning": 8, "info": 2},
           {("InvalidArgumentException", "order id <n> is not valid"): 2, ("RuntimeException", "cannot load order <n>"): 2,
            ("Error", "Call to a member function name() on null"): 2, ("PHP Fatal error", "payment <n> failed"): 2},
           {("RuntimeException", "cannot load order <n>"):
            ("Next RuntimeException: cannot load order 1 in /tmp/h-applangs-gen/php/www/app.php:13",
             "  thrown in /tmp/h-applangs-gen/php/www/app.php on line 13")},
           causes={("RuntimeException", "cannot load order <n>"): "PDOException"},
           messages={**{("critical", f"Uncaught {m} in /tmp/h-applangs-gen/php/www/app.php:<n>"): 2 for m in (
               "InvalidArgumentException: order id <n> is not valid", "PDOException: could not find driver",
               "Error: Call to a member function name() on null")},
               **{("warning", f"{m} in /tmp/h-applangs-gen/php/www/app.php on line <n>"): 2 for m in (
                   "Undefined array key <n>", "Undefined variable $undefined",
                   "fopen(/nonexistent/<n>.csv): Failed to open stream: No such file or directory",
                   "strlen(): Passing null to parameter #<n> ($string) of type string is deprecated")},
               ("critical", "payment <n> failed in /tmp/h-applangs-gen/php/www/app.php on line <n>"): 2})
      for name in ("php82-cli-stderr.txt", "php82-error-log.log")],
    # Monolog 2.9 as Laravel configures it (run, not composed): a previous exception, and context after the
    # exception (its closing line '","order":1} ' is the record's, the example's end)
    Case("laravel-monolog29.log", {"info": 2, "error": 2, "critical": 2, "warning": 2},
         {("RuntimeException", "cannot load order <n>"): 2, ("DivisionByZeroError", "Division by zero"): 2},
         {("DivisionByZeroError", "Division by zero"): ("#1 {main}", '","order":1} '),
          ("RuntimeException", "cannot load order <n>"): ("[previous exception] [object] (PDOException(code: 0): "
                                                          'SQLSTATE[08006] [7] connection to server at \\"10.0.0.1\\", '
                                                          "port 5432 failed: Connection refused at "
                                                          "/tmp/h-applangs-gen/mono/monolog_laravel.php:22)",)},
         causes={("RuntimeException", "cannot load order <n>"): "PDOException"},
         messages={("error", "cannot load order <n>"): 2, ("critical", "Division by zero"): 2,
                   ("warning", "slow request <n> ms"): 2}),
    # PHP-FPM 8.2's own log of what its workers wrote (catch_workers_output), decorated ('[…] WARNING: [pool www]
    # child 123 said into stderr: "…"', a stack's lines one such line each) and not (Docker's php-fpm image):
    # read as PHP's error log is, PHP's level its message's (every line was a warning, or a notice; a chain was
    # cut into its first exception, its "in file:line" and the quote in the group)
    *[Case(name, {"info": 7, "critical": 6, "warning": 8},
           {("InvalidArgumentException", "order id <n> is not valid"): 2, ("RuntimeException", "cannot load order <n>"): 2,
            ("PHP Fatal error", "payment <n> failed"): 2},
           {("RuntimeException", "cannot load order <n>"):
            ("Next RuntimeException: cannot load order 1 in /tmp/h-applangs-gen/php/www/app.php:13",
             "  thrown in /tmp/h-applangs-gen/php/www/app.php on line 13")},
           causes={("RuntimeException", "cannot load order <n>"): "PDOException"},
           messages={**{("critical", f"Uncaught {m} in /tmp/h-applangs-gen/php/www/app.php:<n>"): 2 for m in (
               "InvalidArgumentException: order id <n> is not valid", "PDOException: could not find driver")},
               **{("warning", f"{m} in /tmp/h-applangs-gen/php/www/app.php on line <n>"): 2 for m in (
                   "Undefined array key <n>", "Undefined variable $undefined",
                   "fopen(/nonexistent/<n>.csv): Failed to open stream: No such file or directory",
                   "strlen(): Passing null to parameter #<n> ($string) of type string is deprecated")},
               ("critical", "payment <n> failed in /tmp/h-applangs-gen/php/www/app.php on line <n>"): 2})
      for name in ("php-fpm-workers.log", "php-fpm-workers-raw.log")],
    # Sidekiq's default error handler (text and JSON): a job's exception logged as "Class: message" and, in the
    # thread's next record, its backtrace — only three warnings were counted, no exception
    *(Case(name, {"info": 5, "warning": 6},
           {("PaymentGateway::Declined", "card for order <n> declined"): 2},
           {("PaymentGateway::Declined", "card for order <n> declined"): ("sidekiq_jobs.rb:19:in `perform'",)},
           json_lines=json_lines)
      for name, json_lines in (("sidekiq.log", None), ("sidekiq.jsonl", 11))),
    # Rust 1.95's panics (stderr): no exception was read, a backtrace's "core::panicking::panic" frame counted as
    # a critical message
    Case("rust-panics.txt", {"info": 9, "critical": 9},
         {("panic", "called `Option::unwrap()` on a `None` value"): 3,
          ("panic", "order id must be a number: ParseIntError { kind: InvalidDigit }"): 2,
          ("panic", "index out of bounds: the len is <n> but the index is <n>"): 2,
          ("panic", "order <n> has no lines"): 2},
         {("panic", "order <n> has no lines"): ("order 1 has no lines",
                                                 "note: run with `RUST_BACKTRACE=1` environment variable to display "
                                                 "a backtrace")},
         messages={("critical", "called `Option::unwrap()` on a `None` value"): 3,
                   ("critical", "order id must be a number: ParseIntError { kind: InvalidDigit }"): 2,
                   ("critical", "index out of bounds: the len is <n> but the index is <n>"): 2,
                   ("critical", "order <n> has no lines"): 2}),
    # a container runtime's log of two programs' output (uvicorn on stderr, structlog on stdout, line by line
    # alternating, a line split in three): Docker's json-file and the CRI format of containerd — nothing was read
    # in the first, no exception in the second
    *(Case(name, {"info": 11, "error": 5, "warning": 2},
           {("ValueError", "bad path /x/<n>"): 2, ("RuntimeError", "lookup failed for user <n> at <hex>"): 2,
            ("ValueError", "invalid literal for int() with base <n>: '…'"): 1},
           {("ValueError", "bad path /x/<n>"): ("Traceback (most recent call last):", "ValueError: bad path /x/1"),
            ("RuntimeError", "lookup failed for user <n> at <hex>"):
            ("KeyError: 'user-1'", "RuntimeError: lookup failed for user 1 at 0x7f3a2b1c")},
           causes={("RuntimeError", "lookup failed for user <n> at <hex>"): "KeyError"},
           messages={("error", "Exception in ASGI application"): 2, ("error", "request failed"): 2,
                     ("error", "bad input"): 1, ("warning", "slow query"): 1, ("warning", "payload too large: <hex>"): 1})
      for name in ("docker-json-file.log", "cri-containerd.log")),
    # the same program with Monolog's JsonFormatter (Laravel's and Symfony's JSON logging): its numeric level (400)
    # was taken for no level, and the exception in context.exception was not read
    Case("monolog-json.jsonl", {"info": 2, "error": 2, "critical": 2, "warning": 2},
         {("RuntimeException", "cannot load order <n>"): 2, ("DivisionByZeroError", "Division by zero"): 2},
         {("RuntimeException", "cannot load order <n>"):
          ("[previous exception] [object] (PDOException(code: 0): SQLSTATE[08006] [7] connection to server at "
           '"10.0.0.1", port 5432 failed: Connection refused at '
           "/work/wt-h37/tests/logs/applogs/generators/monolog_json.php:23)",)},
         json_lines=8, causes={("RuntimeException", "cannot load order <n>"): "PDOException"},
         messages={("error", "cannot load order <n>"): 2, ("critical", "Division by zero"): 2,
                   ("warning", "slow request <n> ms"): 2}),
    # loguru's file sink (blank lines between frames, "> File" where it was caught: each exception of a chain was
    # counted on its own, its cause none) and its JSON (serialize=True: no level, no exception was read)
    Case("loguru.log", {"error": 3, "warning": 1, "info": 1},
         {("RuntimeError", "payment for order <n> failed"): 2, ("ZeroDivisionError", "division by zero"): 1},
         {("RuntimeError", "payment for order <n> failed"):
          ("KeyError: 17", "The above exception was the direct cause of the following exception:",
           '> File "/work/wt-h37/tests/logs/applogs/generators/python_loguru.py", line 27, in <module>',
           "RuntimeError: payment for order 17 failed")},
         causes={("RuntimeError", "payment for order <n> failed"): "KeyError"}),
    Case("loguru.jsonl", {"error": 3, "warning": 1, "info": 1},
         {("RuntimeError", "payment for order <n> failed"): 2, ("ZeroDivisionError", "division by zero"): 1},
         {("RuntimeError", "payment for order <n> failed"):
          ("KeyError: 17", "RuntimeError: payment for order 17 failed")},
         json_lines=5, messages={("error", "checkout failed"): 2, ("warning", "slow request <n> ms"): 1,
                                 ("error", "An error has been caught in function '…', process 'MainProcess' (<n>), "
                                           "thread 'MainThread' (<n>):"): 1},
         causes={("RuntimeError", "payment for order <n> failed"): "KeyError"}),
    # winston's colorize() before json(): the level in its colours inside the JSON string (no level was counted)
    Case("winston-colorize.jsonl", {"info": 1, "warning": 1, "error": 3},
         {("TypeError", "order <n> has no total"): 2, ("error", "card declined"): 1}, json_lines=5,
         messages={("warning", "slow request <n> ms"): 1, ("error", "order <n> has no total"): 2,
                   ("error", "charge failed"): 1}),
    # .NET: Serilog's compact and JSON formats, Microsoft.Extensions.Logging's JSON console, Serilog's text file and the
    # simple console; an inner exception (`` ---> …``) is the chain's root cause, a code after the type (``(98)``,
    # ``(0x80004005)``) no part of it
    Case("dotnet-serilog-json.jsonl", {"info": 3, "warning": 1, "error": 6, "critical": 1},
         {("System.InvalidOperationException", "Sequence contains no elements"): 5,
          ("Npgsql.PostgresException", '<n>: duplicate key value violates unique constraint "users_email_key"'): 1,
          ("System.IO.IOException", "Failed to bind to address http://<ip>: address already in use."): 1},
         {("System.IO.IOException", "Failed to bind to address http://<ip>: address already in use."):
          (" ---> System.Net.Sockets.SocketException (98): Address already in use",
           "   --- End of inner exception stack trace ---")},
         json_lines=11,
         messages={("warning", "Slow request {Path} took {Elapsed} ms"): 1,
                   ("error", "Failed to process order {OrderId}"): 3, ("error", "Saving user {Email} failed"): 1,
                   ("critical", "Host terminated unexpectedly"): 1, ("error", "Failed to process order <n>"): 1,
                   ("error", "An unhandled exception has occurred while executing the request."): 1},
         causes={("System.IO.IOException", "Failed to bind to address http://<ip>: address already in use."):
                 "System.Net.Sockets.SocketException"}),
    Case("dotnet-serilog-text.log", {"info": 1, "warning": 1, "error": 3, "critical": 1, "debug": 1},
         {("System.InvalidOperationException", "Sequence contains no elements"): 2,
          ("Npgsql.PostgresException", '<n>: duplicate key value violates unique constraint "users_email_key"'): 1,
          ("System.IO.IOException", "Failed to bind to address http://<ip>: address already in use."): 1},
         {("System.IO.IOException", "Failed to bind to address http://<ip>: address already in use."):
          ("System.IO.IOException: Failed to bind to address http://127.0.0.1:5000: address already in use.",
           " ---> Microsoft.AspNetCore.Connections.AddressInUseException: Address already in use",
           "   --- End of inner exception stack trace ---")},
         messages={("warning", 'Slow request "…" took <n> ms'): 1, ("error", "Failed to process order <n>"): 2,
                   ("error", 'Saving user "…" failed'): 1, ("critical", "Host terminated unexpectedly"): 1},
         causes={("System.IO.IOException", "Failed to bind to address http://<ip>: address already in use."):
                 "System.Net.Sockets.SocketException"}),
    Case("dotnet-console.log", {"info": 1, "warning": 1, "error": 1, "critical": 1, "debug": 1},
         {("System.InvalidOperationException", "Sequence contains no elements"): 1,
          ("System.IO.IOException", "Failed to bind to address http://<ip>: address already in use."): 1},
         causes={("System.IO.IOException", "Failed to bind to address http://<ip>: address already in use."):
                 "System.Net.Sockets.SocketException"}),
    # logback's own JsonEncoder (1.3.8+): the exception in ``throwable``, its frames in ``stepArray``, its cause nested
    Case("logback13-jsonencoder.jsonl", {"info": 1, "warning": 1, "error": 3},
         {("java.lang.IllegalStateException", "order <n> has no lines"): 2,
          ("java.util.ConcurrentModificationException", ""): 1},
         {("java.lang.IllegalStateException", "order <n> has no lines"):
          ("java.lang.IllegalStateException: order 42 has no lines",
           "\tat com.shop.OrderService.total(OrderService.java:31)",
           "Caused by: java.sql.SQLException: connection reset by 10.0.0.5", "\tat com.shop.Db.query(Db.java:9)",
           "\t... 2 more")},
         json_lines=5,
         causes={("java.lang.IllegalStateException", "order <n> has no lines"): "java.sql.SQLException"}),
    Case("uvicorn.log", {"info": 10, "error": 2},
         {("ValueError", "bad path /x/<n>"): 2},
         {("ValueError", "bad path /x/<n>"): ("Traceback (most recent call last):", "ValueError: bad path /x/1")}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.file for c in CASES])
def test_real_library_output_is_read(case: Case) -> None:
    a = AppLogStats()
    a.feed((LOGS / case.file).read_bytes(), case.file)
    a.finish()
    assert dict(a.levels) == case.levels
    counts: Counter[tuple[str, str]] = Counter()
    causes: dict[tuple[str, str], list[str]] = {}
    for g in a.exceptions.values():
        counts[(g.kind, g.message)] += g.count
        causes.setdefault((g.kind, g.message), []).append(g.cause)
    assert dict(counts) == case.groups
    expected = {key: case.causes.get(key, "") for key in case.groups}
    assert {key: tuple(sorted(c)) for key, c in causes.items()} == \
        {key: (c,) if isinstance(c, str) else tuple(sorted(c)) for key, c in expected.items()}
    if case.messages is not None:
        assert dict(a.messages) == case.messages
    if case.json_lines is not None:
        assert a.json_lines == case.json_lines == a.lines
    # a terminal's colours (Node's grey frames, Compose's prefixes) reach no group, message or example
    assert "\x1b" not in repr((a.exceptions, a.messages, a.message_examples))
    examples = {(g.kind, g.message): g.example.split("\n") for g in a.exceptions.values()}
    for key, needed in case.example_has.items():
        for line in needed:
            assert line in examples[key], (key, line)
        assert examples[key][-1].strip(), "an example does not end with a blank line"


def _groups(a: AppLogStats) -> dict[tuple[str, str, str], tuple[int, str]]:
    return {(g.kind, g.message, g.cause): (g.count, g.example) for g in a.exceptions.values()}


#: a frame of a trace (JVM, Node, Python, under a process's prefix too): a line inside one
_FRAME = re.compile(rb"^(?:.*?(?:\| |\]: ))?(?:[ \t]+at |  File \")", re.M)


@pytest.mark.parametrize("case", [c for c in CASES if _FRAME.search((LOGS / c.file).read_bytes())],
                         ids=lambda c: c.file)
def test_trace_cut_by_rotation_is_read_whole(case: Case) -> None:
    """A log rotated inside a trace (its head at the end of app.log.1, its frames in app.log): the files of a log
    are fed oldest first into one reader, which joins the trace, as if the file was never cut."""
    data = (LOGS / case.file).read_bytes()
    cut = _FRAME.search(data).start()  # type: ignore[union-attr]
    whole, rotated = AppLogStats(), AppLogStats()
    whole.feed(data, "app.log")
    rotated.feed(data[:cut], "app.log.1")
    rotated.feed(data[cut:], "app.log")
    whole.finish()
    rotated.finish()
    assert _groups(rotated) == _groups(whole)
    assert (rotated.lines, dict(rotated.levels), dict(rotated.messages)) == \
        (whole.lines, dict(whole.levels), dict(whole.messages))


def test_output_after_a_python_traceback_does_not_take_the_exception_s_place() -> None:
    """What a program printed after a traceback cannot be told from further lines of the exception's message: the
    example keeps four of them and says how many followed, so that the excerpt a report shows ends with the
    exception's line, not with a hundred printed lines (real gunicorn --capture-output and CPython 3.11 output)."""
    for name, exc_line in (("gunicorn-capture-output.log", "KeyError: '/a'"),
                           ("python311-print-after-traceback.log", "KeyError: 'user-0'")):
        a = AppLogStats()
        a.feed((LOGS / name).read_bytes(), "app.log")
        a.finish()
        g = next(g for g in a.exceptions.values() if g.kind == "KeyError")
        excerpt = trace_excerpt(g.example).split("\n")
        assert exc_line in excerpt, excerpt
        after = excerpt[excerpt.index(exc_line) + 1:]
        assert len(after) == 5 and after[-1] == "… 96 more lines after the exception (its message, or output " \
            "written after it)", after


def test_php_fpm_messages_in_nginx_error_log() -> None:
    """PHP-FPM's errors relayed by nginx (``FastCGI sent in stderr: "PHP message: …"``, PHP 8.2 behind nginx, see
    the README): an uncaught exception's stack over several lines, a blank one among them before ``Next …``, is
    the entry's (the blank lines were counted as unparsed); one class per exception, whatever the order id."""
    ng = NginxErrorStats()
    ng.feed((LOGS / "nginx-php-fpm-error.log").read_bytes(), "error.log")
    assert (ng.lines, ng.unparsed, dict(ng.levels)) == (48, 0, {"error": 8})
    prefix = 'FastCGI sent in stderr: "PHP message: PHP Fatal error: Uncaught '
    assert {c: n for (_, c), n in ng.classes.items() if c.startswith(prefix)} == {
        prefix + m + ' in /tmp/h-applangs-gen/php/www/app.php:<n>"': 2 for m in (
            "InvalidArgumentException: order id <n> is not valid", "PDOException: could not find driver",
            "Error: Call to a member function name() on null")}
