"""Throwaway real services for ``upkeeper demo`` and the test suite.

Each service is one small class that starts a real server on a free loopback
port inside a directory it owns, and stops it cleanly.
"""
