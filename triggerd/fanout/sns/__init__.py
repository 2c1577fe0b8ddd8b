"""SNS-compatible topics: the Query API subset that boto3's and the AWS CLI's `sns` clients use
(`service`, rendered by `wire`), fan-out to functions and SQS queues (`fanout`, `sqs`) with
subscription filter policies (`policy`), the `aws:sns` event shape (`shape`), and the
verification of notifications a real SNS topic sends over HTTP(S) (`signature`)."""
