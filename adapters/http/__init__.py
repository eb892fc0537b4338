"""The HTTP API and pages: a Litestar app built from the applications a runner hands it."""
