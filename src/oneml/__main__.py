from oneml.cli import main

main()
