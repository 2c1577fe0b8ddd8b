"""Function backends, registered under the `triggerd.backends` entry-point group: `local` (warm
runtime processes fed through the Runtime API), `http` (POST to a URL) and `aws` (Lambda's
Invoke API)."""
