"""The event vocabulary everything shares: Lambda filter patterns, AWS-style timestamps
and the S3 event notification record that more than one source emits.

Pure functions over JSON values; imports only `triggerd.types`."""
