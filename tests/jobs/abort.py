"""Crashes with SIGABRT (os.abort), without writing a core file."""

import os
import resource

resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
os.abort()
