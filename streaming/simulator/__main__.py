"""``python -m streaming.simulator``."""

from streaming.simulator.cli import main

raise SystemExit(main())
