class CharrnnError(Exception):
    """A problem the user can fix (bad input file, bad option, bad checkpoint).

    The CLI prints these as one `Error: ...` line; anything else is a bug.
    """
