from simulators.video.cli import main

raise SystemExit(main())
