"""The function side: the `local`, `http` and `aws` backends (`backends/`), the Lambda Runtime
API served to local workers (`runtime_api`, its HTTP framing in `runtime_http`) and the bundled
Python runtime client (`runtime_client/bootstrap.py`, run by workers as a script; the local backend
imports it only to find its path).

Independent of `delivery`: backends answer `invoke` with an `InvokeResult` and know nothing of
batches or retries. Imports only `events`, `triggerd.types` and, for the AWS clients and
credentials, `config.aws`."""
