"""The one exception type that reaches people.

Anything the user can fix (a YAML key, a data folder, a weights file, a name) is raised as
`BenchError` with a single line that names the problem; the CLI prints it and exits 2.
Everything else is a bug and keeps its traceback.
"""


class BenchError(Exception):
    """A problem with the user's input: reported as one line, exit status 2."""
