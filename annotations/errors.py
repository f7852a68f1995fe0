"""The one exception the writer raises for input a user can fix."""


class AnnotationInputError(ValueError):
    """Bad input table or options; the message names the column or row and the fix."""
