"""What a command or API call uses when an option is left out: one place, so the CLI, the Python
API and suites agree, and the protocol's name is written once outside protocols/ (a test checks
that it is registered). Kept import-free so `bench --help` stays fast."""

PROTOCOL = "leave_one_out"
DATASET = "scientific"
MODELS = "pop,sasrec"
