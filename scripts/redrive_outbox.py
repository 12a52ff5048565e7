"""Redrive the outbox's failed records: every message of the stack's failed-records queue is fed to
the events publisher again, and deleted once it is relayed (README "Failure handling").

Two kinds of message land on that queue:
- records the publisher parked itself (it could not read them): the whole stream record is in the
  message, so it is redriven as is (after a fix of the publisher, it is relayed and the message
  deleted; otherwise the publisher reports it failed and the message stays: never lost);
- pointers the stream service sends after `OutboxMaxRetryAttempts` failed retries
  (`DDBStreamBatchInfo`): the records are read back from the stream (possible while it keeps them,
  24 h) and redriven.

Redriving is safe to repeat: an event keeps the id it was first published with, and every consumer
drops duplicates.

    python scripts/redrive_outbox.py --stack shop-dev                 # on AWS (your credentials)
    python scripts/redrive_outbox.py --stack shop-local --endpoint http://127.0.0.1:4566
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import boto3

# events-publisher's REDRIVE_SOURCE.
REDRIVE_SOURCE = "shop:redrive"


def stack_outputs(cloudformation, stack: str) -> dict[str, str]:
    outputs = cloudformation.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
    return {output["OutputKey"]: output["OutputValue"] for output in outputs}


def lambda_record(stream_record: dict, stream_arn: str, region: str) -> dict:
    """A DynamoDB Streams GetRecords record in the shape a Lambda event source delivers it."""
    change = dict(stream_record["dynamodb"])
    created = change.get("ApproximateCreationDateTime")
    if created is not None and not isinstance(created, (int, float)):
        change["ApproximateCreationDateTime"] = created.timestamp()
    return {
        "eventID": stream_record["eventID"],
        "eventName": stream_record["eventName"],
        "eventVersion": stream_record.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": stream_record.get("awsRegion", region),
        "dynamodb": change,
        "eventSourceARN": stream_arn,
    }


def records_of_pointer(streams, info: dict, region: str) -> list[dict]:
    """The records of a failed batch the stream service pointed at (`DDBStreamBatchInfo`)."""
    iterator = streams.get_shard_iterator(
        StreamArn=info["streamArn"],
        ShardId=info["shardId"],
        ShardIteratorType="AT_SEQUENCE_NUMBER",
        SequenceNumber=info["startSequenceNumber"],
    )["ShardIterator"]
    end = int(info["endSequenceNumber"])
    records: list[dict] = []
    while iterator:
        page = streams.get_records(ShardIterator=iterator, Limit=100)
        for record in page["Records"]:
            if int(record["dynamodb"]["SequenceNumber"]) > end:
                return records
            records.append(lambda_record(record, info["streamArn"], region))
        if not page["Records"]:
            break
        iterator = page.get("NextShardIterator")
    return records


def redrive(endpoint: str | None, stack: str, region: str) -> dict[str, int]:
    session = boto3.session.Session(region_name=region)
    kwargs = {"endpoint_url": endpoint} if endpoint else {}
    outputs = stack_outputs(session.client("cloudformation", **kwargs), stack)
    queue_url = outputs["PublisherFailedRecordsQueueUrl"]
    function = outputs["EventsPublisherFunctionName"]
    sqs = session.client("sqs", **kwargs)
    lambda_ = session.client("lambda", **kwargs)
    streams = session.client("dynamodbstreams", **kwargs)
    counts = {"redriven": 0, "failed": 0, "expired": 0}
    seen: set[str] = set()
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=60
        ).get("Messages", [])
        fresh = [message for message in messages if message["MessageId"] not in seen]
        for message in messages:
            if message["MessageId"] in seen:
                # Kept from earlier in this run: visible again at once for the next one.
                sqs.change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
        if not fresh:
            break
        for message in fresh:
            seen.add(message["MessageId"])
            body = json.loads(message["Body"])
            if "record" in body and not (body["record"].get("dynamodb") or {}).get("NewImage") and not (
                body["record"].get("dynamodb") or {}
            ).get("OldImage"):
                # Parked without its images (too large for a message): only an operator can rebuild
                # it, from the item its keys name.
                print(f"  {message['MessageId']}: parked without images (keys: {body['record']['dynamodb'].get('Keys')}); kept", file=sys.stderr)
                counts["failed"] += 1
                sqs.change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
                continue
            if "record" in body:
                # Marked as redriven: a parked record still unreadable is reported failed, not parked again.
                records = [dict(body["record"], eventSource=REDRIVE_SOURCE)]
            elif "DDBStreamBatchInfo" in body:
                try:
                    records = records_of_pointer(streams, body["DDBStreamBatchInfo"], region)
                except Exception as error:  # noqa: BLE001 - trimmed from the stream: report, keep
                    print(f"  {message['MessageId']}: records no longer in the stream ({error})", file=sys.stderr)
                    counts["expired"] += 1
                    continue
            else:
                print(f"  {message['MessageId']}: not a failed-records message; left alone", file=sys.stderr)
                counts["failed"] += 1
                continue
            answer = lambda_.invoke(FunctionName=function, Payload=json.dumps({"Records": records}).encode())
            payload = json.loads(answer["Payload"].read() or b"{}")
            failed = answer.get("FunctionError") or (
                isinstance(payload, dict) and (payload.get("errorType") or payload.get("batchItemFailures"))
            )
            if failed:
                print(f"  {message['MessageId']}: the publisher failed again; kept for later", file=sys.stderr)
                counts["failed"] += 1
                sqs.change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
                continue
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            counts["redriven"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", required=True)
    parser.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL"), help="an emulator; omit for AWS")
    parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    args = parser.parse_args(argv)
    if args.endpoint:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    counts = redrive(args.endpoint, args.stack, args.region)
    print(
        f"outbox redrive of {args.stack}: {counts['redriven']} message(s) redriven, "
        f"{counts['failed']} failed again (kept), {counts['expired']} past the stream's retention"
    )
    return 0 if counts["failed"] == 0 and counts["expired"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
