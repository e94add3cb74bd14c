"""What `hedgeplug run` promises the process that started it (the demo, the
bench, the test kit, a supervisor of your own): the line it prints once it
listens, and the environment variable that makes it stop when its parent dies.

Kept apart from the command so supervisors read the promise without
importing the command, and the command without importing supervisors.
"""

from __future__ import annotations

# Printed to stdout, flushed, once the node listens and handles signals:
# "hedgeplug: listening on HOST:PORT id=... cluster=... pid=..."; keep its shape stable.
READY_PREFIX = "hedgeplug: listening on "

# HEDGEPLUG_DIE_WITH_PARENT=<pid> (or "1": the parent at start) stops the node
# gracefully once that process is gone.
DIE_WITH_PARENT = "HEDGEPLUG_DIE_WITH_PARENT"
