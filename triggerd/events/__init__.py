"""The event vocabulary everything shares: Lambda filter patterns and AWS-style timestamps.

Pure functions over JSON values; imports only `triggerd.types`."""
