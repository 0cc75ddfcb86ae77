"""``python -m askelephant_simulator [--host --port --seed --records ...]``."""

from askelephant_simulator.runner import main

raise SystemExit(main())
