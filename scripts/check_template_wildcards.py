#!/usr/bin/env python3
"""The two parts of the IAM wildcard check that cfn-guard cannot do.

The rules themselves are infra/guard/*.guard (no `*` IAM action or resource,
no NotAction/NotResource, no managed policies or SAM policy templates, ...),
run by scripts/check-template.sh. Guard reads the template as written; it
cannot

* run the SAM transform, so the roles SAM generates for event sources (the
  schedule's role, here) would go unchecked:

      .venv/bin/python scripts/check_template_wildcards.py --transform OUT.json [TEMPLATE]

  writes the transformed template (offline: no AWS call) for Guard's second
  run;

* try a parameter's AllowedPattern against strings: a regex taken from the
  data is not something a Guard rule can evaluate. Guard only makes sure a
  Ref in an IAM Resource points at a parameter with AllowedPattern or
  AllowedValues;

      .venv/bin/python scripts/check_template_wildcards.py [TEMPLATE]

  fails when such a pattern accepts a wildcard value (WILDCARD_PROBES).

`--self-test` checks the second part on a small bad template. PyYAML and
aws-sam-translator come with the venv (scripts/tools.sh --deploy).
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the interpreter
    sys.stderr.write(
        "check_template_wildcards: PyYAML is missing; run it with the repo venv "
        "(.venv/bin/python, after scripts/tools.sh --deploy)\n"
    )
    sys.exit(2)

# Values an AllowedPattern must reject for a Ref to its parameter to be
# accepted in an IAM Resource (a best-effort proof that nobody can deploy the
# stack with a wildcard through that parameter).
WILDCARD_PROBES = (
    "*",
    "?",
    "arn:aws:sqs:us-east-1:123456789012:*",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:*",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-*",
    "arn:aws:kms:us-east-1:123456789012:key/*",
    "arn:aws:kms:us-east-1:123456789012:*",
    "arn:aws:dynamodb:us-east-1:123456789012:table/*",
    "arn:aws:sns:us-east-1:123456789012:*",
    "arn:aws:logs:us-east-1:123456789012:log-group:*",
)


class CfnLoader(yaml.SafeLoader):
    """`!Ref x` -> {"Ref": x}, `!GetAtt A.B` -> {"Fn::GetAtt": ["A", "B"]},
    `!Sub s` -> {"Fn::Sub": s} and so on: the JSON form."""


def _construct_tag(loader: CfnLoader, tag_suffix: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix in ("Ref", "Condition"):
        return {tag_suffix: value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        return {"Fn::GetAtt": value.split(".", 1)}
    return {"Fn::" + tag_suffix: value}


CfnLoader.add_multi_constructor("!", _construct_tag)
# Keep "2012-10-17" a string, as CloudFormation does.
CfnLoader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))


def load_template(text: str) -> dict:
    data = yaml.load(text, Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError("the template is not a YAML mapping")
    return data


def _refs(value):
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "Ref" and isinstance(v, str):
                yield v
            else:
                yield from _refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _refs(v)


def _resource_refs(node):
    """Every Ref inside the Resource of a policy statement, anywhere."""
    if isinstance(node, dict):
        statements = node.get("Statement")
        if statements is not None:
            for stmt in statements if isinstance(statements, list) else [statements]:
                yield from _refs(stmt.get("Resource") if isinstance(stmt, dict) else stmt)
                if isinstance(stmt, dict) and "Fn::If" in stmt:  # a conditional statement
                    yield from _resource_refs({"Statement": stmt["Fn::If"][1:]})
        for k, v in node.items():
            if k != "Statement":
                yield from _resource_refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _resource_refs(v)


def parameter_problems(template: dict) -> tuple[list[str], list[str]]:
    """(checked parameter names, problems) for the parameters a policy
    statement's Resource refers to."""
    params = template.get("Parameters") or {}
    checked, problems = [], []
    for name in sorted(set(_resource_refs(template.get("Resources") or {}))):
        param = params.get(name)
        if not isinstance(param, dict) or "AllowedPattern" not in param:
            continue  # not a parameter, or AllowedValues: infra/guard checks those
        checked.append(name)
        try:
            regex = re.compile(param["AllowedPattern"])
        except re.error as e:
            problems.append(f"parameter {name}: AllowedPattern does not compile ({e})")
            continue
        accepted = [p for p in WILDCARD_PROBES if regex.fullmatch(p)]
        if accepted:
            problems.append(f"parameter {name}: AllowedPattern accepts the wildcard value {accepted[0]!r}")
    return checked, problems


def check_parameters(path: Path) -> int:
    checked, problems = parameter_problems(load_template(path.read_text()))
    for p in problems:
        print(f"FAIL {path}: {p}", file=sys.stderr)
    print(f"{path}: {len(checked)} parameters referenced in IAM resources "
          f"({', '.join(checked) or 'none'}): {len(checked) - len(problems)} reject every wildcard probe")
    return 1 if problems else 0


def sam_transform(template: dict) -> dict:
    """The template after the SAM transform, offline (no AWS calls)."""
    from samtranslator.translator.transform import transform  # type: ignore

    class NoManagedPolicies:  # only consulted for managed policy *names*
        def load(self):
            return {}

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_REGION", os.environ["AWS_DEFAULT_REGION"])
    t = copy.deepcopy(template)
    for res in (t.get("Resources") or {}).values():
        props = res.get("Properties") if isinstance(res, dict) else None
        if isinstance(props, dict) and res.get("Type") == "AWS::Serverless::Function":
            if isinstance(props.get("CodeUri"), str) and not props["CodeUri"].startswith("s3://"):
                props["CodeUri"] = "s3://bucket/placeholder.zip"  # what `sam package` would do
    return transform(t, {}, NoManagedPolicies())


def write_transformed(path: Path, out: Path) -> int:
    transformed = sam_transform(load_template(path.read_text()))
    out.write_text(json.dumps(transformed, indent=1))
    print(f"{path}: SAM transform written to {out} ({len(transformed.get('Resources', {}))} resources)")
    return 0


BAD_SNIPPET = """
Parameters:
  Loose: { Type: String, AllowedPattern: "^arn:aws:sqs:.*$" }
  Broken: { Type: String, AllowedPattern: "^(arn$" }
  Tight: { Type: String, AllowedPattern: "^arn:aws:sqs:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]+$" }
  Cron: { Type: String, AllowedPattern: "^.*$" }
Resources:
  Role:
    Type: AWS::IAM::Role
    Properties:
      Policies:
        - PolicyName: p
          PolicyDocument:
            Statement:
              - Effect: Allow
                Action: sqs:SendMessage
                Resource: [!Ref Tight, !If [C, !Ref Loose, !Ref AWS::NoValue]]
              - !If
                - C
                - Effect: Allow
                  Action: sqs:SendMessage
                  Resource: !Ref Broken
                - !Ref AWS::NoValue
  Schedule:
    Type: AWS::Scheduler::Schedule
    Properties:
      ScheduleExpression: !Ref Cron
"""


def self_test() -> int:
    checked, problems = parameter_problems(load_template(BAD_SNIPPET))
    errors = []
    if checked != ["Broken", "Loose", "Tight"]:
        errors.append(f"checked {checked}, expected Broken, Loose, Tight (not Cron: no IAM resource)")
    if len(problems) != 2 or not any("Loose" in p for p in problems) or not any("Broken" in p for p in problems):
        errors.append(f"expected the Loose and Broken parameters to fail, got {problems}")
    for e in errors:
        print(f"SELF-TEST FAILED: {e}", file=sys.stderr)
    if not errors:
        print(f"self-test: passed ({len(problems)} loose patterns found, as expected)")
    return 1 if errors else 0


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    if "--self-test" in argv:
        return self_test()
    out = None
    if "--transform" in argv:
        i = argv.index("--transform")
        if i + 1 >= len(argv):
            print("check_template_wildcards: --transform needs an output file", file=sys.stderr)
            return 2
        out = Path(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    args = [a for a in argv if not a.startswith("-")]
    path = Path(args[0]) if args else Path(__file__).resolve().parent.parent / "template.yaml"
    if not path.is_file():
        print(f"check_template_wildcards: not found: {path}", file=sys.stderr)
        return 2
    return write_transformed(path, out) if out else check_parameters(path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
