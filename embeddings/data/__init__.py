"""Reading event logs: column mapping, timestamp parsing, validation with clear errors, public datasets."""
