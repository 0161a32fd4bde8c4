"""Entry point of the Dataflow Flex Templates (``templates/<pipeline>/launcher.py``).

A Flex Template passes each parameter as ``--name=value``. This turns the
template form into the CLI form and calls the same ``main()`` as the command
line, submitting the job without waiting for it (the pipeline writes its own
summary and errors.log).
"""

from __future__ import annotations

import sys

# Template parameters that are flags on the command line: "--overwrite=true" -> "--overwrite".
BOOLEAN_PARAMETERS = {"overwrite": "--overwrite", "all": "--all", "no_check_existing": "--no-check-existing",
                      "detach": "--detach", "verify_bytes": "--verify-bytes"}
TRUE = {"true", "1", "yes"}


def template_argv(argv: list[str]) -> list[str]:
    """Rewrite ``--flag=true|false`` template parameters into CLI flags."""
    result = []
    for argument in argv:
        name, _, value = argument[2:].partition("=") if argument.startswith("--") else ("", "", "")
        if name in BOOLEAN_PARAMETERS and value:
            if value.lower() in TRUE:
                result.append(BOOLEAN_PARAMETERS[name])
            continue
        result.append(argument)
    return result


def launch(command: str, argv: list[str]) -> int:
    """Run ``dicom-transfer COMMAND`` with template parameters, detached."""
    from dicom_transfer.pipelines.cli import main

    args = template_argv(argv)
    if "--detach" not in args:
        args.append("--detach")
    return main([command, *args])


if __name__ == "__main__":
    sys.exit(launch(sys.argv[1], sys.argv[2:]))
