#!/usr/bin/env python3
"""Build ``dicom_transfer/deid/annex_e_table.json`` (PS3.15 Table E.1-1) from a machine-readable copy.

The DICOM Standard's own DocBook XML is not reachable from where this project is built, so the
table is taken from Innolitics' ``dicom-standard`` project (MIT licence), which parses the
standard's HTML edition by edition into ``standard/confidentiality_profile_attributes.json``.
This script keeps only what de-identification needs, renames the option columns after the
standard's option names, checks every action code, and records where the table came from.

Usage::

    git -C dicom-standard show COMMIT:standard/confidentiality_profile_attributes.json > table.json
    scripts/build_annex_e_table.py table.json --edition 2024b --commit COMMIT > dicom_transfer/deid/annex_e_table.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys

# Innolitics' column keys -> the standard's option names (PS3.15 E.3), as used by the CLI flags.
OPTION_COLUMNS = {
    "rtnSafePrivOpt": "retain_safe_private",
    "rtnUIDsOpt": "retain_uids",
    "rtnDevIdOpt": "retain_device_identity",
    "rtnInstIdOpt": "retain_institution_identity",
    "rtnPatCharsOpt": "retain_patient_characteristics",
    "rtnLongFullDatesOpt": "retain_longitudinal_full_dates",
    "rtnLongModifDatesOpt": "retain_longitudinal_modified_dates",
    "cleanDescOpt": "clean_descriptors",
    "cleanStructContOpt": "clean_structured_content",
    "cleanGraphOpt": "clean_graphics",
}
BASIC_ACTIONS = {"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
OPTION_ACTIONS = {"K", "C"}
TAG = re.compile(r"^\(([0-9A-FX]{4}),([0-9A-FX]{4})\)$")


def convert(rows: list[dict]) -> list[dict]:
    attributes = []
    for row in rows:
        basic = row["basicProfile"]
        if basic not in BASIC_ACTIONS:
            raise SystemExit(f"{row['tag']} {row['name']}: unknown Basic Profile action {basic!r}")
        options = {}
        for column, name in OPTION_COLUMNS.items():
            if row.get(column):
                if row[column] not in OPTION_ACTIONS:
                    raise SystemExit(f"{row['tag']} {row['name']}: unknown {name} action {row[column]!r}")
                options[name] = row[column]
        tag = row["tag"].upper()
        if tag.startswith("(GGGG,EEEE)"):  # "(GGGG,EEEE) WHERE GGGG IS ODD": every private attribute
            tag = "private"
        elif not TAG.match(tag):
            raise SystemExit(f"unexpected tag {row['tag']!r} ({row['name']})")
        attribute = {"tag": tag, "name": row["name"], "basic": basic}
        attributes.append({**attribute, "options": options} if options else attribute)
    attributes.sort(key=lambda a: a["tag"])
    return attributes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="Innolitics' confidentiality_profile_attributes.json")
    parser.add_argument("--edition", required=True, help="the standard's edition the source was parsed from")
    parser.add_argument("--commit", required=True, help="the dicom-standard commit the source was taken at")
    args = parser.parse_args()
    with open(args.source, encoding="utf-8") as handle:
        rows = json.load(handle)
    table = {
        "table": "DICOM PS3.15 Table E.1-1 Application Level Confidentiality Profile Attributes",
        "edition": args.edition,
        "source": {
            "project": "innolitics/dicom-standard (GitHub), standard/confidentiality_profile_attributes.json",
            "commit": args.commit,
            "licence": "MIT, Copyright (c) 2017 Innolitics, LLC; the table's content is the DICOM Standard's "
                       "(Copyright NEMA), parsed from its HTML edition",
        },
        "generated_by": "scripts/build_annex_e_table.py",
        "actions": "PS3.15 E.1.1: D dummy, Z zero length (or dummy), X remove, K keep, C clean, U replace UID; "
                   "'A/B' = A unless B is needed for IOD conformance; U* = UIDs inside the sequence replaced",
        "options": sorted(set(OPTION_COLUMNS.values())),
        "attributes": convert(rows),
    }
    attributes = table.pop("attributes")
    head = json.dumps(table, indent=1)[:-2]  # one attribute per line: reviewable diffs between editions
    rows = ",\n".join("  " + json.dumps(a) for a in attributes)
    sys.stdout.write(f'{head},\n "attributes": [\n{rows}\n ]\n}}\n')


if __name__ == "__main__":
    main()
