"""One conversation in order, step by step (docs/architecture.md, "A message's path"):

accept.py (persist before the webhook answers) -> scheduler.py (one task per contact, its lease
from lease.py) -> turn.py (what answers this message) -> rasa_turn.py (ask Rasa, never twice;
its replies and gateway commands) -> finish.py (one transaction, then send). commands.py and
interceptors.py are where other areas plug in; language.py and text.py serve every step."""
