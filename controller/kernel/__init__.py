"""kernel: what every layer may use and that knows nothing of apps: the exception tree and exit codes (`errors`),
logging and the secret redactor (`logs`), the one backoff formula (`backoff`), image references (`imageref`),
file primitives for a root process among hostile files (`files`) and the persisted-document reader (`document`).
Imports nothing else of the controller."""
