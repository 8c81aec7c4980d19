from bendi.cli.main import main

main()
