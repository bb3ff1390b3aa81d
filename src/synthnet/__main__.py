from synthnet.cli import main

main()
