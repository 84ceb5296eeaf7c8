"""The one compiled piece: upkeeper.logs._cut, the access-log line cut (see src/upkeeper/logs/_cut.c).

Everything else is in pyproject.toml.  The extension is optional: without a C compiler the install still
succeeds, the access-log scan uses its pyarrow cut and the PostgreSQL syslog join its Python (same results,
slower)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("upkeeper.logs._cut", ["src/upkeeper/logs/_cut.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"])])
