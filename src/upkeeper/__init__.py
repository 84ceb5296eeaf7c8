"""upkeeper: maintenance of a web stack from one declarative file, with every run recorded."""

__version__ = "0.1.0"
