"""The bundled Python runtime client: a script the local backend runs in worker processes."""
