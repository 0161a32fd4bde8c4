"""Entry point of the Dataflow Flex Templates (``templates/launcher.py``).

A Flex Template passes each parameter as ``--name=value``. This turns the
template form into the CLI form and calls the same ``main()`` as the command
line, submitting the job without waiting for it (the pipeline writes its own
summary and errors.log).
"""

from __future__ import annotations

import argparse
import sys

TRUE = {"true", "1", "yes"}
SDK_IMAGE_OPTIONS = {"--sdk_container_image", "--worker_harness_container_image"}


def boolean_parameters(command: str) -> dict[str, str]:
    """Template parameter -> CLI flag, for every on/off option of ``command`` (read from its
    parser, so that a new flag cannot be forgotten here): ``{"overwrite": "--overwrite", ...}``."""
    from dicom_transfer.pipelines.options import build_parser, command_parser

    parser = command_parser(build_parser(), command)
    booleans = {}
    for action in parser._actions:
        if action.nargs != 0 or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue  # an option that takes a value (or --help)
        for option in action.option_strings:
            if option.startswith("--"):  # --no-check-existing and --no_check_existing: no_check_existing
                booleans[option[2:].replace("-", "_")] = action.option_strings[0]
    return booleans


def template_argv(argv: list[str], command: str) -> list[str]:
    """Rewrite ``--flag=true|false`` template parameters into CLI flags (``--overwrite=true`` ->
    ``--overwrite``; ``false``: left out)."""
    booleans = boolean_parameters(command)
    result = []
    for argument in argv:
        name, _, value = argument[2:].partition("=") if argument.startswith("--") else ("", "", "")
        if name in booleans and value:
            if value.lower() in TRUE:
                result.append(booleans[name])
            continue
        result.append(argument)
    return result


def launch(command: str, argv: list[str], image: str | None = None) -> int:
    """Run ``dicom-transfer COMMAND`` with template parameters, detached.

    ``image``: the template's own image, used for the workers too (``--sdk_container_image``) unless
    the launch names another one, so that workers run exactly the packages the launcher has.
    """
    from dicom_transfer.pipelines.cli import main

    args = template_argv(argv, command)
    if "--detach" not in args:
        args.append("--detach")
    if image and not any(a.split("=")[0] in SDK_IMAGE_OPTIONS for a in args):
        args.append(f"--sdk_container_image={image}")
    return main([command, *args])


if __name__ == "__main__":
    sys.exit(launch(sys.argv[1], sys.argv[2:]))
