"""The one exception the template engine raises, shared by its parser and its executor.

Callers answer a bad template with a 400 whether it failed to parse or to execute, so both
stages report through the same type; it lives apart from both so neither imports the other.
"""


class TemplateError(ValueError):
    """A template that does not parse or fails while executing; the message suits a 400 reply."""
