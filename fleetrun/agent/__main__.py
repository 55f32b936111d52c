from fleetrun.agent import main

raise SystemExit(main())
