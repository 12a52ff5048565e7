#!/usr/bin/env python3
"""Applies the SAM transform to template.yaml, as CloudFormation will: catches SAM-specific mistakes
(misspelled event properties, bad policy templates) that `sam validate --lint` lets through."""

import os
import sys
from pathlib import Path

from samcli.yamlhelper import yaml_parse
from samtranslator.public.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


class ManagedPolicies:
    """The AWS managed policies SAM attaches by name, without asking IAM."""

    def load(self):
        return {"AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"}


def main() -> int:
    path = Path(__file__).resolve().parent.parent / "template.yaml"
    template = yaml_parse(path.read_text())
    # As `sam package` would: local code paths become S3 locations.
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = f"s3://packaged/{resource['Properties']['CodeUri']}.zip"
    try:
        output = transform(template, {}, ManagedPolicies())
    except InvalidDocumentException as error:
        for cause in error.causes:
            print(f"template.yaml: {cause.message}", file=sys.stderr)
        return 1
    resources = output["Resources"]
    functions = [k for k, v in resources.items() if v["Type"] == "AWS::Lambda::Function"]
    routes = [
        v["Properties"]["Body"]["paths"]
        for v in resources.values()
        if v["Type"] == "AWS::ApiGatewayV2::Api"
    ]
    route_count = sum(len(methods) for paths in routes for methods in paths.values())
    print(f"SAM transform ok: {len(resources)} resources, {len(functions)} functions, {route_count} routes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
