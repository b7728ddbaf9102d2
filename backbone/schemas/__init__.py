"""Published JSON Schemas of the record formats (package data; copies in docs/schemas/)."""
