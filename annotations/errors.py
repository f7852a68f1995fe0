"""The one exception the writer raises for input a user can fix."""


class AnnotationInputError(ValueError):
    """Bad input table or options; the message names the column or row and the fix."""


def plain(value):
    """A numpy scalar as the Python value, so messages read ``-6`` rather than ``np.int64(-6)``."""
    return value.item() if hasattr(value, "item") else value


def row_of(mask) -> int:
    """1-based row number of the first True in ``mask``, for messages."""
    return int(mask.argmax()) + 1
