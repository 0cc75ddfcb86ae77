"""``python -m producer.simulator [--host --port --seed --records ...]``."""

from producer.simulator.runner import main

raise SystemExit(main())
