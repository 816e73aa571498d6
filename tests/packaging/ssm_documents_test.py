#!/usr/bin/python3
"""Checks the SSM documents in packaging/ssm against the shape SSM accepts.

  ssm_documents_test.py                       the Command document (no build needed)
  ssm_documents_test.py --manifest-dir DIR    also the Distributor manifest.json and zips in DIR

Command document: schemaVersion 2.2; every parameter has a known type, a description and (when
given) a default and an allowedPattern its default matches; every {{name}} in mainSteps names a
declared parameter and every parameter is used; an ENV_VAR parameter is read as $SSM_<name> and its
fallback stays inside single quotes; step names are unique; each action has its required inputs;
the runShellScript step is valid sh. The enrollment token accepts only a SecureString reference or
a bare token. Distributor manifest: schemaVersion 2.0, every platform/version/arch entry names a
file listed under "files", every listed file exists with the SHA-256 given, and each zip holds
install.sh, uninstall.sh, update.sh and a .deb of the manifest's version.
Exit status 0 only when every check held; each failure is printed.
"""

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
COMMAND_DOC = os.path.join(ROOT, "packaging", "ssm", "tripline-agent-install.yaml")

PARAM_TYPES = {"String", "StringList", "Boolean", "Integer", "MapList", "StringMap"}
PARAM_KEYS = {"type", "description", "default", "allowedValues", "allowedPattern", "displayType",
              "minItems", "maxItems", "minChars", "maxChars", "interpolationType"}
# action -> (required inputs, allowed inputs)
ACTIONS = {
    "aws:runShellScript": ({"runCommand"}, {"runCommand", "workingDirectory", "timeoutSeconds"}),
    "aws:configurePackage": ({"name", "action"},
                             {"name", "action", "installationType", "version",
                              "additionalArguments"}),
}
REF = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
STEP_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
PARAM_NAME = re.compile(r"^[A-Za-z0-9_]+$")

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
    return cond


def refs(value):
    """Every {{...}} reference inside a (nested) value."""
    if isinstance(value, str):
        return REF.findall(value)
    if isinstance(value, list):
        return [r for v in value for r in refs(v)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in refs(v)]
    return []


def check_command_document(path):
    with open(path) as f:
        doc = yaml.safe_load(f)
    name = os.path.basename(path)
    check(isinstance(doc, dict), f"{name}: not a mapping")
    check(doc.get("schemaVersion") == "2.2", f"{name}: schemaVersion must be the string '2.2'")
    check(isinstance(doc.get("description"), str) and doc["description"].strip(),
          f"{name}: no description")
    check(set(doc) <= {"schemaVersion", "description", "parameters", "mainSteps"},
          f"{name}: unknown top-level keys {sorted(set(doc) - {'schemaVersion', 'description', 'parameters', 'mainSteps'})}")

    params = doc.get("parameters") or {}
    for pname, p in params.items():
        where = f"{name}: parameter {pname}"
        check(PARAM_NAME.match(pname), f"{where}: name must be [A-Za-z0-9_]+")
        check(isinstance(p, dict), f"{where}: not a mapping")
        check(p.get("type") in PARAM_TYPES, f"{where}: type {p.get('type')!r} is not one of {sorted(PARAM_TYPES)}")
        check(set(p) <= PARAM_KEYS, f"{where}: unknown keys {sorted(set(p) - PARAM_KEYS)}")
        check(isinstance(p.get("description"), str) and p["description"], f"{where}: no description")
        if "interpolationType" in p:
            check(p["interpolationType"] == "ENV_VAR", f"{where}: interpolationType must be ENV_VAR")
        if "allowedPattern" in p:
            try:
                pattern = re.compile(p["allowedPattern"])
            except re.error as e:
                check(False, f"{where}: allowedPattern does not compile: {e}")
                continue
            if "default" in p:
                check(pattern.search(str(p["default"])) is not None,
                      f"{where}: default {p['default']!r} does not match allowedPattern")
            for bad in ("'", '"', "`", "$(", ";"):
                check(pattern.search("a" * 20 + bad) is None and pattern.search(bad) is None,
                      f"{where}: allowedPattern lets {bad!r} through")

    steps = doc.get("mainSteps")
    check(isinstance(steps, list) and steps, f"{name}: mainSteps must be a non-empty list")
    steps = steps or []
    names = [s.get("name") for s in steps]
    check(len(names) == len(set(names)), f"{name}: step names repeat: {names}")
    used = set()
    for step in steps:
        sname = step.get("name")
        where = f"{name}: step {sname}"
        check(isinstance(sname, str) and STEP_NAME.match(sname), f"{where}: bad name")
        action = step.get("action")
        check(action in ACTIONS, f"{where}: action {action!r} not one of {sorted(ACTIONS)}")
        inputs = step.get("inputs") or {}
        if action in ACTIONS:
            required, allowed = ACTIONS[action]
            check(required <= set(inputs), f"{where}: missing inputs {sorted(required - set(inputs))}")
            check(set(inputs) <= allowed, f"{where}: unknown inputs {sorted(set(inputs) - allowed)}")
        pre = step.get("precondition")
        if pre is not None:
            check(pre == {"StringEquals": ["platformType", "Linux"]},
                  f"{where}: precondition must be StringEquals platformType Linux")
        for r in refs(step):
            if r.startswith("ssm:") or r.startswith("ssm-secure:"):
                continue
            used.add(r)
            check(r in params, f"{where}: {{{{{r}}}}} is not a declared parameter")
        if action == "aws:runShellScript":
            lines = inputs.get("runCommand")
            check(isinstance(lines, list) and all(isinstance(x, str) for x in lines),
                  f"{where}: runCommand must be a list of strings")
            script = "\n".join(lines or [])
            for pname, p in params.items():
                if p.get("interpolationType") != "ENV_VAR" or f"{{{{{pname}}}}}" not in script:
                    continue
                check(f"$SSM_{pname}" in script or f"${{SSM_{pname}" in script,
                      f"{where}: ENV_VAR parameter {pname} is never read as $SSM_{pname}")
                for line in lines:
                    if f"{{{{{pname}}}}}" in line:
                        check(f"'{{{{{pname}}}}}'" in line,
                              f"{where}: {{{{{pname}}}}} outside single quotes: {line}")
            with tempfile.NamedTemporaryFile("w", suffix=".sh") as f:
                f.write(script + "\n")
                f.flush()
                r = subprocess.run(["sh", "-n", f.name], capture_output=True, text=True)
                check(r.returncode == 0, f"{where}: sh -n: {r.stderr.strip()}")
    for pname in params:
        check(pname in used, f"{name}: parameter {pname} is declared but never used")

    token = params.get("enrollmentToken", {})
    check("enrollmentToken" in params and "default" not in token,
          f"{name}: enrollmentToken must be required (no default value to leak)")
    pattern = re.compile(token.get("allowedPattern", "^$"))
    check(pattern.search("{{ssm-secure:/tripline/enrollment-token}}") is not None,
          f"{name}: enrollmentToken does not accept a SecureString reference")
    check(pattern.search("{{ssm:/tripline/enrollment-token}}") is None,
          f"{name}: enrollmentToken accepts a plain String parameter reference")
    check("ssm-secure:" in token.get("description", ""),
          f"{name}: enrollmentToken's description does not say to pass an ssm-secure reference")
    print(f"{name}: {len(params)} parameters, {len(steps)} steps checked")


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def check_manifest(directory):
    path = os.path.join(directory, "manifest.json")
    with open(path) as f:
        m = json.load(f)
    check(m.get("schemaVersion") == "2.0", "manifest.json: schemaVersion must be '2.0'")
    version = m.get("version")
    check(isinstance(version, str) and re.match(r"^[A-Za-z0-9.+~_-]{1,64}$", version or ""),
          f"manifest.json: bad version {version!r}")
    files = m.get("files") or {}
    check(files, "manifest.json: no files")
    named = set()
    for platform, versions in (m.get("packages") or {}).items():
        for pversion, arches in versions.items():
            for arch, entry in arches.items():
                where = f"manifest.json: {platform}/{pversion}/{arch}"
                check(arch in {"x86_64", "arm64", "i386", "_any"}, f"{where}: unknown architecture")
                fname = entry.get("file")
                named.add(fname)
                check(fname in files, f"{where}: file {fname!r} not listed under files")
    check(named, "manifest.json: no packages")
    check(named == set(files), f"manifest.json: files listed but never used: {sorted(set(files) - named)}")
    for fname, entry in files.items():
        fpath = os.path.join(directory, fname)
        if not check(os.path.isfile(fpath), f"manifest.json: {fname} does not exist in {directory}"):
            continue
        want = (entry.get("checksums") or {}).get("sha256")
        check(want == sha256(fpath), f"manifest.json: sha256 of {fname} is {sha256(fpath)}, manifest says {want}")
        with zipfile.ZipFile(fpath) as zf:
            members = {i.filename: i for i in zf.infolist()}
            for script in ("install.sh", "uninstall.sh", "update.sh"):
                info = members.get(script)
                if check(info is not None, f"{fname}: no {script}"):
                    check((info.external_attr >> 16) & 0o111, f"{fname}: {script} is not executable")
            debs = [n for n in members if n.endswith(".deb")]
            check(debs == [f"tripline-agent_{version}_{'amd64' if 'x86_64' in fname else 'arm64'}.deb"],
                  f"{fname}: expected one tripline-agent .deb of version {version}, found {debs}")
    print(f"manifest.json: version {version}, {len(files)} file(s) checked")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest-dir")
    args = ap.parse_args()
    check_command_document(COMMAND_DOC)
    if args.manifest_dir:
        check_manifest(args.manifest_dir)
    for f in failures:
        print("FAIL:", f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
