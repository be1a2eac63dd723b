class CharrnnError(Exception):
    """A problem the user can fix (bad input file, bad option, bad checkpoint).

    The CLI prints these as one `Error: ...` line and exits 1; anything else is a bug.
    """


class OptionError(CharrnnError):
    """An option value that cannot work: the CLI exits 2, as for any other usage error."""
