class CharrnnError(Exception):
    """A problem the user can fix (bad input file, bad option, bad checkpoint).

    The CLI prints these as one `Error: ...` line and exits 1; anything else is a bug.
    """


def visible(text: object) -> str:
    """Control characters (ESC, BEL, ...) as \\xNN / \\uNNNN escapes: a string from a file or a path
    printed with this can never act on the terminal."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"
                   for ch in str(text))


class OptionError(CharrnnError):
    """An option value that cannot work: the CLI exits 2, as for any other usage error."""
