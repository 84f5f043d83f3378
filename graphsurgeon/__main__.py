from graphsurgeon.cli import main

raise SystemExit(main())
