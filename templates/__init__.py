"""Packaged Jinja2 templates; a site template directory overrides them file by file."""
