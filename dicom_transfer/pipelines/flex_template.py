"""Entry point of the Dataflow Flex Templates (``templates/launcher.py``).

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
SDK_IMAGE_OPTIONS = {"--sdk_container_image", "--worker_harness_container_image"}


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


def launch(command: str, argv: list[str], image: str | None = None) -> int:
    """Run ``dicom-transfer COMMAND`` with template parameters, detached.

    ``image``: the template's own image, used for the workers too (``--sdk_container_image``) unless
    the launch names another one, so that workers run exactly the packages the launcher has.
    """
    from dicom_transfer.pipelines.cli import main

    args = template_argv(argv)
    if "--detach" not in args:
        args.append("--detach")
    if image and not any(a.split("=")[0] in SDK_IMAGE_OPTIONS for a in args):
        args.append(f"--sdk_container_image={image}")
    return main([command, *args])


if __name__ == "__main__":
    sys.exit(launch(sys.argv[1], sys.argv[2:]))
