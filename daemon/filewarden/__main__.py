from filewarden.cli import main

raise SystemExit(main())
