class TFLiteFormatError(ValueError):
    """The file or bytes are not a TFLite model that can be read (truncated, foreign or inconsistent)."""
