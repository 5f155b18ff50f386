from model_tools.cli import main

raise SystemExit(main())
