"""One module per CLI command.

Each module defines ``NAME`` (the command), ``HELP`` (one line), ``register(parser)``
to add its arguments (with an example in ``parser.epilog``) and ``run(args) -> int``.
The CLI discovers modules here, so adding a command touches no other file.
Modules import heavy dependencies inside ``run`` only.
"""
