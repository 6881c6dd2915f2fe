"""The error users see for bad input: it names the file, the row and the field."""

from __future__ import annotations


class MoonInputError(ValueError):
    """Bad user input (a data row, a checkpoint, an option), located as precisely as we can."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None, field: str | None = None):
        self.reason, self.file, self.row, self.field = message, file, row, field
        where = ", ".join(
            part
            for part in (
                f"file {file}" if file is not None else "",
                f"row {row}" if row is not None else "",
                f"field {field!r}" if field is not None else "",
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)
