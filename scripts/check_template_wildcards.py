#!/usr/bin/env python3
"""Fails on any wildcard IAM action or resource in template.yaml.

Usage (PyYAML is needed; the repo's venv has it through cfn-lint):

    .venv/bin/python scripts/check_template_wildcards.py [TEMPLATE.yaml | POLICY.json]...
    .venv/bin/python scripts/check_template_wildcards.py --self-test [--verbose]

Without arguments it checks template.yaml and infra/iam/*.json (the IAM
policy documents of the cargo-lambda deploy). What is checked, in the template as written and (when aws-sam-translator is
importable, as it is in the venv) in the template after the SAM transform, so
roles SAM generates for event sources are covered too:

* every policy statement anywhere under Resources (AWS::IAM::Role inline
  policies and trust policies, AWS::IAM::Policy/ManagedPolicy, SAM `Policies`
  documents, queue/topic/key policies, ...), following both branches of
  Fn::If: `Action` and `Resource` must not be `*` nor contain `*` or `?`
  (including inside Fn::Sub / Fn::Join strings); `NotAction` and
  `NotResource` are refused outright (they grant everything else);
  a `Ref` to a parameter must be constrained (AllowedPattern / AllowedValues)
  so that it cannot be given a wildcard; `Fn::GetAtt <LogGroup>.Arn` is
  refused because that attribute ends in `:*`;
* policies whose text is not in the template (managed policy ARNs in
  `ManagedPolicyArns`, managed policy names and SAM policy templates in
  SAM `Policies`) must be in ALLOWED_MANAGED_POLICIES;
* an AWS::Serverless::Function without `Role` is refused: SAM would give it
  a role with AWSLambdaBasicExecutionRole (logs actions on every resource).

The script exits 1 when anything fails, and also when no statement was found
at all (a checker that checks nothing must not pass). Each pass prints
"N statements: N passed, 0 failed" style summary lines.
"""

from __future__ import annotations

import copy
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the interpreter
    sys.stderr.write(
        "check_template_wildcards: PyYAML is missing; run it with the repo venv "
        "(.venv/bin/python, after scripts/tools.sh --deploy)\n"
    )
    sys.exit(2)

# --- the allow-lists ---------------------------------------------------------
#
# Keep these as short as possible. Every entry needs a comment saying why no
# exact ARN can do the job.

# Resource strings (exactly as written in the template, before substitution)
# that may contain a wildcard, each with the only actions it may be used with.
ALLOWED_RESOURCE_WILDCARDS: dict[str, frozenset[str]] = {
    # In a VPC, Lambda creates, describes and deletes the function's network
    # interfaces with the execution role. ec2:DescribeNetworkInterfaces and
    # ec2:DescribeSubnets accept only "*" as resource, and Lambda names the
    # interfaces at run time, so the template's statement (Condition HasVpc)
    # is on "*"; it may carry these network-interface actions and no other.
    "*": frozenset(
        {
            "ec2:CreateNetworkInterface",
            "ec2:DescribeNetworkInterfaces",
            "ec2:DescribeSubnets",
            "ec2:DeleteNetworkInterface",
            "ec2:AssignPrivateIpAddresses",
            "ec2:UnassignPrivateIpAddresses",
        }
    ),
    # CloudWatch Logs: Lambda creates the log streams of its log group at run
    # time under names nobody can know in advance
    # (2024/01/01/[$LATEST]0123abcd...), so PutLogEvents cannot be granted on
    # an exact stream ARN. This is the ARN form the CloudWatch Logs docs give
    # for "a log group and its streams" in IAM policies, scoped to the
    # function's own log group only.
    "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:${RelayLogGroup}:*": frozenset(
        {"logs:CreateLogStream", "logs:PutLogEvents"}
    ),
    # The same, in infra/iam/relay-policy.json (the cargo-lambda deploy role),
    # for the function's default log group /aws/lambda/outbox-relay.
    "arn:aws:logs:<REGION>:<ACCOUNT_ID>:log-group:/aws/lambda/outbox-relay:*": frozenset(
        {"logs:CreateLogStream", "logs:PutLogEvents"}
    ),
}

# Managed policies (ARN as written, Fn::Sub form allowed) that may be
# attached although their statements are not in the template.
ALLOWED_MANAGED_POLICIES: dict[str, str] = {
    # None. AWSLambdaVPCAccessExecutionRole used to be here for the VPC
    # option, but it also grants logs:CreateLogGroup/CreateLogStream/
    # PutLogEvents on every log group; the template now grants the network
    # interface actions inline (see ALLOWED_RESOURCE_WILDCARDS["*"]).
}

# Strings a parameter's AllowedPattern must reject for a `Ref` to it to be
# accepted inside Action/Resource (a best-effort proof that nobody can deploy
# the stack with a wildcard through that parameter).
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
    "dynamodb:*",
)

WILDCARD_CHARS = ("*", "?")

SERVERLESS_WITH_POLICIES = (
    "AWS::Serverless::Function",
    "AWS::Serverless::StateMachine",
    "AWS::Serverless::Api",
)


# --- YAML with CloudFormation short tags -------------------------------------


class CfnLoader(yaml.SafeLoader):
    """A SafeLoader that turns `!Ref x` into {"Ref": x}, `!Sub s` into
    {"Fn::Sub": s}, `!GetAtt A.B` into {"Fn::GetAtt": ["A", "B"]} and so on,
    i.e. the JSON form CloudFormation (and the SAM translator) use."""


def _construct_tag(loader: CfnLoader, tag_suffix: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {"Fn::" + tag_suffix: value}


CfnLoader.add_multi_constructor("!", _construct_tag)


def _no_dates(loader, node):  # keep "2012-10-17" a string, as CloudFormation does
    return loader.construct_scalar(node)


CfnLoader.add_constructor("tag:yaml.org,2002:timestamp", _no_dates)


def load_template(text: str) -> dict:
    data = yaml.load(text, Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError("the template is not a YAML mapping")
    return data


# --- the check ---------------------------------------------------------------


@dataclass
class Report:
    label: str
    statements_passed: int = 0
    statements_failed: int = 0
    opaque_passed: int = 0
    opaque_failed: int = 0
    failures: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.failures) or self.statements_passed + self.statements_failed == 0


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _branches(value, path):
    """Yields (value, path) for every concrete alternative of a value,
    descending into both branches of Fn::If and dropping AWS::NoValue."""
    if isinstance(value, dict) and len(value) == 1 and "Fn::If" in value:
        args = value["Fn::If"]
        if isinstance(args, list) and len(args) == 3:
            yield from _branches(args[1], path + ["Fn::If", 1])
            yield from _branches(args[2], path + ["Fn::If", 2])
            return
    if isinstance(value, dict) and value == {"Ref": "AWS::NoValue"}:
        return
    yield value, path


def _strings(value):
    """Every literal string inside a value, intrinsic functions included
    (the template of a Fn::Sub, the parts of a Fn::Join, ...), except the
    names in Ref/GetAtt/Condition."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            if k in ("Ref", "Fn::GetAtt", "Condition"):
                continue
            if k == "Fn::Sub" and isinstance(v, list) and v:
                # [template, {var: value}]: both parts can carry a wildcard
                yield from _strings(v[0])
                if len(v) > 1:
                    yield from _strings(v[1])
                continue
            yield from _strings(v)


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


def _getatts(value):
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "Fn::GetAtt":
                if isinstance(v, list) and len(v) == 2:
                    yield tuple(v)
            else:
                yield from _getatts(v)
    elif isinstance(value, list):
        for v in value:
            yield from _getatts(v)


def _as_list(value):
    return value if isinstance(value, list) else [value]


def _parameter_problem(template: dict, name: str) -> str | None:
    """Why a Ref to this parameter could smuggle in a wildcard, or None."""
    if name.startswith("AWS::"):
        return None  # pseudo parameters (AWS::Region, AWS::Partition, ...)
    params = template.get("Parameters") or {}
    resources = template.get("Resources") or {}
    if name in resources:
        return None  # a resource's own name/ARN/URL
    if name not in params:
        return f"Ref to unknown parameter or resource {name!r}"
    param = params[name] or {}
    if "AllowedValues" in param:
        bad = [v for v in param["AllowedValues"] if any(c in str(v) for c in WILDCARD_CHARS)]
        return f"parameter {name} allows wildcard values {bad}" if bad else None
    pattern = param.get("AllowedPattern")
    if not pattern:
        return f"parameter {name} has no AllowedPattern/AllowedValues, so it could be given '*'"
    try:
        regex = re.compile(pattern)
    except re.error as e:
        return f"parameter {name} AllowedPattern does not compile ({e})"
    accepted = [p for p in WILDCARD_PROBES if regex.fullmatch(p)]
    if accepted:
        return f"parameter {name} AllowedPattern accepts wildcard value {accepted[0]!r}"
    return None


def _check_statement(template: dict, stmt, path, report: Report):
    problems: list[str] = []
    notes: list[str] = []

    def rel(p):  # a path relative to the statement
        return _path(p[len(path):]) or "statement"

    if not isinstance(stmt, dict):
        problems.append(f"statement is not a mapping: {stmt!r}")
    else:
        for key in ("NotAction", "NotResource"):
            if key in stmt:
                problems.append(f"{key} grants everything not listed (use Action/Resource)")
        actions = set()
        for key in ("Action", "Resource"):
            if key not in stmt:
                continue
            for alt, alt_path in _branches(stmt[key], path + [key]):
                for i, item in enumerate(_as_list(alt)):
                    for value, item_path in _branches(item, alt_path + ([i] if isinstance(alt, list) else [])):
                        for s in _strings(value):
                            if not any(c in s for c in WILDCARD_CHARS):
                                if key == "Action":
                                    actions.add(s)
                                continue
                            if key == "Resource" and s in ALLOWED_RESOURCE_WILDCARDS:
                                notes.append(f"allow-listed wildcard resource {s}")
                                continue  # checked against the actions below
                            problems.append(f"{rel(item_path)}: wildcard {key.lower()} {s!r}")
                        for ref in _refs(value):
                            why = _parameter_problem(template, ref)
                            if why:
                                problems.append(f"{rel(item_path)}: {why}")
                        for res, attr in _getatts(value):
                            rtype = ((template.get("Resources") or {}).get(res) or {}).get("Type")
                            if rtype == "AWS::Logs::LogGroup" and attr == "Arn":
                                problems.append(
                                    f"{rel(item_path)}: !GetAtt {res}.Arn is "
                                    "'arn:...:log-group:NAME:*' (a hidden wildcard)"
                                )
        # An allow-listed wildcard resource is only fine with its own actions.
        for alt, _ in _branches(stmt.get("Resource"), path):
            for item in _as_list(alt):
                for s in _strings(item):
                    allowed = ALLOWED_RESOURCE_WILDCARDS.get(s)
                    if allowed is not None and not actions <= allowed:
                        problems.append(
                            f"Resource: allow-listed resource {s!r} "
                            f"used with other actions {sorted(actions - allowed)}"
                        )
    sid = stmt.get("Sid") if isinstance(stmt, dict) else None
    where = _path(path) + (f" ({sid})" if isinstance(sid, str) else "")
    if problems:
        report.statements_failed += 1
        report.lines.append(f"  FAIL {where}")
        for p in problems:
            report.lines.append(f"       {p}")
            report.failures.append(f"{where}: {p}")
    else:
        report.statements_passed += 1
        report.lines.append(f"  ok   {where}" + "".join(f"\n       ({n})" for n in notes))


def _check_opaque(name, path, report: Report, what: str):
    """A policy whose statements are not in the template."""
    literal = name if isinstance(name, str) else None
    if isinstance(name, dict) and set(name) == {"Fn::Sub"} and isinstance(name["Fn::Sub"], str):
        literal = name["Fn::Sub"]
    where = _path(path)
    if literal is not None and literal in ALLOWED_MANAGED_POLICIES:
        report.opaque_passed += 1
        report.lines.append(f"  ok   {where}: allow-listed {what} {literal}")
    else:
        report.opaque_failed += 1
        msg = f"{what} {name!r} is not in the template, so its statements cannot be checked (not allow-listed)"
        report.lines.append(f"  FAIL {where}: {msg}")
        report.failures.append(f"{where}: {msg}")


def _walk_documents(template, node, path, report: Report):
    """Finds every policy document (a mapping with a Statement) anywhere."""
    if isinstance(node, dict):
        if "Statement" in node and not any(k.startswith("Fn::") for k in node):
            for stmts, stmts_path in _branches(node["Statement"], path + ["Statement"]):
                for i, stmt in enumerate(_as_list(stmts)):
                    p = stmts_path + ([i] if isinstance(stmts, list) else [])
                    for alt, alt_path in _branches(stmt, p):
                        _check_statement(template, alt, alt_path, report)
        for k, v in node.items():
            if k != "Statement":
                _walk_documents(template, v, path + [k], report)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _walk_documents(template, v, path + [i], report)


def check(template: dict, label: str) -> Report:
    report = Report(label)
    resources = template.get("Resources") or {}
    if not isinstance(resources, dict):
        report.failures.append("Resources is not a mapping")
        return report
    for name, res in resources.items():
        if not isinstance(res, dict):
            continue
        rtype = res.get("Type", "")
        props = res.get("Properties") or {}
        base = ["Resources", name, "Properties"]
        _walk_documents(template, props, base, report)
        # Managed policies attached by ARN.
        if "ManagedPolicyArns" in props:
            for alt, alt_path in _branches(props["ManagedPolicyArns"], base + ["ManagedPolicyArns"]):
                for i, arn in enumerate(_as_list(alt)):
                    for v, p in _branches(arn, alt_path + [i]):
                        _check_opaque(v, p, report, "managed policy")
        if rtype in SERVERLESS_WITH_POLICIES:
            if "Policies" in props:
                for alt, alt_path in _branches(props["Policies"], base + ["Policies"]):
                    for i, pol in enumerate(_as_list(alt)):
                        for v, p in _branches(pol, alt_path + ([i] if isinstance(alt, list) else [])):
                            if isinstance(v, dict) and "Statement" in v:
                                continue  # an inline document, checked above
                            what = "SAM policy template" if isinstance(v, dict) else "managed policy"
                            _check_opaque(v, p, report, what)
            if rtype == "AWS::Serverless::Function" and "Role" not in props:
                msg = (
                    "no Role: SAM would generate one with AWSLambdaBasicExecutionRole "
                    "(logs actions on Resource '*'); give an explicit least-privilege Role"
                )
                report.opaque_failed += 1
                report.lines.append(f"  FAIL {_path(base)}: {msg}")
                report.failures.append(f"{_path(base)}: {msg}")
    return report


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


def print_report(report: Report, failures_to_stderr: bool = True):
    print(f"== {report.label}")
    for line in report.lines:
        print(line)
    total = report.statements_passed + report.statements_failed
    print(f"{total} policy statements: {report.statements_passed} passed, {report.statements_failed} failed")
    opaque = report.opaque_passed + report.opaque_failed
    print(f"{opaque} managed/opaque policies: {report.opaque_passed} passed (allow-listed), {report.opaque_failed} failed")
    if total == 0:
        print("FAIL: no policy statement found at all; the checker is not looking where the policies are")
    if failures_to_stderr:
        for f in report.failures:
            print(f"FAIL {f}", file=sys.stderr)


def check_policy_file(path: Path) -> Report:
    """A standalone IAM policy document (JSON), as `aws iam` takes it."""
    import json

    doc = json.loads(path.read_text())
    wrapped = {"Resources": {path.name: {"Type": "AWS::IAM::ManagedPolicy", "Properties": {"PolicyDocument": doc}}}}
    return check(wrapped, f"{path} (policy document)")


def run(paths: list[Path], transform: bool = True) -> int:
    reports = []
    for path in paths:
        if path.suffix == ".json":
            reports.append(check_policy_file(path))
        else:
            reports.extend(check_template(path, transform))
    for r in reports:
        print_report(r)
    failed = [r for r in reports if r.failed]
    print("wildcard check:", "FAILED" if failed else "passed", f"({len(reports)} documents checked, {len(failed)} failed)")
    return 1 if failed else 0


def check_template(template_path: Path, transform: bool = True) -> list[Report]:
    template = load_template(template_path.read_text())
    reports = [check(template, f"{template_path.name} as written")]
    try:
        import samtranslator  # noqa: F401  # type: ignore
    except ImportError:
        samtranslator = None
    if transform and samtranslator is not None:
        try:
            reports.append(check(sam_transform(template), f"{template_path.name} after the SAM transform"))
        except Exception as e:  # noqa: BLE001 - any translator error is a failure here
            r = Report(f"{template_path.name} after the SAM transform")
            r.failures.append(f"SAM transform failed: {e}")
            reports.append(r)
    elif transform:
        print("NOTE: aws-sam-translator is not importable; the SAM-generated roles were not checked "
              "(run with .venv/bin/python after scripts/tools.sh --deploy)")
    return reports


# --- self-test ---------------------------------------------------------------

BAD_SNIPPET = """
Transform: AWS::Serverless-2016-10-31
Parameters:
  Loose:
    Type: String
  Tight:
    Type: String
    AllowedPattern: "^arn:aws:sqs:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]+$"
Resources:
  Logs:
    Type: AWS::Logs::LogGroup
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: provided.al2023
      Handler: bootstrap
      CodeUri: .
      Policies:
        - AmazonSQSFullAccess
        - DynamoDBCrudPolicy: { TableName: t }
        - Statement:
            - Effect: Allow
              Action: dynamodb:*
              Resource: arn:aws:dynamodb:us-east-1:123456789012:table/t
  Role:
    Type: AWS::IAM::Role
    Properties:
      ManagedPolicyArns:
        - arn:aws:iam::aws:policy/AdministratorAccess
        - !Sub arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole
      AssumeRolePolicyDocument:
        Statement:
          - Effect: Allow
            Principal: { Service: lambda.amazonaws.com }
            Action: sts:AssumeRole
      Policies:
        - PolicyName: p
          PolicyDocument:
            Statement:
              - Sid: Star
                Effect: Allow
                Action: sqs:SendMessage
                Resource: "*"
              - Sid: SubStar
                Effect: Allow
                Action: [sqs:SendMessage]
                Resource: !Sub arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:*
              - !If
                - Cond
                - Sid: InIf
                  Effect: Allow
                  Action: s3:Get*
                  Resource: !Ref Tight
                - !Ref AWS::NoValue
              - Sid: LooseParam
                Effect: Allow
                Action: sqs:SendMessage
                Resource: !Ref Loose
              - Sid: HiddenStar
                Effect: Allow
                Action: logs:PutLogEvents
                Resource: !GetAtt Logs.Arn
              - Sid: Not
                Effect: Allow
                NotAction: iam:PassRole
                Resource: arn:aws:sqs:us-east-1:123456789012:q
              - Sid: AllowListAbuse
                Effect: Allow
                Action: [logs:PutLogEvents, logs:DeleteLogGroup]
                Resource: !Sub "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:${RelayLogGroup}:*"
              - Sid: LogsOnStar
                Effect: Allow
                Action: [ec2:CreateNetworkInterface, logs:CreateLogGroup]
                Resource: "*"
              - Sid: NetworkInterfaces
                Effect: Allow
                Action: [ec2:CreateNetworkInterface, ec2:DescribeNetworkInterfaces, ec2:DeleteNetworkInterface]
                Resource: "*"
              - Sid: Good
                Effect: Allow
                Action: sqs:SendMessage
                Resource: !Ref Tight
"""

# Substrings each expected failure line must contain (one failure each).
EXPECTED = [
    "Fn.Properties.Policies[0]: managed policy 'AmazonSQSFullAccess'",
    "Fn.Properties.Policies[1]: SAM policy template",
    "wildcard action 'dynamodb:*'",
    "Fn.Properties: no Role",
    "Role.Properties.ManagedPolicyArns[0]: managed policy",
    "Role.Properties.ManagedPolicyArns[1]: managed policy",
    "(Star): ",
    "(SubStar): ",
    "(InIf): ",
    "(LooseParam): ",
    "(HiddenStar): ",
    "(Not): ",
    "(AllowListAbuse): ",
    "(LogsOnStar): ",
]


def self_test(verbose: bool = False) -> int:
    report = check(load_template(BAD_SNIPPET), "self-test snippet (every FAIL here is expected)")
    if verbose:
        print_report(report, failures_to_stderr=False)
    else:
        total = report.statements_passed + report.statements_failed
        print(f"self-test snippet: {total} policy statements: {report.statements_passed} passed, "
              f"{report.statements_failed} failed (expected: 3 passed, 9 failed); "
              f"{report.opaque_failed} opaque policies failed (expected: 5); --verbose shows them")
    errors = []
    for needle in EXPECTED:
        if not any(needle in f for f in report.failures):
            errors.append(f"expected a failure containing {needle!r}")
    if any(
        "(Good)" in f or "(NetworkInterfaces)" in f or "AssumeRolePolicyDocument" in f
        for f in report.failures
    ):
        errors.append("a correct statement was reported")
    if report.statements_passed != 3:  # the trust policy, NetworkInterfaces and Good
        errors.append(f"expected 3 passing statements, got {report.statements_passed}")
    if not report.failed:
        errors.append("the bad snippet was not rejected")
    # A template without any statement must fail (the sanity check).
    empty = check(load_template("Resources:\n  Q:\n    Type: AWS::SQS::Queue\n"), "empty")
    if not empty.failed:
        errors.append("a template with no statements passed")
    # The short tags load into their JSON forms.
    tags = load_template("A: !GetAtt R.Arn\nB: !Sub x\nC: !If [c, 1, 2]\nD: !Ref P\nE: !Condition c\nV: 2012-10-17\n")
    if tags != {
        "A": {"Fn::GetAtt": ["R", "Arn"]},
        "B": {"Fn::Sub": "x"},
        "C": {"Fn::If": ["c", 1, 2]},
        "D": {"Ref": "P"},
        "E": {"Condition": "c"},
        "V": "2012-10-17",
    }:
        errors.append(f"short tags loaded wrongly: {tags}")
    print()
    if errors:
        for e in errors:
            print(f"SELF-TEST FAILED: {e}", file=sys.stderr)
        return 1
    print(f"self-test: passed (the bad snippet was rejected with {len(report.failures)} findings)")
    return 0


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    if "--self-test" in argv:
        return self_test(verbose="--verbose" in argv or "-v" in argv)
    transform = "--no-transform" not in argv
    args = [a for a in argv if not a.startswith("-")]
    if args:
        paths = [Path(a) for a in args]
    else:
        root = Path(__file__).resolve().parent.parent
        paths = [root / "template.yaml", *sorted((root / "infra" / "iam").glob("*.json"))]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        print(f"check_template_wildcards: not found: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    return run(paths, transform)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
