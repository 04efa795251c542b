"""One router per resource, mounted under :data:`PREFIX`."""

PREFIX = "/api/v1"
