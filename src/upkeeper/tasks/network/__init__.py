"""Network tasks: TLS certificates and DNS health."""
