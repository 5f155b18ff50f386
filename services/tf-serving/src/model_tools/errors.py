class ExportError(Exception):
    """The model or the export arguments cannot produce a servable; the message says why."""
