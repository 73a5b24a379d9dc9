from attnmel_cli.cli import main

main()
