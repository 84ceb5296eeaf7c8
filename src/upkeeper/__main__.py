from upkeeper.cli.main import main

main()
