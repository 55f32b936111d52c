from fleetrun.cli import main

main()
