"""Everything that touches torch and diffusers lives in this package."""

import os

# The libraries' own chatter (loading bars, dtype notes, optional-dependency hints) is not for our
# users; hub download progress (huggingface_hub) still shows. Explicit settings in the env win.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
