from rdpbalancer.cli import main

raise SystemExit(main())
